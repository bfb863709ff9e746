"""Helpers shared by the segmentation models (not a model module: the registry skips ``_`` files)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["check_image", "resize_to"]


def check_image(x: torch.Tensor, in_channels: int, model: str) -> None:
    """Raise a ``ValueError`` naming ``model`` unless ``x`` is ``(B, in_channels, H, W)``."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != in_channels:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{model}: input must be an image batch (B, {in_channels}, H, W), got {got}")


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of ``(B, C, h, w)`` to ``(B, C, *size)`` (a no-op when already that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
