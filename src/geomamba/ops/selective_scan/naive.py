"""Naive per-token selective scan: the executable specification (tests only).

Shapes: u, delta, z ``(batch, D, L)``; A ``(D, N)``; B, C ``(batch, G, N, L)`` with G dividing D;
D, delta_bias ``(D,)``. State and accumulation in fp32; output dtype follows ``u``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan_naive(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, return_last_state=False
):
    dtype_out = u.dtype
    batch, dim, length = u.shape
    groups, n = B.shape[1], A.shape[1]
    u, delta, A, B, C = u.float(), delta.float(), A.float(), B.float(), C.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    rep = dim // groups
    B = B.repeat_interleave(rep, dim=1)  # (batch, D, N, L)
    C = C.repeat_interleave(rep, dim=1)
    h = u.new_zeros(batch, dim, n)
    ys = []
    for t in range(length):
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * B[..., t] * u[:, :, t, None]
        ys.append((h * C[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, dim, 0)
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype_out)
    return (y, h) if return_last_state else y
