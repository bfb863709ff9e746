"""VSSBlock: ``x + DropPath(SS2D(LN(x)))`` then, when ``mlp_ratio > 0``, ``x + DropPath(MLP(LN(x)))``."""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath, Mlp

from geomamba.layers.ss2d import SS2D

__all__ = ["VSSBlock"]


class VSSBlock(nn.Module):
    """A VMamba visual state-space block on ``(B, H, W, C)`` (``channels_last``) or ``(B, C, H, W)``.

    Args:
        dim: channels C.
        d_state, ssm_ratio, directions, gate, backend: passed to ``SS2D``.
        mlp_ratio: hidden ratio of the MLP (0 disables the MLP).
        drop_path: stochastic-depth rate.
    """

    def __init__(
        self,
        dim: int,
        *,
        d_state: int = 1,
        ssm_ratio: float = 2.0,
        directions: int = 4,
        gate: bool = False,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        channels_last: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.norm = nn.LayerNorm(dim)
        self.op = SS2D(
            dim, d_state=d_state, ssm_ratio=ssm_ratio, directions=directions, gate=gate, backend=backend
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = None
        if mlp_ratio > 0:
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_last:
            x = x.permute(0, 2, 3, 1)
        x = x + self.drop_path(self.op(self.norm(x)))
        if self.mlp is not None:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x if self.channels_last else x.permute(0, 3, 1, 2)
