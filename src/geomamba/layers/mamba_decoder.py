"""Decoder of the subtask-Mamba network: two Mamba stages gated by channel and spatial attention.

Stage: ``x + out_proj( SS2DBranch(h) * Attention(h) )`` with ``h = Linear(LayerNorm(x))``; stage 1 uses
channel attention, stage 2 spatial attention (7x7). A stage without attention is a plain
``x + out_proj(SS2DBranch(h))`` (ablations ``de_ca``, ``de_sa``, ``de``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerNorm2d

from geomamba.layers.attention import ChannelAttention, SpatialAttention
from geomamba.layers.scan_branch import SS2DBranch

__all__ = ["AttentionMambaStage", "MambaAttentionDecoder"]


class AttentionMambaStage(nn.Module):
    """One decoder stage.

    Args:
        dim: channels C.
        attention: ``"channel"``, ``"spatial"`` or ``None``.
        ssm_ratio: inner width ``int(ssm_ratio * C)``.
        d_state, dt_rank, scan_backend: passed to the SS2D branch.
        reduction: channel-attention MLP reduction.
        kernel_size: spatial-attention conv size.
        drop_path: stochastic-depth rate of the residual.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        attention: str | None = "channel",
        ssm_ratio: float = 2.0,
        d_state: int = 1,
        dt_rank: int | str = "auto",
        scan_backend: str = "auto",
        reduction: int = 16,
        kernel_size: int = 7,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        inner = max(1, int(ssm_ratio * dim))
        self.norm = LayerNorm2d(dim)
        self.in_proj = nn.Conv2d(dim, inner, 1)
        self.ssm = SS2DBranch(inner, d_state=d_state, dt_rank=dt_rank, scan_backend=scan_backend)
        if attention == "channel":
            self.attention: nn.Module | None = ChannelAttention(inner, reduction=reduction)
        elif attention == "spatial":
            self.attention = SpatialAttention(kernel_size=kernel_size)
        elif attention is None:
            self.attention = None
        else:
            raise ValueError(f"attention must be 'channel', 'spatial' or None, got {attention!r}")
        self.out_proj = nn.Conv2d(inner, dim, 1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.in_proj(self.norm(x))
        y = self.ssm(h)
        if self.attention is not None:
            y = y * self.attention(h)
        return x + self.drop_path(self.out_proj(y))


class MambaAttentionDecoder(nn.Module):
    """Two stages: channel-attention stage, then spatial-attention stage.

    Args:
        dim: channels C.
        channel_attention, spatial_attention: keep the attention of stage 1 / stage 2.
        **stage_kwargs: ``ssm_ratio``, ``d_state``, ``dt_rank``, ``scan_backend``, ``reduction``,
            ``kernel_size``, ``drop_path`` of ``AttentionMambaStage``.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(
        self, dim: int, *, channel_attention: bool = True, spatial_attention: bool = True, **stage_kwargs
    ) -> None:
        super().__init__()
        self.stage1 = AttentionMambaStage(
            dim, attention="channel" if channel_attention else None, **stage_kwargs
        )
        self.stage2 = AttentionMambaStage(
            dim, attention="spatial" if spatial_attention else None, **stage_kwargs
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage2(self.stage1(x))
