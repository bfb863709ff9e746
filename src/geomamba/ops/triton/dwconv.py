"""Triton kernels of the SS2D layer's depthwise convolution + SiLU (``ops.dwconv_silu``).

``y = SiLU(depthwise_conv(x) + bias)``, stride 1, odd ``k x k`` kernel, zero padding ``k // 2``:
x ``(batch, H, W, C)`` (in_proj's tokens, channels last), y ``(batch, C, H, W)`` contiguous (channels
first: the layout the SS2D scan reads). One kernel reads x once and writes y once, where PyTorch runs
cuDNN's convolution and a second kernel for the SiLU and the layout change.

Backward (the pre-activation is recomputed, not saved):

1. ``_bwd_gs_kernel``: ``gs = dy * SiLU'(s)`` (``s`` recomputed from x), written channels last in x's dtype,
   and the bias gradient's fp32 column sums per tile (added up afterwards; aten's column sum of gs took
   24 us at 32x32 on an H100);
2. ``_bwd_dx_kernel``: ``dx(p) = sum_taps gs(p - tap) w(tap)`` (the transposed convolution), channels last;
3. the weight gradient by the library's depthwise wgrad (``aten.convolution_backward``, cuDNN on CUDA) on
   the channels-last views of gs and x. (Summing it in Triton, as per-program partial sums of
   ``gs(p) x(p + tap)`` after every tile or in nine accumulators over a loop of tiles, took 89-104 us at
   32x32 on an H100 where the gs kernel alone takes about the forward's time: bench/NOTES_triton.md
   round 13.)

Tiles are ``(P pixels, CB channels)`` of one image; accumulation is fp32 and the weights are read in fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["DWCONV_DX_TILE", "DWCONV_TILE", "dwconv_silu_bwd", "dwconv_silu_fwd"]

# (P pixels, CB channels, warps) of the forward and of the two backward kernels: least summed time over the
# flagship's three maps on an H100 (bf16, batch 16; bench/dwconv_gpu.py, results/dwconv_gpu_*.json)
DWCONV_TILE = (32, 128, 4)
DWCONV_DX_TILE = (16, 128, 4)


@triton.jit
def _tap(x_ptr, b, h, w, p_ok, c, cm, H, W, C, DI: tl.constexpr, DJ: tl.constexpr):
    """``(P, CB)`` fp32 tile of x (channels last) at the pixels shifted by ``(DI, DJ)``, 0 outside."""
    hh = h + DI
    ww = w + DJ
    ok = p_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
    row = ((b * H + hh) * W + ww).to(tl.int64) * C
    return tl.load(x_ptr + row[:, None] + c[None, :], mask=ok[:, None] & cm[None, :], other=0.0).to(
        tl.float32
    )


@triton.jit
def _pre_activation(
    x_ptr, w_ptr, bias_ptr, b, h, w, p_ok, c, cm, H, W, C,
    KS: tl.constexpr, HAS_BIAS: tl.constexpr, P: tl.constexpr, CB: tl.constexpr,
):  # fmt: skip
    """Convolution + bias at the tile's pixels, fp32 ``(P, CB)``."""
    R: tl.constexpr = KS // 2
    acc = tl.zeros((P, CB), dtype=tl.float32)
    for t in tl.static_range(KS * KS):
        wt = tl.load(w_ptr + c * (KS * KS) + t, mask=cm, other=0.0)
        acc += _tap(x_ptr, b, h, w, p_ok, c, cm, H, W, C, t // KS - R, t % KS - R) * wt[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + c, mask=cm, other=0.0)[None, :]
    return acc


@triton.jit
def _tile(H, W, C, n_pb, P: tl.constexpr, CB: tl.constexpr):
    pid = tl.program_id(0)
    b = pid // n_pb
    p = (pid - b * n_pb) * P + tl.arange(0, P)
    c = tl.program_id(1) * CB + tl.arange(0, CB)
    h = p // W
    return pid, b, p, h, p - h * W, p < H * W, c, c < C


@triton.jit
def _fwd_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr, H, W, C, n_pb,
    KS: tl.constexpr, HAS_BIAS: tl.constexpr, P: tl.constexpr, CB: tl.constexpr,
):  # fmt: skip
    _, b, p, h, w, p_ok, c, cm = _tile(H, W, C, n_pb, P, CB)
    s = _pre_activation(x_ptr, w_ptr, bias_ptr, b, h, w, p_ok, c, cm, H, W, C, KS, HAS_BIAS, P, CB)
    y = s * tl.sigmoid(s)
    out = (b * C + c).to(tl.int64) * (H * W)
    tl.store(
        y_ptr + out[None, :] + p[:, None], y.to(y_ptr.dtype.element_ty), mask=p_ok[:, None] & cm[None, :]
    )


