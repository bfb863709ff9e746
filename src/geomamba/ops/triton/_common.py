"""Shared Triton helpers of the selective-scan kernels: tiling, softplus and the scan combiners.

Sequence addressing (used by the plain scan and the fused SS2D scan alike). A program scans BD channels
along one sequence of length L in chunks of ``CH = TO * TI`` positions. A chunk is a ``(TO, TI)`` tile:

- flat (plain scan, and the row-major SS2D directions): ``TO = 1``, ``TI = CH``; position ``t`` of the
  sequence sits at memory offset ``t`` of its row.
- column-major (SS2D directions 1 and 3) on an ``H x W`` image stored row-major: ``TI`` rows of ``TO``
  consecutive columns; sequence order is column after column (``w`` major, ``h`` minor). Two ways to
  address it (constexpr ``T3`` of the kernels):

  * gather (``T3 = False``): the chunk's offsets are computed directly in sequence order
    as a ``(1, CH)`` row (``w = t // TI``, ``h = t % TI``), so every tile stays two-dimensional and the
    kernel code is the row-major code; a warp's load touches TI rows of TO adjacent columns, whose
    sectors the other columns of the same chunk reuse from L1;
  * transpose (``T3 = True``, the launcher's default): the tile is loaded in memory order as
    ``(R, TO, TI)`` (contiguous along the image rows) and flattened to ``(R, CH)`` with ``tl.reshape``
    (a shared-memory transpose by the compiler). Round 1 saw wrong values from some of these tiles on
    an H100; round 2 could not reproduce it (bench/NOTES_triton.md).

A reversed direction walks the chunks backwards and scans each tile with ``reverse=True``.
Masked positions are identity elements of the recurrence (``a = 1``, ``b = 0``, no output).
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
# The compiled kernels take log2 from the hardware approximation (lg2.approx.f32, one MUFU instruction,
# relative error ~2^-22) instead of the ~25-instruction polynomial of tl.log; the interpreter (CPU tests)
# cannot run inline PTX and uses tl.log.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
FAST_LOG2 = tl.constexpr(not INTERPRETED)
# The interpreter's tl.dot gives zeros for bf16 operands (triton 3.6): project_delta converts them there.
DOT_FP32_OPERANDS = tl.constexpr(INTERPRETED)


@triton.jit
def _log2_approx(x):
    return tl.inline_asm_elementwise(
        "lg2.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1
    )


@triton.jit
def softplus(x):
    """softplus(x) = log(1 + exp(x)), linear above 20 (as torch.nn.functional.softplus)."""
    if FAST_LOG2:
        sp = _log2_approx(1.0 + tl.exp2(x * 1.4426950408889634)) * 0.6931471805599453
    else:
        sp = tl.log(1.0 + tl.exp(x))
    return tl.where(x <= 20.0, sp, x)


@triton.jit
def delta_to_dt(dr, valid, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, MASK: tl.constexpr = True):
    """A tile of delta (rows = channels or state rows) -> ``(delta + bias, dt)`` with ``dt =
    softplus(delta + bias)`` (or delta + bias), 0 where ``valid`` is False (``MASK``)."""
    if HAS_BIAS:
        dr = dr + bias[:, None]
    if SOFTPLUS:
        dt = softplus(dr)
    else:
        dt = dr
    if MASK:
        dt = tl.where(valid, dt, 0.0)
    return dr, dt


@triton.jit
def combine_fwd(a1, b1, a2, b2):
    """Compose h -> a1*h + b1 (earlier) with h -> a2*h + b2 (later)."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def combine_adj(f1, m1, v1, f2, m2, v2):
    """Compose adjoint segments; argument 1 is the LATER segment in time, argument 2 the earlier.

    A segment [i..j] maps p = a_{j+1} g_{j+1} to g_i = v + m * p and remembers f = a_i, so that
    g_t = C_t dy_t + a_{t+1} g_{t+1} is scanned without shifting ``a`` by one position.
    """
    return f2, m2 * f1 * m1, v2 + m2 * f1 * v1


@triton.jit
def chunk_count(L, H, W, COLMAJOR: tl.constexpr, TO: tl.constexpr, TI: tl.constexpr):
    """Number of chunks of one sequence."""
    if COLMAJOR:
        nc = tl.cdiv(W, TO) * tl.cdiv(H, TI)
    else:
        nc = tl.cdiv(L, TI)
    return nc


