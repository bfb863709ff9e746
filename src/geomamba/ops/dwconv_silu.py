"""The SS2D layer's depthwise convolution + SiLU, from in_proj's tokens to the scan's channels-first map.

``dwconv_silu(x, weight, bias) = SiLU(depthwise_conv(x) + bias)``: x ``(batch, H, W, C)`` (channels last, as
a linear layer writes it), weight ``(C, 1, k, k)`` with k odd, bias ``(C,)`` or None; stride 1, zero padding
``k // 2``; the result is ``(batch, C, H, W)`` contiguous (channels first) in x's dtype.

- :func:`dwconv_silu_reference`: ``F.silu(F.conv2d(...))`` on the permuted view, then made contiguous
  (autograd differentiates it). It runs everywhere.
- :func:`dwconv_silu`: on CUDA (fp16 / bf16 / fp32, Triton available) the Triton kernels of
  ``ops/triton/dwconv.py``: the forward reads x once and writes the map once; the backward recomputes the
  pre-activation and writes dx channels last (two kernels; the bias gradient from per-tile fp32 sums, the
  weight gradient from the library's depthwise wgrad). Under ``torch.compile`` it is the custom op
  ``geomamba::dwconv_silu`` with its backward ``geomamba::dwconv_silu_bwd`` (opaque to the compiler); in
  eager mode the same code runs as an ``autograd.Function`` (no Python op dispatch). Elsewhere (CPU,
  fp64, no Triton) it is the reference. Weights are read in fp32 and sums are fp32 whatever x's dtype (no
  autocast cast of the weight to bf16, as cuDNN's convolution under autocast would take it).

``SS2D(conv_backend="triton")`` uses it (opt-in). On an H100 (the flagship's SS2D layers, batch 16, bf16) the
conv alone runs 1.9-2.2x faster than cuDNN's convolution, dgrad and wgrad with inductor's SiLU / layout
kernels, but the compiled layer's step is within 1% of the cuDNN path's (README; bench/NOTES_triton.md
rounds 13-14).

(No ``from __future__ import annotations`` here: ``custom_op`` reads the annotations, and ``Optional``
rather than ``X | None`` because older torch versions infer op schemas from ``typing.Optional`` only.)
"""

# ruff: noqa: UP045

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from geomamba.ops._triton_gate import TRITON_DTYPES, triton_module, uses_triton

__all__ = ["dwconv_silu", "dwconv_silu_reference", "uses_triton"]


