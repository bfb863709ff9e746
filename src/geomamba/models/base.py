"""The shared contract of geomamba models.

Change detection
    ``forward(x)`` with ``x`` of shape ``(B, 2, C, H, W)`` (the two dates stacked on dim 1), or
    ``forward(a, b)`` with two ``(B, C, H, W)`` tensors. Returns logits ``(B, num_classes, H, W)``
    (``num_classes`` = 2: unchanged, changed).
Segmentation / classification
    ``forward(x)`` with ``x`` of shape ``(B, C, H, W)``; returns logits ``(B, num_classes, H, W)``.

Auxiliary outputs (deep supervision, boundary maps) are returned only in training mode, as a dict
``{"out": logits, "aux": [logits, ...], "boundary": (B, 1, H, W) logits}`` (keys other than ``"out"``
optional); every map is at the input size. ``as_logits`` picks the main logits out of either form.
Models never own losses and never read files.
"""

from __future__ import annotations

import torch

__all__ = ["as_logits", "split_bitemporal"]


def split_bitemporal(x: torch.Tensor, b: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the two dates ``(a, b)``, each ``(B, C, H, W)``, from a ``(B, 2, C, H, W)`` stack or a pair."""
    if b is not None:
        if x.shape != b.shape:
            raise ValueError(f"the two dates differ in shape: a {tuple(x.shape)} vs b {tuple(b.shape)}")
        if x.dim() != 4:
            raise ValueError(f"each date must be (B, C, H, W), got a of shape {tuple(x.shape)}")
        return x, b
    if x.dim() != 5 or x.shape[1] != 2:
        raise ValueError(
            f"a bitemporal input must be (B, 2, C, H, W) or two (B, C, H, W) tensors, got {tuple(x.shape)}"
        )
    return x[:, 0], x[:, 1]


def as_logits(output: torch.Tensor | dict) -> torch.Tensor:
    """The main logits of a model output (a tensor, or the ``"out"`` entry of a dict)."""
    if isinstance(output, dict):
        return output["out"]
    return output
