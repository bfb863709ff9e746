"""Triton forward kernel of the selective scan (plain and fused SS2D layouts).

One program owns ``BD`` channels (all in one group) of one sequence (batch b, direction k) and walks it
chunk by chunk: it loads ``(BD, CH)`` of u/delta and ``(N, CH)`` of B/C, forms ``a = exp(dt*A)`` and
``b = dt*B*u`` as ``(BD, N, CH)`` fp32 tiles, runs ``tl.associative_scan`` along the chunk, adds the carried
state, reduces ``sum_n C*h``, applies the D skip and the SiLU(z) gate, and stores ``y`` (or, for the fused
SS2D, atomically adds it into the fp32 image accumulator, so that the K directions merge in place).
"""

from __future__ import annotations

import triton
import triton.language as tl

from geomamba.ops.triton._common import (
    chunk_count,
    chunk_tile,
    combine_fwd,
    flat_mask,
    load_tile,
    softplus,
    store_tile,
)


@triton.jit
def _fwd_seq_nd(
    x_ptr,
    delta_ptr,
    B_ptr,
    C_ptr,
    z_ptr,
    y_ptr,
    last_ptr,
    x_row,
    dl_row,
    bc_base,
    last_off,
    A2,
    Dv,
    bias,
    L,
    H,
    W,
    N,
    HAS_D: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_Z: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    STORE_LAST: tl.constexpr,
    ACCUM: tl.constexpr,
    COLMAJOR: tl.constexpr,
    REVERSE: tl.constexpr,
    BD: tl.constexpr,
    NP: tl.constexpr,
    TO: tl.constexpr,
    TI: tl.constexpr,
):
    CH: tl.constexpr = TO * TI
    offs_n = tl.arange(0, NP)
    nmask = offs_n < N
    seq = tl.arange(0, CH)
    if REVERSE:
        last_sel = seq == 0
    else:
        last_sel = seq == CH - 1
    nc = chunk_count(L, H, W, COLMAJOR, TO, TI)
    h = tl.zeros((BD, NP), dtype=tl.float32)
    for it in range(nc):
        if REVERSE:
            c = nc - 1 - it
        else:
            c = it
        off, msk = chunk_tile(c, L, H, W, COLMAJOR, TO, TI)
        m3 = msk[None, :, :]
        u = tl.load(x_ptr + x_row[:, None, None] + off[None, :, :], mask=m3, other=0.0).to(tl.float32)
        dr = tl.load(delta_ptr + dl_row[:, None, None] + off[None, :, :], mask=m3, other=0.0).to(tl.float32)
        bc_off = bc_base + offs_n[:, None, None] * L + off[None, :, :]
        bc_m = nmask[:, None, None] & m3
        Bt = tl.load(B_ptr + bc_off, mask=bc_m, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + bc_off, mask=bc_m, other=0.0).to(tl.float32)
        u = tl.reshape(u, (BD, CH))
        dr = tl.reshape(dr, (BD, CH))
        Bt = tl.reshape(Bt, (NP, CH))
        Ct = tl.reshape(Ct, (NP, CH))
        valid = tl.reshape(msk, (CH,))
        if HAS_BIAS:
            dr = dr + bias[:, None]
        if SOFTPLUS:
            dt = softplus(dr)
        else:
            dt = dr
        dt = tl.where(valid[None, :], dt, 0.0)
        a = tl.exp2(dt[:, None, :] * A2[:, :, None])
        bx = (dt * u)[:, None, :] * Bt[None, :, :]
        aa, hh = tl.associative_scan((a, bx), 2, combine_fwd, reverse=REVERSE)
        hh = hh + aa * h[:, :, None]
        y = tl.sum(hh * Ct[None, :, :], 1)
        if HAS_D:
            y = y + Dv[:, None] * u
        h = tl.sum(tl.where(last_sel[None, None, :], hh, 0.0), 2)
        y3 = tl.reshape(y, (BD, TO, TI))
        y_off = x_row[:, None, None] + off[None, :, :]
        if HAS_Z:
            zz = tl.load(z_ptr + y_off, mask=m3, other=0.0).to(tl.float32)
            y3 = y3 * zz * tl.sigmoid(zz)
        if ACCUM:
            tl.atomic_add(y_ptr + y_off, y3, mask=m3 & (y_off >= 0), sem="relaxed")
        else:
            tl.store(y_ptr + y_off, y3.to(y_ptr.dtype.element_ty), mask=m3)
    if STORE_LAST:
        tl.store(last_ptr + last_off, h, mask=nmask[None, :])


