"""The dilated-tap convolution of FADC: a deformable convolution whose offsets are a per-pixel dilation.

``out(p) = sum_k W_k x(p + D(p) dp_k) + bias`` over the k*k taps ``dp_k`` of a k x k kernel (stride 1,
'same' size, zero outside the map): torchvision's ``deform_conv2d`` with offsets ``(D(p) - 1) dp_k``,
computed as one bilinear ``grid_sample`` of the taps (the "columns", ``(B, C*k*k, H*W)``) and one matrix
product in x's dtype, where torchvision's kernel runs everything in fp32 with SIMT GEMMs.

- :func:`dilated_tap_conv`: the reference, composed of PyTorch ops (autograd differentiates it).
- :func:`tap_conv`: the same values with an explicit backward. The forward returns the output, the sampled
  columns and the sampling grid (both saved for the backward); the backward takes the weight gradient from
  the columns and the input and dilation gradients from one ``grid_sampler_2d_backward``. Under
  ``torch.compile`` it is the custom op ``geomamba::dilated_tap_conv`` with its backward op
  ``geomamba::dilated_tap_conv_bwd``, both opaque (inductor would otherwise decompose ``grid_sample`` into
  gathers, slower than the CUDA kernel); in eager mode the same code runs as an ``autograd.Function`` (no
  Python op dispatch: eager training steps are bound by the host). Under autocast the input is cast to the
  autocast dtype first (the product runs in it, as a matmul under autocast would). FADC runs it on CUDA,
  eager and compiled (see ``layers/fadc.py``).

Sampling positions are computed in fp32 whatever x's dtype (bf16 would place taps a quarter pixel off at 64
pixels) and the taps are sampled in fp32 for half inputs. At a tap falling exactly on a pixel bilinear
sampling has a kink, where ``grid_sample`` and ``deform_conv2d`` may take the slope of different sides.

(No ``from __future__ import annotations`` here: ``custom_op`` reads the annotations, and ``Optional``
rather than ``X | None`` because older torch versions infer op schemas from ``typing.Optional`` only.)
"""

# ruff: noqa: UP045

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

__all__ = ["dilated_tap_conv", "tap_conv"]


