"""Classifier head: ``conv 3x3 -> BN -> ReLU -> conv 1x1``, optionally resized to the input size."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ClassifierHead"]


class ClassifierHead(nn.Module):
    """Per-pixel classifier.

    Args:
        in_channels: C.
        num_classes: K.
        hidden: channels of the 3x3 conv (default C).

    Shapes: ``(B, C, h, w) -> (B, K, h, w)``, or ``(B, K, H, W)`` with ``forward(x, size=(H, W))``
    (bilinear resize of the logits).
    """

    def __init__(self, in_channels: int, num_classes: int, *, hidden: int | None = None) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        hidden = hidden or in_channels
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(hidden, num_classes, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        logits = self.classifier(self.block(x))
        if size is not None and tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits
