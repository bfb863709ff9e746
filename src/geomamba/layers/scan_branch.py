"""The SS2D branch shared by the subtask-Mamba blocks: ``SiLU -> depthwise conv -> SS2DCore -> LayerNorm``.

It is the state-space half of VMamba's SS2D without the projections, on a channels-first map, so that
the encoder, the frequency-adaptive Mamba module and the decoder can put their own linear embeddings
and second branches around it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d

from geomamba.layers.ss2d import SS2DCore

__all__ = ["SS2DBranch"]


class SS2DBranch(nn.Module):
    """``SiLU -> depthwise k x k conv -> SS2DCore -> LayerNorm`` on ``(B, D, H, W)``.

    Args:
        channels: D (the inner width, ``ssm_ratio * C`` of the caller).
        d_state: SSM state size N (1 = VMamba v2 / ChangeMamba).
        dt_rank: delta rank, ``"auto"`` = ceil(D / 16).
        d_conv: depthwise kernel size (odd).
        directions: scan directions (4, 2 or 1).
        scan_backend: selective-scan backend passed to ``SS2DCore``.

    Shapes: ``(B, D, H, W) -> (B, D, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        *,
        d_state: int = 1,
        dt_rank: int | str = "auto",
        d_conv: int = 3,
        directions: int = 4,
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, d_conv, padding=d_conv // 2, groups=channels)
        self.core = SS2DCore(
            channels, d_state=d_state, dt_rank=dt_rank, directions=directions, backend=scan_backend
        )
        self.norm = LayerNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.core(self.dwconv(F.silu(x))))
