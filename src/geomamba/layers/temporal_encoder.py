"""Temporal-interaction encoder block of the subtask-Mamba network (bitemporal, channels-first).

For the two dates ``a``, ``b`` (each ``(B, C, H, W)``):

1. CNN residual module (siamese by default): ``x + conv3x3(Linear(LayerNorm(x)))``.
2. Bitemporal SS2D core with residual, ``core``:
   - ``"fused"``: ``LayerNorm`` each date, concatenate on channels, ``Linear -> SS2DBranch -> Linear``
     on the 2C-channel map (one scan sees both dates), split back per date, add to each date;
   - ``"shared"``: each date through the same ``LayerNorm -> Linear -> SS2DBranch -> Linear``;
   - ``"separate"``: each date through its own.
3. MLP residual module (independent per date by default): ``x + MLP(LayerNorm(x))``, ratio 4, GELU.

``Linear`` layers are 1x1 convs (the same map per pixel) and ``LayerNorm`` normalises channels.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerNorm2d, Mlp

from geomamba.layers.scan_branch import SS2DBranch

__all__ = ["BitemporalSS2DCore", "ConvResidualModule", "MlpResidualModule", "TemporalInteractionEncoderBlock"]

CORE_MODES = ("fused", "shared", "separate")


def _pair_apply(mod_a: nn.Module, mod_b: nn.Module, a: torch.Tensor, b: torch.Tensor):
    """Apply ``mod_a`` to ``a`` and ``mod_b`` to ``b``; one batched call when they are the same module."""
    if mod_a is mod_b:
        return mod_a(torch.cat([a, b], dim=0)).chunk(2, dim=0)
    return mod_a(a), mod_b(b)


class ConvResidualModule(nn.Module):
    """``x + DropPath(conv3x3(Linear(LayerNorm(x))))``. Shapes: ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, dim: int, *, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.conv(self.proj(self.norm(x))))


class MlpResidualModule(nn.Module):
    """``x + DropPath(Linear(GELU(Linear(LayerNorm(x)))))``, hidden ``mlp_ratio * C``.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, dim: int, *, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, use_conv=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.mlp(self.norm(x)))


class _ScanUnit(nn.Module):
    """``Linear(C_in -> D) -> SS2DBranch(D) -> Linear(D -> C_in)`` (no norm, no residual)."""

    def __init__(self, channels: int, inner: int, **branch_kwargs) -> None:
        super().__init__()
        self.in_proj = nn.Conv2d(channels, inner, 1)
        self.ssm = SS2DBranch(inner, **branch_kwargs)
        self.out_proj = nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.ssm(self.in_proj(x)))


class BitemporalSS2DCore(nn.Module):
    """The temporal-interaction SS2D core with per-date residual.

    Args:
        dim: channels C of each date.
        mode: ``"fused"`` (default), ``"shared"`` or ``"separate"`` (see the module docstring).
        ssm_ratio: inner width ``int(ssm_ratio * width)`` with width 2C (fused) or C (per date).
        d_state, dt_rank, scan_backend: passed to the SS2D branch.
        drop_path: stochastic-depth rate of the residual.

    Shapes: ``a, b (B, C, H, W) -> a', b' (B, C, H, W)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        mode: str = "fused",
        ssm_ratio: float = 2.0,
        d_state: int = 1,
        dt_rank: int | str = "auto",
        scan_backend: str = "auto",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in CORE_MODES:
            raise ValueError(f"core must be one of {CORE_MODES}, got {mode!r}")
        self.mode = mode
        kw = {"d_state": d_state, "dt_rank": dt_rank, "scan_backend": scan_backend}
        self.norm = LayerNorm2d(dim)
        width = 2 * dim if mode == "fused" else dim
        inner = max(1, int(ssm_ratio * width))
        self.units = nn.ModuleList(
            _ScanUnit(width, inner, **kw) for _ in range(2 if mode == "separate" else 1)
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        na, nb = self.norm(torch.cat([a, b], dim=0)).chunk(2, dim=0)
        if self.mode == "fused":
            ya, yb = self.units[0](torch.cat([na, nb], dim=1)).chunk(2, dim=1)
        else:
            ya, yb = _pair_apply(self.units[0], self.units[-1], na, nb)
        return a + self.drop_path(ya), b + self.drop_path(yb)


class TemporalInteractionEncoderBlock(nn.Module):
    """CNN residual -> bitemporal SS2D core -> MLP residual, on both dates.

    Args:
        dim: channels C.
        siamese_cnn: one CNN residual module for both dates (``en_sicnn_*``) or one per date (``en_incnn_*``).
        siamese_mlp: one MLP for both dates (``*_simlp``) or one per date (``*_inmlp``, default).
        core: ``"fused"``, ``"shared"`` or ``"separate"``.
        mlp_ratio: MLP hidden ratio.
        ssm_ratio, d_state, dt_rank, scan_backend: SS2D options.
        drop_path: stochastic-depth rate of every residual.

    Shapes: ``a, b (B, C, H, W) -> a', b' (B, C, H, W)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        siamese_cnn: bool = True,
        siamese_mlp: bool = False,
        core: str = "fused",
        mlp_ratio: float = 4.0,
        ssm_ratio: float = 2.0,
        d_state: int = 1,
        dt_rank: int | str = "auto",
        scan_backend: str = "auto",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        # One module (siamese, applied to both dates) or two (index 0: date A, index 1: date B).
        self.cnn = nn.ModuleList(
            ConvResidualModule(dim, drop_path=drop_path) for _ in range(1 if siamese_cnn else 2)
        )
        self.core = BitemporalSS2DCore(
            dim,
            mode=core,
            ssm_ratio=ssm_ratio,
            d_state=d_state,
            dt_rank=dt_rank,
            scan_backend=scan_backend,
            drop_path=drop_path,
        )
        self.mlp = nn.ModuleList(
            MlpResidualModule(dim, mlp_ratio=mlp_ratio, drop_path=drop_path)
            for _ in range(1 if siamese_mlp else 2)
        )

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if a.shape != b.shape:
            raise ValueError(f"encoder block: dates differ in shape, {tuple(a.shape)} vs {tuple(b.shape)}")
        a, b = _pair_apply(self.cnn[0], self.cnn[-1], a, b)
        a, b = self.core(a, b)
        return _pair_apply(self.mlp[0], self.mlp[-1], a, b)
