"""Direct autograd entry points to the Triton kernels, bypassing the dispatcher.

For tests and benchmarks that must name the kernel they run. Model code calls
``geomamba.ops.selective_scan`` / ``ss2d_scan``, whose custom ops dispatch to this backend on CUDA.

``triton_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
return_last_state=False)``: shapes as ``selective_scan``; returns y ``(batch, D, L)`` (and the fp32 last
state ``(batch, D, N)``).
``triton_ss2d_scan(x, delta, A, B, C, D=None, delta_bias=None, directions=4)``: x ``(batch, Dm, H, W)``,
delta ``(batch, K, Dm, H*W)``, B/C ``(batch, K, N, H*W)`` in image order; returns y ``(batch, Dm, H, W)``.
"""

from __future__ import annotations

import torch

from geomamba.ops.triton.launch import selective_scan_bwd, selective_scan_fwd
from geomamba.ops.triton.ss2d_launch import ss2d_bwd, ss2d_fwd

__all__ = ["triton_selective_scan", "triton_ss2d_scan"]


class _ScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        y, last, states = selective_scan_fwd(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_states=True
        )
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
        ctx.delta_softplus = delta_softplus
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        if dy is None:
            dy = torch.zeros_like(u)
        grads = selective_scan_bwd(
            dy, u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, dlast, states=states
        )
        return (*grads, None)


class _SS2DFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, delta, A, B, C, D, delta_bias, directions):
        ctx.save_for_backward(x, delta, A, B, C, D, delta_bias)
        ctx.directions = directions
        return ss2d_fwd(x, delta, A, B, C, D, delta_bias, directions)

    @staticmethod
    def backward(ctx, dy):
        x, delta, A, B, C, D, delta_bias = ctx.saved_tensors
        grads = ss2d_bwd(dy, x, delta, A, B, C, D, delta_bias, ctx.directions)
        return (*grads, None)


def triton_selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, return_last_state=False
):
    """Selective scan on the Triton kernels (CUDA tensors; CPU tensors only under TRITON_INTERPRET=1)."""
    y, last = _ScanFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return (y, last) if return_last_state else y


def triton_ss2d_scan(x, delta, A, B, C, D=None, delta_bias=None, directions=4):
    """Fused SS2D scan (cross-scan, K directional scans, cross-merge) on the Triton kernels."""
    return _SS2DFn.apply(x, delta, A, B, C, D, delta_bias, directions)
