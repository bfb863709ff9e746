"""The dilated-tap convolution of FADC: a deformable convolution whose offsets are a per-pixel dilation.

``out(p) = sum_k W_k x(p + D(p) dp_k) + bias`` over the k*k taps ``dp_k`` of a k x k kernel (stride 1,
'same' size, zero outside the map): torchvision's ``deform_conv2d`` with offsets ``(D(p) - 1) dp_k``,
computed as one bilinear ``grid_sample`` of the taps (the "columns", ``(B, C*k*k, H*W)``) and one matrix
product in x's dtype, where torchvision's kernel runs everything in fp32 with SIMT GEMMs.

- :func:`dilated_tap_conv`: the reference, composed of PyTorch ops (autograd differentiates it).
- :func:`tap_conv`: the same values as the custom op ``geomamba::dilated_tap_conv`` (forward: output and
  columns, the columns saved for the backward) with its backward ``geomamba::dilated_tap_conv_bwd`` (the
  weight gradient from the saved columns, the input and dilation gradients from one
  ``grid_sampler_2d_backward``). Under ``torch.compile`` both stay opaque: inductor would otherwise
  decompose ``grid_sample`` into gathers, slower than the CUDA kernel. Under autocast the input is cast to
  the autocast dtype first (the product runs in it, as a matmul under autocast would). FADC runs it on
  CUDA in eager mode; in its compiled graphs on an H100 ``deform_conv2d`` was faster (see ``layers/fadc.py``).

Sampling positions are computed in fp32 whatever x's dtype (bf16 would place taps a quarter pixel off at 64
pixels) and the taps are sampled in fp32 for half inputs. At a tap falling exactly on a pixel bilinear
sampling has a kink, where ``grid_sample`` and ``deform_conv2d`` may take the slope of different sides.

(No ``from __future__ import annotations`` here: ``custom_op`` reads the annotations, and ``Optional``
rather than ``X | None`` because older torch versions infer op schemas from ``typing.Optional`` only.)
"""

# ruff: noqa: UP045

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

__all__ = ["dilated_tap_conv", "tap_conv"]


def _pos_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _tap_grid(d: Tensor, b: int, h: int, w: int, k: int) -> Tensor:
    """Normalised sampling grid ``(B, k*k*H, W, 2)`` (align_corners=False) of the taps ``p + D(p) dp_k``,
    in d's dtype (the positions' dtype); d broadcastable to ``(B, 1, H, W)``."""
    r = torch.arange(k, dtype=d.dtype, device=d.device) - k // 2
    ti, tj = r.repeat_interleave(k).view(1, -1, 1, 1), r.repeat(k).view(1, -1, 1, 1)  # taps, row-major
    d = d.expand(b, 1, h, w)
    py = torch.arange(h, dtype=d.dtype, device=d.device).view(1, 1, h, 1) + d * ti  # (B, k*k, H, W)
    px = torch.arange(w, dtype=d.dtype, device=d.device).view(1, 1, 1, w) + d * tj
    # pixel -> normalised coordinates of align_corners=False (defined for any size, 1 included)
    return torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1).view(b, k * k * h, w, 2)