@triton.jit
def _fwd_seq_n1(
    x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, y_ptr, last_ptr, x_row, dl_row, bc_base, last_off, A2, Dv, bias,
    L, H, W,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr,
    STORE_LAST: tl.constexpr, ACCUM: tl.constexpr, COLMAJOR: tl.constexpr, REVERSE: tl.constexpr,
    BD: tl.constexpr, TO: tl.constexpr, TI: tl.constexpr,
):  # fmt: skip
    """N = 1: every tile is ``(BD, CH)``; B/C rows are broadcast loads (one group per block)."""
    CH: tl.constexpr = TO * TI
    seq = tl.arange(0, CH)
    if REVERSE:
        last_sel = seq == 0
    else:
        last_sel = seq == CH - 1
    a2 = tl.sum(A2, 1)
    bc_row = bc_base + tl.zeros((BD,), dtype=tl.int64)
    nc = chunk_count(L, H, W, COLMAJOR, TO, TI)
    h = tl.zeros((BD,), dtype=tl.float32)
    for it in range(nc):
        if REVERSE:
            c = nc - 1 - it
        else:
            c = it
        off, msk = chunk_tile(c, L, H, W, COLMAJOR, TO, TI)
        valid = flat_mask(msk, COLMAJOR, CH)
        u = load_tile(x_ptr, x_row, off, msk, COLMAJOR, BD, CH)
        dr = load_tile(delta_ptr, dl_row, off, msk, COLMAJOR, BD, CH)
        Bt = load_tile(B_ptr, bc_row, off, msk, COLMAJOR, BD, CH)
        Ct = load_tile(C_ptr, bc_row, off, msk, COLMAJOR, BD, CH)
        if HAS_BIAS:
            dr = dr + bias[:, None]
        if SOFTPLUS:
            dt = softplus(dr)
        else:
            dt = dr
        dt = tl.where(valid, dt, 0.0)
        a = tl.exp2(dt * a2[:, None])
        bx = dt * u * Bt
        aa, hh = tl.associative_scan((a, bx), 1, combine_fwd, reverse=REVERSE)
        hh = hh + aa * h[:, None]
        y = hh * Ct
        if HAS_D:
            y = y + Dv[:, None] * u
        h = tl.sum(tl.where(last_sel[None, :], hh, 0.0), 1)
        if HAS_Z:
            zz = load_tile(z_ptr, x_row, off, msk, COLMAJOR, BD, CH)
            y = y * zz * tl.sigmoid(zz)
        store_tile(y_ptr, x_row, off, msk, y, COLMAJOR, ACCUM, BD, TO, TI)
    if STORE_LAST:
        tl.store(last_ptr + last_off, h[:, None])


@triton.jit
def _fwd_seq(
    x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, y_ptr, last_ptr, x_row, dl_row, bc_base, last_off, A2, Dv, bias,
    L, H, W, N,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr,
    STORE_LAST: tl.constexpr, ACCUM: tl.constexpr, COLMAJOR: tl.constexpr, REVERSE: tl.constexpr,
    BD: tl.constexpr, NP: tl.constexpr, TO: tl.constexpr, TI: tl.constexpr,
):  # fmt: skip
    if NP == 1:
        _fwd_seq_n1(
            x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, y_ptr, last_ptr, x_row, dl_row, bc_base, last_off, A2, Dv,
            bias, L, H, W, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, STORE_LAST, ACCUM, COLMAJOR, REVERSE, BD, TO, TI,
        )  # fmt: skip
    else:
        _fwd_seq_nd(
            x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, y_ptr, last_ptr, x_row, dl_row, bc_base, last_off, A2, Dv,
            bias, L, H, W, N, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, STORE_LAST, ACCUM, COLMAJOR, REVERSE, BD, NP,
            TO, TI,
        )  # fmt: skip