@triton.jit
def chunk_tile(c, L, H, W, COLMAJOR: tl.constexpr, T3: tl.constexpr, TO: tl.constexpr, TI: tl.constexpr):
    """Offsets inside a row and validity mask of chunk ``c``: ``(TO, TI)`` in memory order when
    ``COLMAJOR and T3``, else ``(1, CH)`` in sequence order."""
    ji = tl.arange(0, TI)
    if COLMAJOR:
        nic = tl.cdiv(H, TI)
        oc = c // nic
        ic = c - oc * nic
        if T3:
            w = oc * TO + tl.arange(0, TO)
            h = ic * TI + ji
            off = w[:, None] + h[None, :] * W
            msk = (w[:, None] < W) & (h[None, :] < H)
        else:
            t = tl.arange(0, TO * TI)
            w = oc * TO + t // TI
            h = ic * TI + t % TI
            off = (w + h * W)[None, :]
            msk = ((w < W) & (h < H))[None, :]
    else:
        t = c * TI + ji
        off = t[None, :]
        msk = t[None, :] < L
    return off, msk


@triton.jit
def flat_mask(msk, COLMAJOR: tl.constexpr, CH: tl.constexpr):
    """Validity of a chunk's positions in sequence order, ``(1, CH)``."""
    if COLMAJOR:
        v = tl.reshape(msk, (1, CH))
    else:
        v = msk
    return v


@triton.jit
def load_tile(ptr, rows, rmask, off, msk, COLMAJOR: tl.constexpr, R: tl.constexpr, CH: tl.constexpr):
    """``(R, CH)`` fp32 tile in sequence order: row r reads at ``rows[r]`` (rows may repeat: broadcast)."""
    if COLMAJOR:
        p = ptr + rows[:, None, None] + off[None, :, :]
        m = msk[None, :, :] & rmask[:, None, None]
        v = tl.reshape(tl.load(p, mask=m, other=0.0), (R, CH))
    else:
        v = tl.load(ptr + rows[:, None] + off, mask=msk & rmask[:, None], other=0.0)
    return v.to(tl.float32)


@triton.jit
def project_delta(
    dts_ptr, dts_base, w_ptr, w_rows, off, msk, L, R: tl.constexpr, CH: tl.constexpr, DT_R: tl.constexpr,
    DT_RP: tl.constexpr, DT_DOT: tl.constexpr,
):  # fmt: skip
    """``(R, CH)`` fp32 tile of delta computed from its low-rank factors (dt_proj fused): row r is
    ``sum_j w[w_rows[r] + j] * dts[dts_base + j * L + off]`` over the ``DT_R`` ranks (flat rows only).
    ``DT_DOT``: one ``tl.dot`` of ``(R, DT_RP) @ (DT_RP, CH)`` (ranks zero-padded to ``DT_RP``, a power
    of two >= 16; needs R >= 16 and 16-bit inputs); else ``DT_R`` rank-1 updates in fp32."""
    if DT_DOT:
        rk = tl.arange(0, DT_RP)
        km = rk < DT_R
        wt = tl.load(w_ptr + w_rows[:, None] + rk[None, :], mask=km[None, :], other=0.0)
        dts = tl.load(
            dts_ptr + dts_base + rk[:, None].to(tl.int64) * L + off, mask=km[:, None] & msk, other=0.0
        )
        if DOT_FP32_OPERANDS:
            wt, dts = wt.to(tl.float32), dts.to(tl.float32)
        v = tl.dot(wt, dts, out_dtype=tl.float32)
    else:
        v = tl.zeros((R, CH), dtype=tl.float32)
        for j in tl.static_range(DT_R):
            wj = tl.load(w_ptr + w_rows + j).to(tl.float32)
            dj = tl.load(dts_ptr + dts_base + j * L + off, mask=msk, other=0.0).to(tl.float32)
            v += wj[:, None] * dj
    return v


