"""Shared Triton helpers of the selective-scan kernels: tiling, softplus and the scan combiners.

Sequence addressing (used by the plain scan and the fused SS2D scan alike). A program scans BD channels
along one sequence of length L in chunks of ``CH = TO * TI`` positions. A chunk is a ``(TO, TI)`` tile:

- flat (plain scan, and the row-major SS2D directions): ``TO = 1``, ``TI = CH``; position ``t`` of the
  sequence sits at memory offset ``t`` of its row.
- column-major (SS2D directions 1 and 3) on an ``H x W`` image stored row-major: ``TI`` rows of ``TO``
  consecutive columns; sequence order is column after column (``w`` major, ``h`` minor), so the tile is
  loaded in memory order (contiguous along ``w``) and flattened ``(w, h)``: Triton transposes it in
  shared memory, no copy of the image is written.

A reversed direction walks the chunks backwards and scans each tile with ``reverse=True``.
Masked positions are identity elements of the recurrence (``a = 1``, ``b = 0``, no output).
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def softplus(x):
    """softplus(x) = log(1 + exp(x)), linear above 20 (as torch.nn.functional.softplus)."""
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)


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
def chunk_tile(c, L, H, W, COLMAJOR: tl.constexpr, TO: tl.constexpr, TI: tl.constexpr):
    """Memory offsets ``(TO, TI)`` inside a row and validity mask of chunk ``c`` (memory order)."""
    ji = tl.arange(0, TI)
    if COLMAJOR:
        nic = tl.cdiv(H, TI)
        oc = c // nic
        ic = c - oc * nic
        w = oc * TO + tl.arange(0, TO)
        h = ic * TI + ji
        off = w[:, None] + h[None, :] * W
        msk = (w[:, None] < W) & (h[None, :] < H)
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
    TO: tl.constexpr, TI: tl.constexpr,
):  # fmt: skip
    """Sum ``(BD*NP, CH)`` over the block's channels and add it to the ``(NP, L)`` rows of B or C at
    ``base + n*L`` (one atomic per block and state, not per channel)."""
    CH: tl.constexpr = TO * TI
    if NP == 1:
        s = tl.sum(t, 0)[None, :]
    else:
        s = tl.sum(tl.reshape(t, (BD, NP, CH)), 0)
    n = tl.arange(0, NP)
    nm = n < N
    if COLMAJOR:
        tl.atomic_add(
            ptr + base + n[:, None, None] * L + off[None, :, :], tl.reshape(s, (NP, TO, TI)),
            mask=nm[:, None, None] & msk[None, :, :], sem="relaxed",
        )  # fmt: skip
    else:
        tl.atomic_add(ptr + base + n[:, None] * L + off, s, mask=nm[:, None] & msk, sem="relaxed")
