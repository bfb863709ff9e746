"""Attention gates on channels-first maps: channel (CBAM), spatial (CBAM) and squeeze-excitation.

Each module computes a sigmoid gate from its input. By default ``forward`` returns the **gate**
(so that a caller can multiply it into another branch, as the subtask-Mamba decoder does); with
``multiply=True`` it returns ``x * gate`` (the usual drop-in use).
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ChannelAttention", "SpatialAttention", "SqueezeExcitation"]


def _hidden(channels: int, reduction: int) -> int:
    if channels < 1 or reduction < 1:
        raise ValueError(
            f"channels and reduction must be >= 1, got channels={channels}, reduction={reduction}"
        )
    return max(1, channels // reduction)


class ChannelAttention(nn.Module):
    """CBAM channel attention: ``sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))`` with one shared MLP.

    Args:
        channels: C.
        reduction: hidden width of the MLP is ``max(1, C // reduction)``.
        multiply: return ``x * gate`` instead of the gate.

    Shapes: ``x (B, C, H, W)`` -> gate ``(B, C, 1, 1)`` in (0, 1), or ``(B, C, H, W)`` with ``multiply``.
    """

    def __init__(self, channels: int, *, reduction: int = 16, multiply: bool = False) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.multiply = multiply
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(dim=(2, 3), keepdim=True)
        mx = x.amax(dim=(2, 3), keepdim=True)
        gate = torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        return x * gate if self.multiply else gate


class SpatialAttention(nn.Module):
    """CBAM spatial attention: ``sigmoid(conv_kxk(concat(mean_c(x), max_c(x))))``.

    Args:
        kernel_size: odd size of the conv (7 in CBAM and in the subtask-Mamba decoder).
        multiply: return ``x * gate`` instead of the gate.

    Shapes: ``x (B, C, H, W)`` -> gate ``(B, 1, H, W)`` in (0, 1), or ``(B, C, H, W)`` with ``multiply``.
    """

    def __init__(self, *, kernel_size: int = 7, multiply: bool = False) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.multiply = multiply
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        gate = torch.sigmoid(self.conv(pooled))
        return x * gate if self.multiply else gate


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation: ``sigmoid(fc2(relu(fc1(avgpool(x)))))``.

    Args:
        channels: C.
        reduction: hidden width ``max(1, C // reduction)``.
        multiply: return ``x * gate`` instead of the gate.

    Shapes: ``x (B, C, H, W)`` -> gate ``(B, C, 1, 1)`` in (0, 1), or ``(B, C, H, W)`` with ``multiply``.
    """

    def __init__(self, channels: int, *, reduction: int = 16, multiply: bool = False) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.multiply = multiply
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * gate if self.multiply else gate
