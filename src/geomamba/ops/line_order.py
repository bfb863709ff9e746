"""``line_order(t, h, w, inverse=False)``: :func:`~geomamba.ops.cross_scan.to_line_order` (or, with
``inverse``, ``from_line_order``) as the custom op ``geomamba::line_order``, differentiable.

Same values as the pure-PyTorch functions. It exists for the compiled SS2D layer on CUDA: inductor's
generated code for the transposed slices (and for their gradient, fused with the concatenation of the
projection's gradients) reads one side with a stride, 27 us for the 2.4 MB of projections of the flagship's
32x32 layer on an H100 (bench/layer_profile_gpu.py). Opaque to inductor, the op copies the row-major
slices with ``copy_`` and transposes the column-major ones with the tiled copy of
:mod:`geomamba.ops.triton.copy` (coalesced on both sides) while a CUDA graph is captured, PyTorch's
``copy_`` otherwise; without Triton, and on other devices, it runs the pure-PyTorch functions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geomamba.ops.cross_scan import from_line_order, to_line_order

__all__ = ["line_order"]


def _strided_copy(t: Tensor):
    """The copy for the transposed slices of t: the tiled Triton copy for CUDA tensors, else None."""
    if not t.is_cuda:
        return None
    try:
        from geomamba.ops.triton.copy import strided_copy_
    except ImportError:  # no triton: PyTorch's copies
        return None
    return strided_copy_


def _odd(t: Tensor, rows: int, cols: int) -> Tensor:
    """Slices 1, 3 of ``(B, K, C, rows*cols)`` as one ``(B * K/2, C, rows, cols)`` view."""
    return t[:, 1::2].flatten(0, 1).unflatten(-1, (rows, cols))


@torch.library.custom_op("geomamba::line_order", mutates_args=())
def _line_order(t: Tensor, h: int, w: int, inverse: bool) -> Tensor:
    copy = _strided_copy(t)
    if t.shape[1] == 1:
        return t.clone()  # (the wrapper does not call the op for K = 1: both layouts are one)
    if copy is None:
        return (from_line_order if inverse else to_line_order)(t, h, w).contiguous()
    out = torch.empty(t.shape, dtype=t.dtype, device=t.device)
    out[:, 0::2].copy_(t[:, 0::2])
    src_hw = (w, h) if inverse else (h, w)
    copy(_odd(out, *src_hw[::-1]), _odd(t, *src_hw).transpose(-1, -2))
    return out


@_line_order.register_fake
def _line_order_fake(t, h, w, inverse):
    return torch.empty(t.shape, dtype=t.dtype, device=t.device)


def _setup_context(ctx, inputs, output):
    _, ctx.h, ctx.w, ctx.inverse = inputs


def _backward(ctx, grad):
    return torch.ops.geomamba.line_order(grad, ctx.h, ctx.w, not ctx.inverse), None, None, None


_line_order.register_autograd(_backward, setup_context=_setup_context)


def line_order(t: Tensor, h: int, w: int, inverse: bool = False) -> Tensor:
    """``(B, K, C, H*W)`` image order -> "lines" layout (``inverse``: back), contiguous (t itself for
    K = 1); see the module docstring."""
    if not isinstance(t, Tensor) or t.dim() != 4 or t.shape[1] not in (1, 2, 4) or t.shape[3] != h * w:
        raise ValueError(
            f"line_order expects a tensor (B, K in 1|2|4, C, H*W = {h}*{w}), got {getattr(t, 'shape', type(t))}"
        )
    if t.shape[1] == 1:
        return t
    return torch.ops.geomamba.line_order(t, int(h), int(w), bool(inverse))