def _columns(x: Tensor, dilation: Tensor, k: int) -> Tensor:
    """The sampled taps ``(B, C*k*k, H*W)`` in x's dtype (sampled in fp32 for half inputs)."""
    b, c, h, w = x.shape
    pos = _pos_dtype(x.dtype)
    grid = _tap_grid(dilation.to(device=x.device, dtype=pos), b, h, w, k)
    cols = F.grid_sample(x.to(pos), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return cols.to(x.dtype).view(b, c * k * k, h * w)


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
    h, w = x.shape[-2:]
    return _product(_columns(x, dilation, weight.shape[-1]), weight, bias, h, w)


@torch.library.custom_op("geomamba::dilated_tap_conv", mutates_args=())
def _tap_conv_fwd(
    x: Tensor, dilation: Tensor, weight: Tensor, bias: Optional[Tensor]
) -> tuple[Tensor, Tensor]:
    with torch.autocast(x.device.type, enabled=False):  # the caller chose the dtype (see tap_conv)
        cols = _columns(x, dilation, weight.shape[-1])
        return _product(cols, weight, bias, *x.shape[-2:]), cols


@_tap_conv_fwd.register_fake
def _tap_conv_fwd_fake(x, dilation, weight, bias):
    b, c, h, w = x.shape
    k = weight.shape[-1]
    return x.new_empty((b, weight.shape[0], h, w)), x.new_empty((b, c * k * k, h * w))


@torch.library.custom_op("geomamba::dilated_tap_conv_bwd", mutates_args=())
def _tap_conv_bwd(
    grad: Tensor,
    cols: Tensor,
    x: Tensor,
    dilation: Tensor,
    weight: Tensor,
    need_x: bool,
    need_dilation: bool,
    need_weight: bool,
    need_bias: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(dx, ddilation, dweight, dbias)``; an empty tensor where not needed."""
    with torch.autocast(x.device.type, enabled=False):
        b, c, h, w = x.shape
        k = weight.shape[-1]
        g = grad.reshape(b, -1, h * w).to(cols.dtype)
        # distinct empty tensors where a gradient is not needed (outputs may not alias each other)
        dx, ddil, dweight, dbias = (x.new_empty(0) for _ in range(4))
        if need_weight:
            # per-sample products summed in fp32 (no copy of the transposed columns)
            dweight = torch.bmm(g, cols.transpose(1, 2)).sum(0, dtype=_pos_dtype(cols.dtype))
            dweight = dweight.reshape(weight.shape).to(weight.dtype)
        if need_bias:
            dbias = grad.sum(dim=(0, 2, 3)).to(weight.dtype)
        if need_x or need_dilation:
            pos = _pos_dtype(x.dtype)
            dcols = torch.matmul(weight.reshape(weight.shape[0], -1).to(g.dtype).t(), g)
            grid = _tap_grid(dilation.detach().to(device=x.device, dtype=pos), b, h, w, k)
            dinput, dgrid = torch.ops.aten.grid_sampler_2d_backward(
                dcols.to(pos).view(b, c, k * k * h, w),
                x.to(pos),
                grid,
                0,  # bilinear
                0,  # zeros padding
                False,  # align_corners
                [need_x, need_dilation],
            )
            if need_x:
                dx = dinput.to(x.dtype)
            if need_dilation:
                # grid = ((2 (j + D tj) + 1) / W - 1, (2 (i + D ti) + 1) / H - 1): d grid / d D = (2 tj / W, 2 ti / H)
                r = torch.arange(k, dtype=pos, device=x.device) - k // 2
                ti, tj = r.repeat_interleave(k).view(1, -1, 1, 1), r.repeat(k).view(1, -1, 1, 1)
                dg = dgrid.view(b, k * k, h, w, 2)
                dd = (dg[..., 0] * (2 * tj / w) + dg[..., 1] * (2 * ti / h)).sum(1, keepdim=True)
                ddil = dd.sum_to_size(dilation.shape).to(device=dilation.device, dtype=dilation.dtype)
        return dx, ddil, dweight, dbias


@_tap_conv_bwd.register_fake
def _tap_conv_bwd_fake(grad, cols, x, dilation, weight, need_x, need_dilation, need_weight, need_bias):
    return (
        x.new_empty(x.shape) if need_x else x.new_empty(0),
        dilation.new_empty(dilation.shape) if need_dilation else x.new_empty(0),
        weight.new_empty(weight.shape) if need_weight else x.new_empty(0),
        weight.new_empty(weight.shape[0]) if need_bias else x.new_empty(0),
    )


def _setup_context(ctx, inputs, output):
    x, dilation, weight, bias = inputs
    ctx.save_for_backward(output[1], x, dilation, weight)
    ctx.mark_non_differentiable(output[1])
    ctx.has_bias = bias is not None


def _backward(ctx, grad, _dcols):
    cols, x, dilation, weight = ctx.saved_tensors
    nx, nd, nw, nb = ctx.needs_input_grad[:4]
    dx, ddil, dweight, dbias = torch.ops.geomamba.dilated_tap_conv_bwd(
        grad, cols, x, dilation, weight, nx, nd, nw, nb and ctx.has_bias
    )
    return (dx if nx else None, ddil if nd else None, dweight if nw else None, dbias if nb else None)


_tap_conv_fwd.register_autograd(_backward, setup_context=_setup_context)


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
    """:func:`dilated_tap_conv` as the custom op ``geomamba::dilated_tap_conv`` (explicit backward from the
    saved columns; opaque to ``torch.compile``). Under autocast x is cast to the autocast dtype first.

    Shapes: as :func:`dilated_tap_conv`."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev) and x.dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = x.to(torch.get_autocast_dtype(dev))
    return torch.ops.geomamba.dilated_tap_conv(x, dilation, weight, bias)[0]
