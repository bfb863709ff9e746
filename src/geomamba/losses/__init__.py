"""Losses: pure functions in ``_functional``-style modules plus thin ``nn.Module`` wrappers.

``build_loss(spec)`` turns a config value into a loss module ``loss(output, target) -> scalar``.
``output`` is a model output: logits ``(B, K, H, W)`` or a dict ``{"out": ..., "aux": [...], ...}``
(see ``geomamba.models.base``); ``target`` is ``(B, H, W)`` int64 class ids (ignore index allowed).
After a call, ``loss.last_components`` holds the detached parts (e.g. ``{"ce": ..., "lovasz": ...}``)
for logging.

INTERIM: only ``"ce"``; the flagship issue adds the composite losses.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from geomamba.models.base import as_logits

__all__ = ["build_loss"]


class _CrossEntropy(nn.Module):
    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.last_components: dict[str, torch.Tensor] = {}

    def forward(self, output, target: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(as_logits(output).float(), target, ignore_index=self.ignore_index)
        self.last_components = {"ce": loss.detach()}
        return loss


def build_loss(spec: str | dict[str, Any]) -> nn.Module:
    """Build a loss from ``"name"`` or ``{"name": ..., **options}``."""
    cfg = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = cfg.pop("name", "ce")
    if name == "ce":
        return _CrossEntropy(**cfg)
    raise ValueError(f"unknown loss {name!r}; available: ce")