def _pos_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _geometry(k: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(base, slope)``: the normalised sampling grid of the taps ``p + D(p) dp_k`` (align_corners=False)
    is ``base + D(p) * slope``, base ``(1, k*k, H, W, 2)`` (the pixels' own coordinates) and slope
    ``(1, k*k, 1, 1, 2)`` (the taps' offsets), (x, y) last; taps row-major."""
    r = torch.arange(k, dtype=dtype, device=device) - k // 2
    ti, tj = r.repeat_interleave(k), r.repeat(k)
    ys = (2 * torch.arange(h, dtype=dtype, device=device) + 1) / h - 1
    xs = (2 * torch.arange(w, dtype=dtype, device=device) + 1) / w - 1
    base = torch.stack(torch.broadcast_tensors(xs.view(1, w), ys.view(h, 1)), dim=-1)  # (H, W, 2)
    slope = torch.stack((2 * tj / w, 2 * ti / h), dim=-1)  # (k*k, 2)
    return base.expand(1, k * k, h, w, 2), slope.view(1, k * k, 1, 1, 2)


_geometry_cache = functools.lru_cache(maxsize=64)(_geometry)


def _cached_geometry(
    k: int, h: int, w: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """:func:`_geometry` kept per map size and device (fewer small ops per call), for eager calls only: not
    while a CUDA graph is being captured, and never from the custom ops, which run inside compiled graphs
    (tensors made there, in the warm-up runs of inductor's CUDA-graph trees too, belong to the graphs'
    memory pool, which then refuses to record: "tensors in the cudagraph pool not tracked as outputs")."""
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return _geometry(k, h, w, device, dtype)
    return _geometry_cache(k, h, w, device, dtype)


def _tap_grid(d: Tensor, b: int, h: int, w: int, k: int, geometry=_geometry) -> Tensor:
    """Sampling grid ``(B, k*k*H, W, 2)`` in d's dtype (the positions' dtype); d broadcastable to
    ``(B, 1, H, W)``."""
    base, slope = geometry(k, h, w, d.device, d.dtype)
    return torch.addcmul(base, d.expand(b, 1, h, w).unsqueeze(-1), slope).view(b, k * k * h, w, 2)


def _dense(x: Tensor, dtype: torch.dtype) -> Tensor:
    """x in ``dtype``, channels-first contiguous: ``grid_sample``'s CUDA kernels loop over the channels of
    one pixel per thread, so a channels-last input (as compiled graphs may hand over) reads uncoalesced,
    10x slower on an H100 (4.7 vs 0.49 ms at batch 32, 128 channels, 64x64)."""
    return x.to(dtype=dtype, memory_format=torch.contiguous_format)


def _sample(x: Tensor, grid: Tensor) -> Tensor:
    """The taps ``(B, C*k*k, H*W)`` in x's dtype, sampled in the grid's dtype (fp32 for half inputs)."""
    b, _, h, w = x.shape
    cols = F.grid_sample(
        _dense(x, grid.dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return cols.to(x.dtype).view(b, -1, h * w)


def _product(cols: Tensor, weight: Tensor, bias: Optional[Tensor], h: int, w: int) -> Tensor:
    out = torch.matmul(weight.reshape(weight.shape[0], -1).to(cols.dtype), cols)
    if bias is not None:
        out = out + bias.to(out.dtype).view(1, -1, 1)
    return out.view(cols.shape[0], -1, h, w)


def dilated_tap_conv(x: Tensor, dilation: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """Reference: ``deform_conv2d`` with offsets ``(D(p) - 1) * dp_k`` (stride 1, 'same' padding) as one
    bilinear ``grid_sample`` of the k*k taps and one matrix product, differentiated by autograd.

    Shapes: x ``(B, C_in, H, W)``, dilation ``(B, 1, H, W)`` (or broadcastable to it), weight
    ``(C_out, C_in, k, k)``, bias ``(C_out,)`` -> ``(B, C_out, H, W)`` in x's dtype (or the autocast dtype).
    """
    b, _, h, w = x.shape
    d = dilation.to(device=x.device, dtype=_pos_dtype(x.dtype))
    return _product(_sample(x, _tap_grid(d, b, h, w, weight.shape[-1])), weight, bias, h, w)


def _forward(
    x: Tensor, dilation: Tensor, weight: Tensor, bias: Optional[Tensor], geometry=_geometry
) -> tuple[Tensor, Tensor, Tensor]:
    """``(out, cols, grid)``: the output, and the sampled columns ``(B, C*k*k, H*W)`` and the sampling grid
    saved for the backward (``geometry``: :func:`_geometry`, or :func:`_cached_geometry` for eager calls)."""
    with torch.autocast(x.device.type, enabled=False):  # the caller chose the dtype (see tap_conv)
        b, _, h, w = x.shape
        d = dilation.to(device=x.device, dtype=_pos_dtype(x.dtype))
        grid = _tap_grid(d, b, h, w, weight.shape[-1], geometry=geometry)
        cols = _sample(x, grid)
        return _product(cols, weight, bias, h, w), cols, grid


@torch.library.custom_op("geomamba::dilated_tap_conv", mutates_args=())
def _tap_conv_fwd(
    x: Tensor, dilation: Tensor, weight: Tensor, bias: Optional[Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    return _forward(x, dilation, weight, bias)


@_tap_conv_fwd.register_fake
def _tap_conv_fwd_fake(x, dilation, weight, bias):
    b, c, h, w = x.shape
    k = weight.shape[-1]
    pos = _pos_dtype(x.dtype)
    return (
        x.new_empty((b, weight.shape[0], h, w)),
        x.new_empty((b, c * k * k, h * w)),
        x.new_empty((b, k * k * h, w, 2), dtype=pos),
    )


def _backward_grads(
    grad, cols, grid, x, dilation, weight, need_x, need_dilation, need_weight, need_bias, geometry=_geometry
):
    """``(dx, ddilation, dweight, dbias)``; an empty tensor where not needed."""
    with torch.autocast(x.device.type, enabled=False):
        b, c, h, w = x.shape
        k = weight.shape[-1]
        g = grad.reshape(b, -1, h * w).to(cols.dtype)
        # distinct empty tensors where a gradient is not needed (outputs may not alias each other)
        dx, ddil, dweight, dbias = (x.new_empty(0) for _ in range(4))
        if need_weight:
            # per-sample products summed in fp32 (no copy of the transposed columns)
            dweight = torch.bmm(g, cols.transpose(1, 2)).sum(0, dtype=grid.dtype)
            dweight = dweight.reshape(weight.shape).to(weight.dtype)
        if need_bias:
            dbias = grad.sum(dim=(0, 2, 3)).to(weight.dtype)
        if need_x or need_dilation:
            dcols = torch.matmul(weight.reshape(weight.shape[0], -1).to(g.dtype).t(), g)
            dinput, dgrid = torch.ops.aten.grid_sampler_2d_backward(
                dcols.to(grid.dtype).view(b, c, k * k * h, w),
                _dense(x, grid.dtype),
                grid,
                0,  # bilinear
                0,  # zeros padding
                False,  # align_corners
                [need_x, need_dilation],
            )
            if need_x:
                dx = dinput.to(x.dtype)
            if need_dilation:  # grid = base + D * slope
                _, slope = geometry(k, h, w, grid.device, grid.dtype)
                dd = (dgrid.view(b, k * k, h, w, 2) * slope).sum(dim=(1, 4)).unsqueeze(1)
                ddil = dd.sum_to_size(dilation.shape).to(device=dilation.device, dtype=dilation.dtype)
        return dx, ddil, dweight, dbias


@torch.library.custom_op("geomamba::dilated_tap_conv_bwd", mutates_args=())
def _tap_conv_bwd(
    grad: Tensor,
    cols: Tensor,
    grid: Tensor,
    x: Tensor,
    dilation: Tensor,
    weight: Tensor,
    need_x: bool,
    need_dilation: bool,
    need_weight: bool,
    need_bias: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _backward_grads(
        grad, cols, grid, x, dilation, weight, need_x, need_dilation, need_weight, need_bias
    )


@_tap_conv_bwd.register_fake
def _tap_conv_bwd_fake(grad, cols, grid, x, dilation, weight, need_x, need_dilation, need_weight, need_bias):
    return (
        x.new_empty(x.shape) if need_x else x.new_empty(0),
        dilation.new_empty(dilation.shape) if need_dilation else x.new_empty(0),
        weight.new_empty(weight.shape) if need_weight else x.new_empty(0),
        weight.new_empty(weight.shape[0]) if need_bias else x.new_empty(0),
    )


def _setup_context(ctx, inputs, output):
    x, dilation, weight, bias = inputs
    ctx.save_for_backward(output[1], output[2], x, dilation, weight)
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.has_bias = bias is not None


def _backward(ctx, grad, _dcols, _dgrid, bwd=torch.ops.geomamba.dilated_tap_conv_bwd):
    cols, grid, x, dilation, weight = ctx.saved_tensors
    nx, nd, nw, nb = ctx.needs_input_grad[:4]
    dx, ddil, dweight, dbias = bwd(grad, cols, grid, x, dilation, weight, nx, nd, nw, nb and ctx.has_bias)
    return (dx if nx else None, ddil if nd else None, dweight if nw else None, dbias if nb else None)


_tap_conv_fwd.register_autograd(_backward, setup_context=_setup_context)


_eager_backward_grads = functools.partial(_backward_grads, geometry=_cached_geometry)


class _TapConvFunction(torch.autograd.Function):
    """The custom ops' forward and backward without their dispatch, for eager calls (a custom op defined
    in Python costs host time at every call, and eager training steps are bound by the host)."""

    @staticmethod
    def forward(x, dilation, weight, bias):
        return _forward(x, dilation, weight, bias, geometry=_cached_geometry)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _setup_context(ctx, inputs, output)

    @staticmethod
    def backward(ctx, grad, dcols, dgrid):
        return _backward(ctx, grad, dcols, dgrid, bwd=_eager_backward_grads)


@register_flop_formula(torch.ops.geomamba.dilated_tap_conv)
def _tap_conv_flops(x_shape, dilation_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    # the product, as torchvision's deform_conv2d is counted (the bilinear sampling is not)
    b, _, h, w = x_shape
    return 2 * b * h * w * weight_shape[0] * weight_shape[1] * weight_shape[2] * weight_shape[3]


@register_flop_formula(torch.ops.geomamba.dilated_tap_conv_bwd)
def _tap_conv_bwd_flops(
    grad_shape, cols_shape, x_shape, dilation_shape, weight_shape, *args, **kwargs
) -> int:
    # twice the forward, the convention FlopCounterMode uses for matmuls
    return 2 * _tap_conv_flops(x_shape, dilation_shape, weight_shape)


def tap_conv(x: Tensor, dilation: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """:func:`dilated_tap_conv` with an explicit backward from the saved columns: under ``torch.compile``
    the custom op ``geomamba::dilated_tap_conv`` (opaque to the compiler), in eager mode the same code as
    an ``autograd.Function``. Under autocast x is cast to the autocast dtype first.

    Shapes: as :func:`dilated_tap_conv`."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev) and x.dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = x.to(torch.get_autocast_dtype(dev))
    if torch.compiler.is_compiling():
        return torch.ops.geomamba.dilated_tap_conv(x, dilation, weight, bias)[0]
    return _TapConvFunction.apply(x, dilation, weight, bias)[0]
