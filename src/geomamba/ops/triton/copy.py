"""Tiled strided copies for the fused SS2D kernels: transposes of the image's two axes, with a cast, and
permutations of (channels, H, W) to and from the channels-last layout.

``strided_copy_(dst, src, add=None)`` writes ``src (+ add)`` into ``dst`` (cast to dst's dtype); the
three are views of one logical shape (up to 4-D) with any strides. A program copies a ``(BR, BS)`` tile
of the last two dimensions, so when ``src`` is contiguous along one of them and ``dst`` along the other
(a transpose of H and W) both the loads and the stores are coalesced: the compiler exchanges the tile
through shared memory. PyTorch's ``copy_`` of such a transpose runs an element-wise kernel whose loads
or stores are strided (about 150 us for a (32, 256, 64, 64) bf16 map on an H100, a quarter of the copy
bandwidth; bench/ss2d_copy_gpu.py measures both). Sums are taken in fp32.

Which copy runs (``tiled=None``, the default): the Triton kernel while a CUDA graph is being captured
(the compiled training step under ``reduce-overhead``: a replay costs no launch), PyTorch's ``copy_``
otherwise. An eager call pays each launch on the host, and a Triton launch costs more host time than a
PyTorch one (about 80 us more on an H100 host): replayed, the SS2D backward took 5.28 ms over the
flagship's six shapes with the tiled copies and 6.86 with PyTorch's, but eagerly the tiled copies cost
5.8 ms of host time over the four shapes that take them against 3.8, and the eager training step is
bound by its host (bench/ss2d_copy_gpu.py).

``permuted_copy_(dst, src, add=None, dst2=None)`` does the same by 3-D tiles of ``(C, H, W)``, so that any
of the three may be each tensor's contiguous axis: the merge of the SS2D partial sums into a channels-last
output (``acc (B, C, H, W)`` + ``accT (B, C, W, H)`` -> ``y`` with channels innermost) and the split of a
channels-last gradient into its channels-first and transposed copies (``dst2``: a second destination of
``src``) each read and write every element once, with loads and stores of whole 32-byte sectors. Those
short pieces make the pair slower than the 2-D merge + transpose it replaces from 32x32 up (on an H100 90 /
41 us against 59 / 25 at 64x64 / 32x32, faster at 16x16); the SS2D layer still gains, through its
LayerNorm (README, bench/NOTES_triton.md round 15).

The pure-PyTorch twin is ``dst.copy_(src + add)`` (what :func:`strided_copy_` and :func:`permuted_copy_`
do on CPU tensors).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from geomamba.ops.triton.launch import _device_ctx

__all__ = ["permuted_copy_", "strided_copy_", "transposed"]

_TILE = 64
# Under the Triton interpreter (CPU tests) the kernel runs on CPU tensors too.
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _copy_kernel(
    src, dst, add,
    Q, R, S,
    s_p, s_q, s_r, s_s,
    d_p, d_q, d_r, d_s,
    a_p, a_q, a_r, a_s,
    HAS_ADD: tl.constexpr, BR: tl.constexpr, BS: tl.constexpr,
):  # fmt: skip
    pq = tl.program_id(0)
    p = (pq // Q).to(tl.int64)
    q = (pq % Q).to(tl.int64)
    r = tl.program_id(1) * BR + tl.arange(0, BR)[:, None]
    s = tl.program_id(2) * BS + tl.arange(0, BS)[None, :]
    mask = (r < R) & (s < S)
    v = tl.load(src + p * s_p + q * s_q + r * s_r + s * s_s, mask=mask).to(tl.float32)
    if HAS_ADD:
        v += tl.load(add + p * a_p + q * a_q + r * a_r + s * a_s, mask=mask).to(tl.float32)
    tl.store(dst + p * d_p + q * d_q + r * d_r + s * d_s, v.to(dst.dtype.element_ty), mask=mask)


@triton.jit
def _copy3_kernel(
    src, dst, add, dst2,
    NCB, C, H, W,
    s_b, s_c, s_h, s_w,
    d_b, d_c, d_h, d_w,
    a_b, a_c, a_h, a_w,
    e_b, e_c, e_h, e_w,
    HAS_ADD: tl.constexpr, HAS_DST2: tl.constexpr, BC: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
):  # fmt: skip
    pb = tl.program_id(0)
    b = (pb // NCB).to(tl.int64)
    c = ((pb % NCB) * BC + tl.arange(0, BC))[:, None, None]
    h = (tl.program_id(1) * BH + tl.arange(0, BH))[None, :, None]
    w = (tl.program_id(2) * BW + tl.arange(0, BW))[None, None, :]
    mask = (c < C) & (h < H) & (w < W)
    c, h, w = c.to(tl.int64), h.to(tl.int64), w.to(tl.int64)
    v = tl.load(src + b * s_b + c * s_c + h * s_h + w * s_w, mask=mask).to(tl.float32)
    if HAS_ADD:
        v += tl.load(add + b * a_b + c * a_c + h * a_h + w * a_w, mask=mask).to(tl.float32)
    tl.store(dst + b * d_b + c * d_c + h * d_h + w * d_w, v.to(dst.dtype.element_ty), mask=mask)
    if HAS_DST2:
        tl.store(dst2 + b * e_b + c * e_c + h * e_h + w * e_w, v.to(dst2.dtype.element_ty), mask=mask)


def _strides4(t: torch.Tensor) -> tuple[int, int, int, int]:
    return (0,) * (4 - t.dim()) + tuple(t.stride())


def _tiled(t: torch.Tensor, tiled: bool | None) -> bool:
    if _INTERPRET:
        return tiled is not False
    if not t.is_cuda:
        return False
    return torch.cuda.is_current_stream_capturing() if tiled is None else tiled


def strided_copy_(
    dst: torch.Tensor, src: torch.Tensor, add: torch.Tensor | None = None, *, tiled: bool | None = None
) -> torch.Tensor:
    """``dst.copy_(src + add)`` (``add`` optional) by 2-D tiles of the last two dimensions; returns dst.

    dst, src and add: the same shape, 1 to 4 dimensions, any strides (dst must not overlap itself or the
    inputs). ``tiled``: True = the Triton kernel (CUDA tensors; CPU ones too under ``TRITON_INTERPRET=1``),
    False = ``copy_``, None = the kernel while a CUDA graph is captured (see the module docstring)."""
    if src.shape != dst.shape or (add is not None and add.shape != dst.shape):
        shapes = [tuple(t.shape) for t in (dst, src, add) if t is not None]
        raise ValueError(f"strided_copy_: dst, src (and add) must have one shape, got {shapes}")
    if not 1 <= dst.dim() <= 4:
        raise ValueError(f"strided_copy_: 1 to 4 dimensions, got shape {tuple(dst.shape)}")
    if not _tiled(dst, tiled) or dst.numel() == 0:
        return dst.copy_(src if add is None else src.float() + add.float())
    p, q, r, s = (1,) * (4 - dst.dim()) + tuple(dst.shape)
    br, bs = min(_TILE, triton.next_power_of_2(r)), min(_TILE, triton.next_power_of_2(s))
    grid = (p * q, triton.cdiv(r, br), triton.cdiv(s, bs))
    with _device_ctx(dst):
        _copy_kernel[grid](
            src, dst, src if add is None else add,
            q, r, s,
            *_strides4(src), *_strides4(dst), *_strides4(src if add is None else add),
            HAS_ADD=add is not None, BR=br, BS=bs, num_warps=4 if br * bs >= 2048 else 2,
        )  # fmt: skip
    return dst


def transposed(
    t: torch.Tensor, dtype: torch.dtype | None = None, *, tiled: bool | None = None
) -> torch.Tensor:
    """A contiguous copy of ``t.transpose(-1, -2)`` (in ``dtype``, default t's) by :func:`strided_copy_`."""
    out = torch.empty(*t.shape[:-2], t.shape[-1], t.shape[-2], device=t.device, dtype=dtype or t.dtype)
    strided_copy_(out.transpose(-1, -2), t, tiled=tiled)
    return out


# permuted_copy_'s tile (channels, rows, columns) by map size: the first whose pixel bound H*W reaches.
# H100, bf16, batch 16, the SS2D merge into channels-last + the split of a channels-last dy, graph replays
# (bench/copy3_gpu.py, results/copy3_gpu_nvidia_h100_80gb_hbm3.json): 16 x 32 x 32 (4 warps) 90.0 / 40.7 us
# at 64x64 / 32x32 (32 x 16 x 16: 119 / 43.9), 32 x 16 x 16 13.6 us at 16x16 (16 x 32 x 32: 16.3).
_TILE3_BY_PIXELS = ((1024, (16, 32, 32)), (0, (32, 16, 16)))


def permuted_copy_(
    dst: torch.Tensor,
    src: torch.Tensor,
    add: torch.Tensor | None = None,
    dst2: torch.Tensor | None = None,
    *,
    tiled: bool | None = None,
    tile: tuple[int, int, int] | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """``dst.copy_(src + add)`` and ``dst2.copy_(src + add)`` (``add``, ``dst2`` optional) by 3-D tiles of
    the last three dimensions of 4-D views ``(batch, C, H, W)`` with any strides; returns dst.

    Loads and stores are coalesced whichever of C, H and W each tensor holds innermost (e.g. a
    channels-first ``src`` into a channels-last ``dst``). The destinations must not overlap each other or
    the inputs. ``tiled``: as for :func:`strided_copy_`. ``tile`` (powers of 2) and ``num_warps``: the
    kernel's ``(C, H, W)`` tile and warps (default by map size, ``_TILE3_BY_PIXELS``)."""
    ts = [t for t in (dst, src, add, dst2) if t is not None]
    if any(t.shape != dst.shape for t in ts) or dst.dim() != 4:
        raise ValueError(
            f"permuted_copy_: dst, src (add, dst2) must have one 4-D shape, got {[tuple(t.shape) for t in ts]}"
        )
    if not _tiled(dst, tiled) or dst.numel() == 0:
        v = src if add is None else src.float() + add.float()
        if dst2 is not None:
            dst2.copy_(v)
        return dst.copy_(v)
    b, c, h, w = dst.shape
    tile = tile or next(t for bound, t in _TILE3_BY_PIXELS if h * w >= bound)
    bc, bh, bw = (min(t, triton.next_power_of_2(n)) for t, n in zip(tile, (c, h, w)))
    ncb = triton.cdiv(c, bc)
    grid = (b * ncb, triton.cdiv(h, bh), triton.cdiv(w, bw))
    with _device_ctx(dst):
        _copy3_kernel[grid](
            src, dst, src if add is None else add, dst if dst2 is None else dst2,
            ncb, c, h, w,
            *src.stride(), *dst.stride(), *(src if add is None else add).stride(),
            *(dst if dst2 is None else dst2).stride(),
            HAS_ADD=add is not None, HAS_DST2=dst2 is not None, BC=bc, BH=bh, BW=bw,
            num_warps=num_warps or (4 if bc * bh * bw >= 4096 else 2),
        )  # fmt: skip
    return dst
