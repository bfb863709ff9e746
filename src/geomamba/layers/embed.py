"""Patch embedding and resolution changes for channels-first maps.

- ``PatchEmbed``: ``conv p x p, stride p -> LayerNorm`` (linear embedding of non-overlapping patches).
- ``Downsample``: ``conv 3x3, stride 2 -> LayerNorm`` (halves H and W).
- ``Upsample``: ``bilinear x2 -> 1x1 conv -> LayerNorm`` (doubles H and W).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d

__all__ = ["Downsample", "PatchEmbed", "Upsample"]


class PatchEmbed(nn.Module):
    """Linear embedding of ``patch_size`` x ``patch_size`` patches.

    Args:
        in_channels: input bands (any number).
        dim: output channels.
        patch_size: patch size p (H and W must be multiples of p).

    Shapes: ``(B, in_channels, H, W) -> (B, dim, H / p, W / p)``.
    """

    def __init__(self, in_channels: int, dim: int, *, patch_size: int = 4) -> None:
        super().__init__()
        if in_channels < 1 or patch_size < 1:
            raise ValueError(f"need in_channels >= 1 and patch_size >= 1, got {in_channels}, {patch_size}")
        self.in_channels, self.patch_size = in_channels, patch_size
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.norm = LayerNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"PatchEmbed expects (B, {self.in_channels}, H, W) (in_channels={self.in_channels}), "
                f"got {tuple(x.shape)}"
            )
        p = self.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"PatchEmbed: H, W = {tuple(x.shape[-2:])} are not multiples of patch_size {p}")
        return self.norm(self.proj(x))


class Downsample(nn.Module):
    """Stride-2 3x3 conv and LayerNorm. Shapes: ``(B, C_in, H, W) -> (B, C_out, ceil(H/2), ceil(W/2))``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.norm = LayerNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class Upsample(nn.Module):
    """Bilinear x2, 1x1 conv and LayerNorm. Shapes: ``(B, C_in, H, W) -> (B, C_out, 2H, 2W)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 1)
        self.norm = LayerNorm2d(out_channels)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """``size`` overrides the output size (default: twice the input size)."""
        size = size or (2 * x.shape[-2], 2 * x.shape[-1])
        return self.norm(self.proj(F.interpolate(x, size=size, mode="bilinear", align_corners=False)))
