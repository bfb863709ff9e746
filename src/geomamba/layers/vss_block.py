"""VSSBlock: ``x + DropPath(SS2D(LN(x)))`` then, when ``mlp_ratio > 0``, ``x + DropPath(MLP(LN(x)))``."""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerNorm, Mlp

from geomamba.layers.ss2d import SS2D

__all__ = ["VSSBlock"]


class VSSBlock(nn.Module):
    """A VMamba visual state-space block: ``(B, H, W, C) -> (B, H, W, C)`` when ``channels_last``
    (default), ``(B, C, H, W) -> (B, C, H, W)`` otherwise; any H, W.

    ``x = x + DropPath(SS2D(LayerNorm(x)))``, then (``mlp_ratio > 0``)
    ``x = x + DropPath(Mlp(LayerNorm(x)))`` with timm's ``Mlp`` (GELU, hidden ``int(C * mlp_ratio)``).

    Args:
        dim: channels C.
        d_state, ssm_ratio, dt_rank, directions, d_conv, gate, backend: passed to ``SS2D``.
        mlp_ratio: hidden ratio of the MLP (0 disables the MLP).
        drop_path: stochastic-depth rate.
        channels_last: layout of input and output (see above).
    """

    def __init__(
        self,
        dim: int,
        *,
        d_state: int = 1,
        ssm_ratio: float = 2.0,
        dt_rank: int | str = "auto",
        directions: int = 4,
        d_conv: int = 3,
        gate: bool = False,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        channels_last: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.dim, self.channels_last = dim, channels_last
        self.norm = LayerNorm(dim, eps=1e-5)
        self.op = SS2D(
            dim,
            d_state=d_state,
            ssm_ratio=ssm_ratio,
            dt_rank=dt_rank,
            directions=directions,
            d_conv=d_conv,
            gate=gate,
            backend=backend,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = None
        if mlp_ratio > 0:
            self.norm2 = LayerNorm(dim, eps=1e-5)
            self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` or ``(B, C, H, W)`` (see the class docstring) -> same shape."""
        axis = 3 if self.channels_last else 1
        if x.dim() != 4 or x.shape[axis] != self.dim:
            layout = "(B, H, W, C)" if self.channels_last else "(B, C, H, W)"
            raise ValueError(f"VSSBlock expects x of shape {layout} with C={self.dim}, got {tuple(x.shape)}")
        if not self.channels_last:
            x = x.permute(0, 2, 3, 1)
        x = x + self.drop_path(self.op(self.norm(x)))
        if self.mlp is not None:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x if self.channels_last else x.permute(0, 3, 1, 2)
