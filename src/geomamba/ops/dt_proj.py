"""SS2D's dt_proj: the per-direction projection of the low-rank dt input, with a one-pass backward.

``dt_proj(weight, dts) = weight @ dts``: weight ``(K, D, R)``, dts ``(B, K, R, L)`` -> delta
``(B, K, D, L)`` (K directions, D = d_inner channels, R = dt_rank, L positions). delta is K times the size
of the map; its gradient is read twice by the two matrix products of autograd's backward
(``ddts = weight^T @ ddelta``, ``dweight = sum_b ddelta @ dts^T``).

- :func:`dt_proj_reference`: ``torch.matmul`` (autograd differentiates it). It runs everywhere.
- :func:`dt_proj`: the same forward; on CUDA (fp16 / bf16 / fp32, Triton available, D <= 512: see
  :func:`uses_kernel`) the backward is one Triton kernel (``ops/triton/dt_proj.py``) that reads ddelta once and returns both gradients. Under
  ``torch.compile`` the backward is the custom op ``geomamba::dt_proj_bwd`` (opaque to the compiler; the
  forward's product stays visible to it); in eager mode the kernel's launcher is called directly.
  Elsewhere (CPU, fp64, no Triton) it is the reference.

(No ``from __future__ import annotations`` here: ``custom_op`` reads the annotations.)
"""

import torch
from torch import Tensor

from geomamba.ops._triton_gate import triton_module, uses_triton

__all__ = ["MAX_CHANNELS", "dt_proj", "dt_proj_reference", "uses_kernel"]

# the most channels D for which dt_proj takes the Triton backward (one channel block of its default tile)
MAX_CHANNELS = 512


def _check(weight: Tensor, dts: Tensor) -> None:
    if (
        weight.dim() != 3
        or dts.dim() != 4
        or dts.shape[1] != weight.shape[0]
        or dts.shape[2] != weight.shape[2]
    ):
        raise ValueError(
            "dt_proj: weight must be (K, D, R) and dts (B, K, R, L) with the same K and R, got weight "
            f"{tuple(weight.shape)} and dts {tuple(dts.shape)}"
        )


def dt_proj_reference(weight: Tensor, dts: Tensor) -> Tensor:
    """Reference: ``torch.matmul(weight, dts)``, ``(K, D, R) @ (B, K, R, L) -> (B, K, D, L)``."""
    _check(weight, dts)
    return torch.matmul(weight, dts)


def _reference_grads(ddelta: Tensor, weight: Tensor, dts: Tensor) -> tuple[Tensor, Tensor]:
    """``(ddts, dweight)`` by the two matrix products (the custom op's backward off the Triton path)."""
    ddts = torch.matmul(weight.transpose(-1, -2).to(ddelta.dtype), ddelta)
    dweight = torch.matmul(ddelta, dts.transpose(-1, -2).to(ddelta.dtype)).sum(0)
    return ddts.to(dts.dtype), dweight.to(weight.dtype)


def _backward(ddelta: Tensor, weight: Tensor, dts: Tensor) -> tuple[Tensor, Tensor]:
    if uses_triton(ddelta) and ddelta.dtype == dts.dtype == weight.dtype:
        return triton_module("dt_proj").dt_proj_bwd(ddelta, weight, dts)
    return _reference_grads(ddelta, weight, dts)


@torch.library.custom_op("geomamba::dt_proj_bwd", mutates_args=())
def _op_bwd(ddelta: Tensor, weight: Tensor, dts: Tensor) -> tuple[Tensor, Tensor]:
    """``(ddts, dweight)``: ddts contiguous in dts's dtype, dweight in weight's dtype."""
    ddts, dweight = _backward(ddelta, weight, dts)
    return ddts.contiguous(), dweight


@_op_bwd.register_fake
def _op_bwd_fake(ddelta, weight, dts):
    return dts.new_empty(dts.shape), weight.new_empty(weight.shape)


class _DtProjFunction(torch.autograd.Function):
    @staticmethod
    def forward(weight, dts):
        return torch.matmul(weight, dts)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, ddelta):
        weight, dts = ctx.saved_tensors
        if torch.compiler.is_compiling():
            ddts, dweight = torch.ops.geomamba.dt_proj_bwd(ddelta, weight, dts)
        else:
            ddts, dweight = _backward(ddelta, weight, dts)
        return dweight, ddts


def dt_proj(weight: Tensor, dts: Tensor) -> Tensor:
    """``weight @ dts`` ``(K, D, R) @ (B, K, R, L) -> (B, K, D, L)`` in dts's dtype (weight is cast to it):
    the Triton backward where :func:`~geomamba.ops._triton_gate.uses_triton` holds for dts, else
    :func:`dt_proj_reference`."""
    _check(weight, dts)
    weight = weight.to(dts.dtype)
    if not uses_kernel(weight, dts):
        return dt_proj_reference(weight, dts)
    return _DtProjFunction.apply(weight, dts)


def uses_kernel(weight: Tensor, dts: Tensor) -> bool:
    """Whether :func:`dt_proj` takes the Triton backward: where :func:`~geomamba.ops._triton_gate.uses_triton`
    holds for dts and the D channels fit one channel block of the kernel (``D <= MAX_CHANNELS``). With more
    channels the kernel's channel blocks return fp32 partial sums of ddts that a second kernel adds: in the
    compiled SS2D layer at 16x16 (D = 1024) that made the step 1% slower than autograd's two products on an
    H100 (README, bench/NOTES_triton.md round 14)."""
    return uses_triton(dts) and weight.shape[1] <= MAX_CHANNELS
