"""Triton kernel of dt_proj's backward (``ops.dt_proj``): both gradients from one read of ddelta.

The forward is ``delta = weight @ dts``: weight ``(K, D, R)``, dts ``(B, K, R, L)``, delta ``(B, K, D, L)``
(SS2D's per-direction projection of the low-rank dt input; D = d_inner, R = dt_rank = 8-64, L = H*W).
Its backward as two matrix products reads ddelta, K times the size of the map, twice:
``ddts = weight^T @ ddelta`` and ``dweight = sum_b ddelta @ dts^T``. One kernel does both:

- program ``(k, channel block, split)`` walks the ``(batch, L block)`` tiles of its split; per tile it loads
  ddelta ``(DC, LB)`` and dts ``(R, LB)`` once, adds ``ddelta @ dts^T`` to a ``(DC, R)`` fp32 accumulator
  and writes ``weight^T @ ddelta`` ``(R, LB)`` (two ``tl.dot``; R padded to 16);
- the weight gradient's per-split partial sums (fp32) are summed afterwards, as are the channel blocks'
  ddts partials when D is split (fp32; nothing is added atomically, so the result is deterministic).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["DT_PROJ_TILE", "dt_proj_bwd"]

# (DC channels, LB positions, warps, pipeline stages): DC = min(D, DC) channels per program; and programs
# per SM (the splits of the (batch, L block) tiles follow from it). Least summed time over the flagship's
# three maps on an H100 (bf16, batch 16; bench/dt_proj_gpu.py, results/dt_proj_gpu_*.json): long programs,
# one per SM, each pipelining its loads of ddelta.
DT_PROJ_TILE = (512, 64, 8, 3)
DT_PROJ_WAVES = 1


@triton.jit
def _bwd_kernel(
    dd_ptr, x_ptr, w_ptr, dx_ptr, dw_ptr,
    B, D, R, L, n_lb, n_split,
    sxb, sxk, sxr,
    K: tl.constexpr, DC: tl.constexpr, LB: tl.constexpr, RP: tl.constexpr, N_DC: tl.constexpr,
    IEEE: tl.constexpr,
):  # fmt: skip
    k = tl.program_id(0) // N_DC
    dc = tl.program_id(0) % N_DC
    split = tl.program_id(1)
    d = dc * DC + tl.arange(0, DC)
    dm = d < D
    r = tl.arange(0, RP)
    rm = r < R
    j = tl.arange(0, LB)
    # weight^T (RP, DC) of this direction and channel block, in the input dtype
    io = dd_ptr.dtype.element_ty
    wt = tl.load(w_ptr + (k * D + d[None, :]) * R + r[:, None], mask=rm[:, None] & dm[None, :], other=0.0).to(
        io
    )
    acc = tl.zeros((DC, RP), dtype=tl.float32)
    for t in range(split, B * n_lb, n_split):
        b = t // n_lb
        pos = (t - b * n_lb) * LB + j
        pm = pos < L
        dd_row = ((b * K + k) * D + d).to(tl.int64) * L
        dd = tl.load(dd_ptr + dd_row[:, None] + pos[None, :], mask=dm[:, None] & pm[None, :], other=0.0)
        x_off = b.to(tl.int64) * sxb + k * sxk + r * sxr
        x = tl.load(x_ptr + x_off[:, None] + pos[None, :], mask=rm[:, None] & pm[None, :], other=0.0).to(io)
        if IEEE:  # fp32 inputs: full-precision products (tl.dot's default would take TF32)
            acc += tl.dot(dd, tl.trans(x), input_precision="ieee")
            dx = tl.dot(wt, dd, input_precision="ieee")
        else:
            acc += tl.dot(dd, tl.trans(x))
            dx = tl.dot(wt, dd)  # (RP, LB) fp32
        dx_row = ((dc * B + b) * K + k).to(tl.int64) * R * L + r * L
        tl.store(
            dx_ptr + dx_row[:, None] + pos[None, :],
            dx.to(dx_ptr.dtype.element_ty),
            mask=rm[:, None] & pm[None, :],
        )
    dw_off = ((split * K + k) * D + d).to(tl.int64) * R
    tl.store(dw_ptr + dw_off[:, None] + r[None, :], acc, mask=dm[:, None] & rm[None, :])


def dt_proj_bwd(
    ddelta: torch.Tensor,
    weight: torch.Tensor,
    dts: torch.Tensor,
    tile=None,
    splits: int | None = None,
    waves: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ddts (B, K, R, L) in dts's dtype, dweight (K, D, R) in weight's dtype)`` of ``delta = weight @ dts``
    for ``ddelta (B, K, D, L)``; dts may be any view with unit stride along L (a split of x_proj's output).
    ``tile``: ``(DC, LB, warps, stages)``; ``splits``: programs per (direction, channel block) (default:
    about ``waves`` (DT_PROJ_WAVES) programs per SM in all, but at least 8 R positions per split, so that
    the fp32 partial sums of dweight stay small next to ddelta)."""
    batch, k, d, length = ddelta.shape
    r = weight.shape[-1]
    if ddelta.numel() == 0 or dts.numel() == 0:
        return torch.zeros_like(dts), torch.zeros_like(weight)
    dc, lb, warps, stages = tile or DT_PROJ_TILE
    if tile is None and ddelta.element_size() > 2:  # fp32: half the positions and two stages (shared memory)
        lb, stages = max(16, lb // 2), min(stages, 2)
    dc = min(dc, max(16, triton.next_power_of_2(d)))
    n_dc = triton.cdiv(d, dc)
    n_lb = triton.cdiv(length, lb)
    if dts.stride(-1) != 1:
        dts = dts.contiguous()
    ddelta = ddelta.contiguous()
    w_io = weight.contiguous()
    if splits is None:  # enough splits of the (batch, L block) tiles for about `waves` programs per SM
        sms = torch.cuda.get_device_properties(ddelta.device).multi_processor_count if ddelta.is_cuda else 4
        splits = min(triton.cdiv((waves or DT_PROJ_WAVES) * sms, k * n_dc), batch * length // (8 * r))
    n_split = max(1, min(batch * n_lb, splits))
    dx = torch.empty(
        (n_dc, batch, k, r, length), device=ddelta.device, dtype=dts.dtype if n_dc == 1 else torch.float32
    )
    dw = torch.empty((n_split, k, d, r), device=ddelta.device, dtype=torch.float32)
    _bwd_kernel[(k * n_dc, n_split)](
        ddelta, dts, w_io, dx, dw, batch, d, r, length, n_lb, n_split,
        dts.stride(0), dts.stride(1), dts.stride(2),
        K=k, DC=dc, LB=lb, RP=max(16, triton.next_power_of_2(r)), N_DC=n_dc,
        IEEE=ddelta.dtype == torch.float32, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    ddts = dx[0] if n_dc == 1 else dx.sum(0).to(dts.dtype)
    return ddts, dw.sum(0).to(weight.dtype)