@triton.jit
def scan_fwd_kernel(
    x_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    bias_ptr,
    z_ptr,
    y_ptr,
    last_ptr,
    Dm,
    K,
    G,
    N,
    L,
    H,
    W,
    n_dblocks,
    HAS_D: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_Z: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    STORE_LAST: tl.constexpr,
    ACCUM: tl.constexpr,
    SS2D: tl.constexpr,
    BD: tl.constexpr,
    NP: tl.constexpr,
    CH: tl.constexpr,
    TO_C: tl.constexpr,
    TI_C: tl.constexpr,
):
    """Grid: ``batch * n_dblocks * K`` programs, k fastest (the K directions of a block run together).

    Plain scan: ``K = 1``; x/z/y ``(batch, Dm, L)``; delta ``(batch, Dm, L)``; B/C ``(batch, G, N, L)``.
    SS2D: x/y ``(batch, Dm, H, W)``; delta ``(batch, K, Dm, L)``; B/C ``(batch, K, N, L)`` (G = 1);
    A ``(K*Dm, N)``; D/bias ``(K*Dm,)``; direction k: 0 row, 1 column, 2 row reversed, 3 column reversed.
    """
    pid = tl.program_id(0)
    k = pid % K
    rest = pid // K
    db = rest % n_dblocks
    b = rest // n_dblocks
    d0 = db * BD
    offs_d = d0 + tl.arange(0, BD)
    offs_n = tl.arange(0, NP)
    nmask = offs_n < N
    g = d0 // (Dm // G)
    x_row = (b * Dm + offs_d).to(tl.int64) * L
    dl_row = ((b * K + k) * Dm + offs_d).to(tl.int64) * L
    bc_base = ((b * K + k) * G + g).to(tl.int64) * N * L
    prm = k * Dm + offs_d
    A2 = (
        tl.load(A_ptr + prm[:, None] * N + offs_n[None, :], mask=nmask[None, :], other=0.0)
        * 1.4426950408889634
    )
    if HAS_D:
        Dv = tl.load(D_ptr + prm).to(tl.float32)
    else:
        Dv = tl.zeros((BD,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + prm).to(tl.float32)
    else:
        bias = tl.zeros((BD,), dtype=tl.float32)
    last_off = ((b * K + k) * Dm + offs_d)[:, None].to(tl.int64) * N + offs_n[None, :]
    if SS2D:
        if k == 0:
            _fwd_seq(
                x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, y_ptr, last_ptr, x_row, dl_row, bc_base, last_off,
                A2, Dv, bias, L, H, W, N, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, STORE_LAST, ACCUM,
                False, False, BD, NP, 1, CH,
            )  # fmt: skip
        elif k == 1:
            _fwd_seq(
                x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, y_ptr, last_ptr, x_row, dl_row, bc_base, last_off,
                A2, Dv, bias, L, H, W, N, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, STORE_LAST, ACCUM,
                True, False, BD, NP, TO_C, TI_C,
            )  # fmt: skip
        elif k == 2:
            _fwd_seq(
                x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, y_ptr, last_ptr, x_row, dl_row, bc_base, last_off,
                A2, Dv, bias, L, H, W, N, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, STORE_LAST, ACCUM,
                False, True, BD, NP, 1, CH,
            )  # fmt: skip
        else:
            _fwd_seq(
                x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, y_ptr, last_ptr, x_row, dl_row, bc_base, last_off,
                A2, Dv, bias, L, H, W, N, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, STORE_LAST, ACCUM,
                True, True, BD, NP, TO_C, TI_C,
            )  # fmt: skip
    else:
        _fwd_seq(
            x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, y_ptr, last_ptr, x_row, dl_row, bc_base, last_off,
            A2, Dv, bias, L, H, W, N, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, STORE_LAST, ACCUM,
            False, False, BD, NP, 1, CH,
        )  # fmt: skip