@triton.jit
def emit_tile(
    y_ptr, acc_ptr, rows, rmask, off, msk, val, COLMAJOR: tl.constexpr, MODE: tl.constexpr, R: tl.constexpr,
    TO: tl.constexpr, TI: tl.constexpr,
):  # fmt: skip
    """Write a ``(R, CH)`` result tile. ``MODE``: 0 store into y; 1 fp32 atomic add into acc; 2 store into
    acc (first direction); 3 acc += val (later direction); 4 store acc + val into y (last direction).
    Modes 2-4 rely on one program visiting the directions in turn with a barrier between them."""
    if MODE >= 3:
        val = val + load_tile(acc_ptr, rows, rmask, off, msk, COLMAJOR, R, TO * TI)
    if MODE == 0:
        store_tile(y_ptr, rows, rmask, off, msk, val, COLMAJOR, False, R, TO, TI)
    elif MODE == 4:
        store_tile(y_ptr, rows, rmask, off, msk, val, COLMAJOR, False, R, TO, TI)
    elif MODE == 1:
        store_tile(acc_ptr, rows, rmask, off, msk, val, COLMAJOR, True, R, TO, TI)
    else:
        store_tile(acc_ptr, rows, rmask, off, msk, val, COLMAJOR, False, R, TO, TI)


@triton.jit
def store_tile(
    ptr, rows, rmask, off, msk, val, COLMAJOR: tl.constexpr, ACCUM: tl.constexpr, R: tl.constexpr,
    TO: tl.constexpr, TI: tl.constexpr,
):  # fmt: skip
    """Store (or atomically add, fp32) an ``(R, CH)`` sequence-order tile at its memory positions."""
    if COLMAJOR:
        v = tl.reshape(val, (R, TO, TI))
        p = ptr + rows[:, None, None] + off[None, :, :]
        m = msk[None, :, :] & rmask[:, None, None]
    else:
        v = val
        p = ptr + rows[:, None] + off
        m = msk & rmask[:, None]
    if ACCUM:
        tl.atomic_add(p, v, mask=m, sem="relaxed")
    else:
        tl.store(p, v.to(ptr.dtype.element_ty), mask=m)


@triton.jit
def channel_sum(t, BD: tl.constexpr, NP: tl.constexpr, CH: tl.constexpr):
    """``(BD*NP, CH)`` state rows -> ``(BD, CH)``: sum over the states of each channel."""
    if NP == 1:
        r = t
    else:
        r = tl.sum(tl.reshape(t, (BD, NP, CH)), 1)
    return r


@triton.jit
def channel_pick(t, BD: tl.constexpr, NP: tl.constexpr, CH: tl.constexpr):
    """``(BD*NP, CH)`` rows that repeat over the states -> ``(BD, CH)`` (exact: max of equal values)."""
    if NP == 1:
        r = t
    else:
        r = tl.max(tl.reshape(t, (BD, NP, CH)), 1)
    return r


@triton.jit
def state_rows(t, BD: tl.constexpr, NP: tl.constexpr, CH: tl.constexpr):
    """``(BD, CH)`` -> ``(BD*NP, CH)`` repeated over the states."""
    if NP == 1:
        r = t
    else:
        r = tl.reshape(tl.broadcast_to(t[:, None, :], (BD, NP, CH)), (BD * NP, CH))
    return r


@triton.jit
def atomic_add_state_sum(
    ptr, base, N, L, off, msk, t, COLMAJOR: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
    TO: tl.constexpr, TI: tl.constexpr, ATOMIC: tl.constexpr = True,
):  # fmt: skip
    """Sum ``(BD*NP, CH)`` over the block's channels and add it to the ``(NP, L)`` rows of B or C at
    ``base + n*L`` (one atomic per block and state, not per channel); with ``ATOMIC=False`` store it
    there instead (``base`` then addresses this block's own partial-sum rows)."""
    CH: tl.constexpr = TO * TI
    if NP == 1:
        s = tl.sum(t, 0)[None, :]
    else:
        s = tl.sum(tl.reshape(t, (BD, NP, CH)), 0)
    n = tl.arange(0, NP)
    nm = n < N
    if COLMAJOR:
        p = ptr + base + n[:, None, None] * L + off[None, :, :]
        v = tl.reshape(s, (NP, TO, TI))
        m = nm[:, None, None] & msk[None, :, :]
    else:
        p = ptr + base + n[:, None] * L + off
        v = s
        m = nm[:, None] & msk
    if ATOMIC:
        tl.atomic_add(p, v, mask=m, sem="relaxed")
    else:
        tl.store(p, v, mask=m)
