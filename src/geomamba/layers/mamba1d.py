"""A Mamba (S6) mixer on token sequences, built on the SS2D selective-scan core with one direction.

``Mamba1d``: ``(B, L, dim) -> (B, L, dim)``::

    u, z = Linear(x)                      (dim -> 2 * inner, inner = expand * dim)
    u = SiLU(causal depthwise Conv1d(u))  (kernel d_conv; token t sees tokens <= t)
    y = selective scan of u               (SS2DCore with directions=1 on a (B, inner, 1, L) map: x_proj,
                                           dt_proj, A = -exp(A_log), D; the op is geomamba.ops.selective_scan)
    out = Linear(y * SiLU(z))             (inner -> dim)

A single-row map scanned row-major is exactly the 1-D sequence, so the 2-D core serves unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from geomamba.layers.ss2d import SS2DCore

__all__ = ["Mamba1d"]


class Mamba1d(nn.Module):
    """Mamba mixer (no residual, no norm).

    Args:
        dim: token width.
        d_state: state size N (16, classic Mamba).
        expand: inner width ``int(expand * dim)``.
        d_conv: causal depthwise conv kernel (0 disables it).
        dt_rank: rank of the delta projection; ``"auto"`` = ceil(dim / 16).
        backend: selective-scan backend (see ``geomamba.ops``).

    Shapes: ``(B, L, dim) -> (B, L, dim)``; causal (output t depends on tokens <= t only).
    """

    def __init__(
        self,
        dim: int,
        *,
        d_state: int = 16,
        expand: float = 2.0,
        d_conv: int = 4,
        dt_rank: int | str = "auto",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        inner = max(1, int(expand * dim))
        self.dim, self.inner = dim, inner
        self.in_proj = nn.Linear(dim, 2 * inner)
        self.conv1d = (
            nn.Conv1d(inner, inner, d_conv, padding=d_conv - 1, groups=inner) if d_conv > 0 else None
        )
        rank = math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)
        self.core = SS2DCore(inner, d_state=d_state, dt_rank=rank, directions=1, backend=backend)
        self.out_proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"Mamba1d({self.dim}) expects (B, L, {self.dim}), got {tuple(x.shape)}")
        length = x.shape[1]
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u = u.transpose(1, 2)  # (B, inner, L)
        if self.conv1d is not None:
            u = self.conv1d(u)[..., :length]
        y = self.core(F.silu(u).unsqueeze(2)).squeeze(2)  # (B, inner, L)
        return self.out_proj(y.transpose(1, 2) * F.silu(z))
