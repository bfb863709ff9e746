"""Feature exchanges between the two dates of a siamese network (Changer, Fang et al. 2023).

``ChannelExchange(p)`` swaps every ``1/p``-th channel between the two date features (channels
0, 1/p, 2/p, ...); ``SpatialExchange(p)`` swaps every ``1/p``-th column (width index 0, 1/p, ...).
Both are parameter-free and take and return a pair ``(x1, x2)`` of ``(B, C, H, W)`` tensors.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ChannelExchange", "SpatialExchange"]


def _period(p: float) -> int:
    """The exchange period ``k = 1/p``; ``p`` must be ``1/k`` for an integer ``k >= 1``."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"exchange proportion p must be in (0, 1], got {p}")
    k = round(1.0 / p)
    if abs(k * p - 1.0) > 1e-6:
        raise ValueError(f"exchange proportion p must be 1/k for an integer k (1, 1/2, 1/3, ...), got {p}")
    return k


def _check_pair(x1: torch.Tensor, x2: torch.Tensor) -> None:
    if x1.dim() != 4 or x1.shape != x2.shape:
        raise ValueError(
            f"exchange layers need two (B, C, H, W) tensors of one shape, got {tuple(x1.shape)} "
            f"and {tuple(x2.shape)}"
        )


class ChannelExchange(nn.Module):
    """Swap every ``1/p``-th channel between the dates.

    Args:
        p: proportion of exchanged channels, ``1/k`` (default 1/2: channels 0, 2, 4, ... swap).

    Shapes:
        ``(x1, x2)``, each ``(B, C, H, W)`` -> ``(y1, y2)``, each ``(B, C, H, W)``, where
        ``y1[:, c] = x2[:, c]`` and ``y2[:, c] = x1[:, c]`` for ``c % k == 0``, unchanged otherwise.
    """

    def __init__(self, *, p: float = 0.5) -> None:
        super().__init__()
        self.p = p
        self.period = _period(p)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_pair(x1, x2)
        swap = (torch.arange(x1.shape[1], device=x1.device) % self.period == 0).view(1, -1, 1, 1)
        return torch.where(swap, x2, x1), torch.where(swap, x1, x2)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class SpatialExchange(nn.Module):
    """Swap every ``1/p``-th column (width position) between the dates.

    Args:
        p: proportion of exchanged columns, ``1/k`` (default 1/2: columns 0, 2, 4, ... swap).

    Shapes:
        ``(x1, x2)``, each ``(B, C, H, W)`` -> ``(y1, y2)``, each ``(B, C, H, W)``, where
        ``y1[..., w] = x2[..., w]`` and ``y2[..., w] = x1[..., w]`` for ``w % k == 0``.
    """

    def __init__(self, *, p: float = 0.5) -> None:
        super().__init__()
        self.p = p
        self.period = _period(p)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_pair(x1, x2)
        swap = (torch.arange(x1.shape[-1], device=x1.device) % self.period == 0).view(1, 1, 1, -1)
        return torch.where(swap, x2, x1), torch.where(swap, x1, x2)

    def extra_repr(self) -> str:
        return f"p={self.p}"
