"""Fusion of feature maps: concatenation fusion, the bitemporal difference block, and AFF.

- ``ConcatFusion``: ``concat -> 1x1 conv (dense, no bias) -> BN -> ReLU``.
- ``DifferenceBlock``: ``|A - B|`` and/or ``[A, B]`` -> ``ConcatFusion``.
- ``AttentionalFeatureFusion`` (AFF, Dai et al. 2021): ``w = sigmoid(L(s) + G(s))`` of the sum
  ``s = main + branch`` with a local (per-pixel) and a global (pooled) channel-attention MLP;
  ``out = main * w + branch * (1 - w)``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn

__all__ = ["AttentionalFeatureFusion", "ConcatFusion", "DifferenceBlock"]


class ConcatFusion(nn.Module):
    """Concatenate maps on channels, then ``1x1 conv -> BN -> ReLU``.

    Args:
        in_channels: total channels of the concatenated inputs.
        out_channels: output channels.

    Shapes: maps ``(B, C_i, H, W)`` with ``sum C_i = in_channels`` -> ``(B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, *maps: torch.Tensor) -> torch.Tensor:
        x = torch.cat(maps, dim=1) if len(maps) > 1 else maps[0]
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"ConcatFusion expects {self.in_channels} channels in total, got "
                f"{[tuple(m.shape) for m in maps]}"
            )
        return self.proj(x)


class DifferenceBlock(nn.Module):
    """Bitemporal difference: ``mode`` picks the inputs of the fusion.

    Args:
        channels: C of each date (and of the output).
        mode: ``"abs_concat"`` (``[|A-B|, A, B]``, default), ``"abs"`` (``|A-B|``) or ``"concat"`` (``[A, B]``).

    Shapes: ``a, b (B, C, H, W) -> (B, C, H, W)``.
    """

    MODES: ClassVar[dict[str, int]] = {"abs_concat": 3, "abs": 1, "concat": 2}

    def __init__(self, channels: int, *, mode: str = "abs_concat") -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"DifferenceBlock mode must be one of {sorted(self.MODES)}, got {mode!r}")
        self.mode = mode
        self.fuse = ConcatFusion(self.MODES[mode] * channels, channels)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape:
            raise ValueError(f"DifferenceBlock: dates differ in shape, {tuple(a.shape)} vs {tuple(b.shape)}")
        if self.mode == "abs":
            return self.fuse((a - b).abs())
        if self.mode == "concat":
            return self.fuse(a, b)
        return self.fuse((a - b).abs(), a, b)


class AttentionalFeatureFusion(nn.Module):
    """AFF dynamic fusion of a main and a branch map.

    Local attention: ``1x1 conv -> BN -> ReLU -> 1x1 conv -> BN``; global attention: the same MLP on the
    global average without BN (so that a batch of one trains). ``w = sigmoid(local + global)``.

    Args:
        channels: C.
        reduction: hidden width ``max(1, C // reduction)``.

    Shapes: ``main, branch (B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int, *, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.local_att = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.global_att = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )

    def weights(self, main: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """The fusion weight ``w`` of ``main``, ``(B, C, H, W)`` in (0, 1)."""
        s = main + branch
        return torch.sigmoid(self.local_att(s) + self.global_att(s))

    def forward(self, main: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        if main.shape != branch.shape:
            raise ValueError(f"AFF: main {tuple(main.shape)} and branch {tuple(branch.shape)} differ")
        w = self.weights(main, branch)
        return main * w + branch * (1.0 - w)
