"""Naive per-token selective scan: the executable specification (tests and benchmarks only).

Shapes: u, delta, z ``(batch, D, L)``; A ``(D, N)``; B, C ``(batch, G, N, L)`` with G dividing D;
D, delta_bias ``(D,)``. State and accumulation in fp32 (fp64 for fp64 inputs); output dtype follows ``u``. Plain autograd gives
its backward (``unbind``/``stack`` keep that linear in L).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["selective_scan_naive"]


def selective_scan_naive(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, return_last_state=False
):
    """One step per token: ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = <C_t, h_t> + D u_t``,
    then ``y * silu(z)``. Returns y ``(batch, D, L)`` (and the fp32 last state ``(batch, D, N)``)."""
    dtype_out = u.dtype
    batch, dim, _ = u.shape
    groups, n = B.shape[1], A.shape[1]
    cdt = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A, B, C = u.to(cdt), delta.to(cdt), A.to(cdt), B.to(cdt), C.to(cdt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(cdt)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    rep = dim // groups
    B = B.repeat_interleave(rep, dim=1)  # (batch, D, N, L)
    C = C.repeat_interleave(rep, dim=1)
    h = u.new_zeros(batch, dim, n)
    ys = []
    for dt, b_t, c_t, u_t in zip(delta.unbind(-1), B.unbind(-1), C.unbind(-1), u.unbind(-1)):
        dt = dt[..., None]
        h = torch.exp(dt * A) * h + dt * b_t * u_t[..., None]
        ys.append((h * c_t).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, dim, 0)
    if D is not None:
        y = y + u * D.to(cdt)[:, None]
    if z is not None:
        y = y * F.silu(z.to(cdt))
    y = y.to(dtype_out)
    return (y, h) if return_last_state else y