def _check(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> None:
    if x.dim() != 4:
        raise ValueError(f"dwconv_silu: x must be (batch, H, W, C), got shape {tuple(x.shape)}")
    c = x.shape[-1]
    if (
        weight.dim() != 4
        or weight.shape[0] != c
        or weight.shape[1] != 1
        or weight.shape[2] != weight.shape[3]
    ):
        raise ValueError(
            f"dwconv_silu: weight must be (C={c}, 1, k, k) (a depthwise kernel), got shape {tuple(weight.shape)}"
        )
    if weight.shape[-1] % 2 == 0:
        raise ValueError(f"dwconv_silu: the kernel size must be odd ('same' padding), got {weight.shape[-1]}")
    if bias is not None and tuple(bias.shape) != (c,):
        raise ValueError(f"dwconv_silu: bias must be (C={c},), got shape {tuple(bias.shape)}")


def _pre_activation(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``conv2d(x.permute(0, 3, 1, 2), weight, bias, groups=C)``, 'same' padding; the weight and bias take x's
    dtype outside autocast."""
    if not torch.is_autocast_enabled(x.device.type):
        weight = weight.to(x.dtype)
        bias = None if bias is None else bias.to(x.dtype)
    k = weight.shape[-1]
    return F.conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=k // 2, groups=x.shape[-1])


def dwconv_silu_reference(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """Reference: ``SiLU(conv2d(x.permute(0, 3, 1, 2), weight, bias, groups=C))``, contiguous
    ``(batch, C, H, W)``; the weight and bias take x's dtype (outside autocast)."""
    _check(x, weight, bias)
    return F.silu(_pre_activation(x, weight, bias)).contiguous()


def _reference_grads(dy, x, weight, bias):
    """Gradients of :func:`dwconv_silu_reference` by explicit formulas (the custom op's backward runs where
    autograd is off): ``gs = dy * SiLU'(s)``, then aten's convolution backward."""
    with torch.autocast(x.device.type, enabled=False):
        k, c = weight.shape[-1], x.shape[-1]
        s = _pre_activation(x, weight, bias)
        sg = torch.sigmoid(s)
        gs = dy.to(s.dtype) * sg * (1 + s * (1 - sg))
        dx, dw, db = torch.ops.aten.convolution_backward(
            gs, x.permute(0, 3, 1, 2), weight.to(x.dtype), None if bias is None else [c], [1, 1],
            [k // 2, k // 2], [1, 1], False, [0, 0], c, [True, True, bias is not None],
        )  # fmt: skip
    db = None if bias is None else db.to(bias.dtype)
    return dx.permute(0, 2, 3, 1).contiguous(), dw.to(weight.dtype), db


def _forward(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    if uses_triton(x):
        return triton_module("dwconv").dwconv_silu_fwd(x.contiguous(), weight, bias)
    with torch.autocast(x.device.type, enabled=False):
        return dwconv_silu_reference(x, weight, bias)


def _backward(dy: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor]):
    if uses_triton(x):
        return triton_module("dwconv").dwconv_silu_bwd(dy.contiguous(), x.contiguous(), weight, bias)
    return _reference_grads(dy, x, weight, bias)


@torch.library.custom_op("geomamba::dwconv_silu", mutates_args=())
def _op_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    return _forward(x, weight, bias)


@_op_fwd.register_fake
def _op_fwd_fake(x, weight, bias):
    b, h, w, c = x.shape
    return x.new_empty((b, c, h, w))


@torch.library.custom_op("geomamba::dwconv_silu_bwd", mutates_args=())
def _op_bwd(dy: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """``(dx, dweight, dbias)``; dbias is an empty tensor without a bias."""
    dx, dw, db = _backward(dy, x, weight, bias)
    return dx, dw, x.new_empty(0) if db is None else db


@_op_bwd.register_fake
def _op_bwd_fake(dy, x, weight, bias):
    return (
        x.new_empty(x.shape),
        weight.new_empty(weight.shape),
        x.new_empty(0) if bias is None else bias.new_empty(bias.shape),
    )


def _setup_context(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight, bias)


def _op_backward(ctx, dy):
    x, weight, bias = ctx.saved_tensors
    dx, dw, db = torch.ops.geomamba.dwconv_silu_bwd(dy.contiguous(), x, weight, bias)
    return dx, dw, None if bias is None else db


_op_fwd.register_autograd(_op_backward, setup_context=_setup_context)


class _DwconvSiluFunction(torch.autograd.Function):
    """The custom ops' forward and backward without their dispatch, for eager calls."""

    @staticmethod
    def forward(x, weight, bias):
        return _forward(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _setup_context(ctx, inputs, output)

    @staticmethod
    def backward(ctx, dy):
        return _backward(dy, *ctx.saved_tensors)


def dwconv_silu(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``SiLU(depthwise_conv(x) + bias)`` as ``(batch, C, H, W)`` contiguous (see the module docstring): the
    Triton kernels where :func:`uses_triton`, else :func:`dwconv_silu_reference`. Under autocast x is
    cast to the autocast dtype first (as a convolution under autocast takes its input)."""
    _check(x, weight, bias)
    dev = x.device.type
    if torch.is_autocast_enabled(dev) and x.dtype in TRITON_DTYPES:
        x = x.to(torch.get_autocast_dtype(dev))
    if not uses_triton(x):
        return dwconv_silu_reference(x, weight, bias)
    x = x.contiguous()
    if torch.compiler.is_compiling():
        return torch.ops.geomamba.dwconv_silu(x, weight, bias)
    return _DwconvSiluFunction.apply(x, weight, bias)
