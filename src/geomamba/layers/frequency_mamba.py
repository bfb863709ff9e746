"""Frequency-adaptive Mamba block (difference module of the subtask-Mamba network).

``x + out_proj( SS2DBranch(h) + SiLU(BN(FADC(h))) )`` with ``h = Linear(LayerNorm(x))``: a state-space
branch for long-range context and a frequency-adaptive dilated conv branch for local detail whose
receptive field follows the local frequency content.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d

from geomamba.layers.fadc import FrequencyAdaptiveDilatedConv
from geomamba.layers.scan_branch import SS2DBranch

__all__ = ["FrequencyAdaptiveMambaBlock"]


class FrequencyAdaptiveMambaBlock(nn.Module):
    """Norm -> Linear -> (SS2D branch + FADC branch) -> Linear, plus the input.

    Args:
        dim: channels C.
        ssm_ratio: inner width ``D = int(ssm_ratio * C)`` of both branches.
        d_state, dt_rank, scan_backend: passed to the SS2D branch.
        adakern, freq_select, max_dilation, fadc_sampler: FADC options (``sampler``: see
            :class:`~geomamba.layers.fadc.FrequencyAdaptiveDilatedConv`).
        drop_path: stochastic-depth rate of the residual.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        ssm_ratio: float = 2.0,
        d_state: int = 1,
        dt_rank: int | str = "auto",
        scan_backend: str = "auto",
        adakern: bool = False,
        freq_select: bool = False,
        max_dilation: float = 4.0,
        fadc_sampler: str = "auto",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        inner = max(1, int(ssm_ratio * dim))
        self.norm = LayerNorm2d(dim)
        self.in_proj = nn.Conv2d(dim, inner, 1)
        self.ssm = SS2DBranch(inner, d_state=d_state, dt_rank=dt_rank, scan_backend=scan_backend)
        self.fadc = FrequencyAdaptiveDilatedConv(
            inner,
            inner,
            max_dilation=max_dilation,
            adakern=adakern,
            freq_select=freq_select,
            sampler=fadc_sampler,
        )
        self.fadc_norm = nn.BatchNorm2d(inner)
        self.out_proj = nn.Conv2d(inner, dim, 1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.in_proj(self.norm(x))
        y = self.ssm(h) + F.silu(self.fadc_norm(self.fadc(h)))
        return x + self.drop_path(self.out_proj(y))