@triton.jit
def _bwd_gs_kernel(
    x_ptr, w_ptr, bias_ptr, dy_ptr, gs_ptr, db_part_ptr, H, W, C, n_pb,
    KS: tl.constexpr, HAS_BIAS: tl.constexpr, P: tl.constexpr, CB: tl.constexpr,
):  # fmt: skip
    pid, b, p, h, w, p_ok, c, cm = _tile(H, W, C, n_pb, P, CB)
    s = _pre_activation(x_ptr, w_ptr, bias_ptr, b, h, w, p_ok, c, cm, H, W, C, KS, HAS_BIAS, P, CB)
    m = p_ok[:, None] & cm[None, :]
    chf = (b * C + c).to(tl.int64) * (H * W)
    dy = tl.load(dy_ptr + chf[None, :] + p[:, None], mask=m, other=0.0).to(tl.float32)
    sg = tl.sigmoid(s)
    gs = dy * sg * (1.0 + s * (1.0 - sg))
    row = (b * H * W + p).to(tl.int64) * C
    tl.store(gs_ptr + row[:, None] + c[None, :], gs.to(gs_ptr.dtype.element_ty), mask=m)
    if HAS_BIAS:  # the bias gradient's partial sum over the tile's pixels (0 outside: dy was loaded as 0)
        tl.store(db_part_ptr + pid.to(tl.int64) * C + c, tl.sum(gs, axis=0), mask=cm)


@triton.jit
def _bwd_dx_kernel(
    gs_ptr, w_ptr, dx_ptr, H, W, C, n_pb, KS: tl.constexpr, P: tl.constexpr, CB: tl.constexpr,
):  # fmt: skip
    _, b, p, h, w, p_ok, c, cm = _tile(H, W, C, n_pb, P, CB)
    R: tl.constexpr = KS // 2
    acc = tl.zeros((P, CB), dtype=tl.float32)
    for t in tl.static_range(KS * KS):
        wt = tl.load(w_ptr + c * (KS * KS) + t, mask=cm, other=0.0)
        acc += _tap(gs_ptr, b, h, w, p_ok, c, cm, H, W, C, R - t // KS, R - t % KS) * wt[None, :]
    row = (b * H * W + p).to(tl.int64) * C
    tl.store(
        dx_ptr + row[:, None] + c[None, :], acc.to(dx_ptr.dtype.element_ty), mask=p_ok[:, None] & cm[None, :]
    )


def _geometry(x, weight, tile):
    batch, h, w, c = x.shape
    ks = weight.shape[-1]
    p, cb, warps = tile
    n_pb = triton.cdiv(h * w, p)
    return batch, h, w, c, ks, p, cb, warps, n_pb, (batch * n_pb, triton.cdiv(c, cb))


def _weights(weight, bias, c, ks):
    w32 = weight.detach().reshape(c, ks * ks).float().contiguous()
    b32 = None if bias is None else bias.detach().float().contiguous()
    return w32, b32


def dwconv_silu_fwd(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, tile=None
) -> torch.Tensor:
    """``SiLU(depthwise conv(x) + bias)``: x ``(batch, H, W, C)`` contiguous, weight ``(C, 1, k, k)``, bias
    ``(C,)`` or None -> ``(batch, C, H, W)`` contiguous in x's dtype. ``tile``: ``(P, CB, warps)``."""
    batch, h, w, c, ks, p, cb, warps, n_pb, grid = _geometry(x, weight, tile or DWCONV_TILE)
    w32, b32 = _weights(weight, bias, c, ks)
    y = torch.empty(batch, c, h, w, device=x.device, dtype=x.dtype)
    if y.numel() == 0:
        return y
    _fwd_kernel[grid](
        x, w32, w32 if b32 is None else b32, y, h, w, c, n_pb,
        KS=ks, HAS_BIAS=b32 is not None, P=p, CB=cb, num_warps=warps,
    )  # fmt: skip
    return y


def dwconv_silu_bwd(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    tile=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gradients ``(dx (batch, H, W, C) in x's dtype, dweight (C, 1, k, k), dbias (C,) or None)`` (weight's
    dtype) of :func:`dwconv_silu_fwd` for ``dy (batch, C, H, W)`` contiguous. ``tile``: as for the forward,
    of the two backward kernels."""
    _, h, w, c, ks, p, cb, warps, n_pb, grid = _geometry(x, weight, tile or DWCONV_DX_TILE)
    w32, b32 = _weights(weight, bias, c, ks)
    dx = torch.empty_like(x)
    if x.numel() == 0:
        dw = torch.zeros_like(weight)
        return dx, dw, None if bias is None else torch.zeros_like(bias)
    gs = torch.empty_like(x)
    db_part = None if bias is None else torch.empty(grid[0], c, device=x.device, dtype=torch.float32)
    _bwd_gs_kernel[grid](
        x, w32, w32 if b32 is None else b32, dy, gs, w32 if db_part is None else db_part, h, w, c, n_pb,
        KS=ks, HAS_BIAS=b32 is not None, P=p, CB=cb, num_warps=warps,
    )  # fmt: skip
    _bwd_dx_kernel[grid](gs, w32, dx, h, w, c, n_pb, KS=ks, P=p, CB=cb, num_warps=warps)
    # the weight gradient from the library's depthwise wgrad on the channels-last views; the bias gradient
    # from the gs kernel's per-tile fp32 column sums (aten's column sum of gs took 24 us at 32x32 on an H100)
    _, dw, _ = torch.ops.aten.convolution_backward(
        gs.permute(0, 3, 1, 2), x.permute(0, 3, 1, 2), w32.to(x.dtype).view(c, 1, ks, ks),
        None, [1, 1], [ks // 2, ks // 2], [1, 1], False, [0, 0], c, [False, True, False],
    )  # fmt: skip
    db = None if db_part is None else db_part.sum(0)
    return dx, dw.reshape(weight.shape).to(weight.dtype), None if db is None else db.to(bias.dtype)
