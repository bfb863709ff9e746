"""Triton backward kernel of the selective scan (plain and fused SS2D layouts).

It recomputes the forward instead of storing states. Pass 1 walks the sequence forward and writes only
the state entering each chunk (``(BD, N)`` fp32 per chunk, a scratch buffer of ``N * 4 / CH`` bytes per
element). Pass 2 walks the chunks backwards: it rescans the chunk from its stored state, runs the adjoint
scan ``g_t = C_t dy_t + a_{t+1} g_{t+1}`` (see ``combine_adj``) and forms every gradient. dB/dC are reduced
over the program's BD channels before one atomic add per block; dA, dD and d(delta_bias) accumulate in
registers over the whole sequence and are added once per program.
"""

from __future__ import annotations

import triton
import triton.language as tl

from geomamba.ops.triton._common import (
    atomic_add_rowsum,
    chunk_count,
    chunk_tile,
    combine_adj,
    combine_fwd,
    flat_mask,
    load_tile,
    softplus,
    store_tile,
)


@triton.jit
def _bwd_seq_nd(
    x_ptr,
    delta_ptr,
    B_ptr,
    C_ptr,
    z_ptr,
    dy_ptr,
    dlast_ptr,
    st_ptr,
    dx_ptr,
    ddelta_ptr,
    dB_ptr,
    dC_ptr,
    dz_ptr,
    dA_ptr,
    dD_ptr,
    dbias_ptr,
    x_row,
    dl_row,
    bc_base,
    last_off,
    st_base,
    prm,
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
    HAS_DLAST: tl.constexpr,
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
        first_sel = seq == CH - 1
    else:
        last_sel = seq == CH - 1
        first_sel = seq == 0
    st_tile = tl.arange(0, BD)[:, None] * NP + offs_n[None, :]
    nc = chunk_count(L, H, W, COLMAJOR, TO, TI)
    A = A2 * 0.6931471805599453  # back to natural-log scale

    # pass 1: the state entering every chunk
    h = tl.zeros((BD, NP), dtype=tl.float32)
    for it in range(nc):
        if REVERSE:
            c = nc - 1 - it
        else:
            c = it
        tl.store(st_ptr + st_base + it * (BD * NP) + st_tile, h)
        off, msk = chunk_tile(c, L, H, W, COLMAJOR, TO, TI)
        m3 = msk[None, :, :]
        u = tl.load(x_ptr + x_row[:, None, None] + off[None, :, :], mask=m3, other=0.0).to(tl.float32)
        dr = tl.load(delta_ptr + dl_row[:, None, None] + off[None, :, :], mask=m3, other=0.0).to(tl.float32)
        bc_off = bc_base + offs_n[:, None, None] * L + off[None, :, :]
        bc_m = nmask[:, None, None] & m3
        Bt = tl.load(B_ptr + bc_off, mask=bc_m, other=0.0).to(tl.float32)
        u = tl.reshape(u, (BD, CH))
        dr = tl.reshape(dr, (BD, CH))
        Bt = tl.reshape(Bt, (NP, CH))
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
        h = tl.sum(tl.where(last_sel[None, None, :], hh, 0.0), 2)
    tl.debug_barrier()

    # pass 2: chunks in reverse sequence order
    if HAS_DLAST:
        p = tl.load(dlast_ptr + last_off, mask=nmask[None, :], other=0.0).to(tl.float32)
    else:
        p = tl.zeros((BD, NP), dtype=tl.float32)
    dA_acc = tl.zeros((BD, NP), dtype=tl.float32)
    dD_acc = tl.zeros((BD,), dtype=tl.float32)
    db_acc = tl.zeros((BD,), dtype=tl.float32)
    for it2 in range(nc):
        it = nc - 1 - it2
        if REVERSE:
            c = nc - 1 - it
        else:
            c = it
        h0 = tl.load(st_ptr + st_base + it * (BD * NP) + st_tile)
        off, msk = chunk_tile(c, L, H, W, COLMAJOR, TO, TI)
        m3 = msk[None, :, :]
        x_off = x_row[:, None, None] + off[None, :, :]
        d_off = dl_row[:, None, None] + off[None, :, :]
        u = tl.load(x_ptr + x_off, mask=m3, other=0.0).to(tl.float32)
        dr = tl.load(delta_ptr + d_off, mask=m3, other=0.0).to(tl.float32)
        dout = tl.load(dy_ptr + x_off, mask=m3, other=0.0).to(tl.float32)
        bc_off = bc_base + offs_n[:, None, None] * L + off[None, :, :]
        bc_m = nmask[:, None, None] & m3
        Bt = tl.load(B_ptr + bc_off, mask=bc_m, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + bc_off, mask=bc_m, other=0.0).to(tl.float32)
        u = tl.reshape(u, (BD, CH))
        dr = tl.reshape(dr, (BD, CH))
        dout = tl.reshape(dout, (BD, CH))
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
        hh = hh + aa * h0[:, :, None]
        if HAS_Z:
            zz = tl.reshape(tl.load(z_ptr + x_off, mask=m3, other=0.0).to(tl.float32), (BD, CH))
            y = tl.sum(hh * Ct[None, :, :], 1)
            if HAS_D:
                y = y + Dv[:, None] * u
            sz = tl.sigmoid(zz)
            dz = dout * y * sz * (1.0 + zz * (1.0 - sz))
            dy = dout * zz * sz
            tl.store(dz_ptr + x_off, tl.reshape(dz, (BD, TO, TI)).to(dz_ptr.dtype.element_ty), mask=m3)
        else:
            dy = dout
        cdy = Ct[None, :, :] * dy[:, None, :]
        ones = tl.full((BD, NP, CH), 1.0, dtype=tl.float32)
        _f, mm, vv = tl.associative_scan((a, ones, cdy), 2, combine_adj, reverse=not REVERSE)
        g = vv + mm * p[:, :, None]
        p = tl.sum(tl.where(first_sel[None, None, :], a * g, 0.0), 2)
        ah = hh - bx  # a_t * h_{t-1}
        gdt = g * dt[:, None, :]
        du = tl.sum(gdt * Bt[None, :, :], 1)
        ddt = tl.sum(g * Bt[None, :, :], 1) * u + tl.sum(g * ah * A[:, :, None], 1)
        dA_acc += tl.sum(gdt * ah, 2)
        dBt = tl.sum(gdt * u[:, None, :], 0)
        dCt = tl.sum(hh * dy[:, None, :], 0)
        if HAS_D:
            du = du + Dv[:, None] * dy
            dD_acc += tl.sum(dy * u, 1)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(dr)
        ddt = tl.where(valid[None, :], ddt, 0.0)
        if HAS_BIAS:
            db_acc += tl.sum(ddt, 1)
        du3 = tl.reshape(du, (BD, TO, TI))
        if ACCUM:
            tl.atomic_add(dx_ptr + x_off, du3, mask=m3 & (x_off >= 0), sem="relaxed")
        else:
            tl.store(dx_ptr + x_off, du3.to(dx_ptr.dtype.element_ty), mask=m3)
        tl.store(ddelta_ptr + d_off, tl.reshape(ddt, (BD, TO, TI)).to(ddelta_ptr.dtype.element_ty), mask=m3)
        tl.atomic_add(dB_ptr + bc_off, tl.reshape(dBt, (NP, TO, TI)), mask=bc_m, sem="relaxed")
        tl.atomic_add(dC_ptr + bc_off, tl.reshape(dCt, (NP, TO, TI)), mask=bc_m, sem="relaxed")
    pn = prm[:, None] * N + offs_n[None, :]
    tl.atomic_add(dA_ptr + pn, dA_acc, mask=nmask[None, :] & (pn >= 0), sem="relaxed")
    if HAS_D:
        tl.atomic_add(dD_ptr + prm, dD_acc, sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + prm, db_acc, sem="relaxed")


@triton.jit
def _bwd_seq_n1(
    x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr, dx_ptr, ddelta_ptr, dB_ptr, dC_ptr,
    dz_ptr, dA_ptr, dD_ptr, dbias_ptr, x_row, dl_row, bc_base, last_off, st_base, prm, A2, Dv, bias,
    L, H, W,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr, ACCUM: tl.constexpr, COLMAJOR: tl.constexpr, REVERSE: tl.constexpr,
    BD: tl.constexpr, TO: tl.constexpr, TI: tl.constexpr,
):  # fmt: skip
    """N = 1: ``(BD, CH)`` tiles; dA/dD/dbias accumulate elementwise and are reduced once at the end."""
    CH: tl.constexpr = TO * TI
    seq = tl.arange(0, CH)
    if REVERSE:
        last_sel = seq == 0
        first_sel = seq == CH - 1
    else:
        last_sel = seq == CH - 1
        first_sel = seq == 0
    a2 = tl.sum(A2, 1)
    A = a2 * 0.6931471805599453
    bc_row = bc_base + tl.zeros((BD,), dtype=tl.int64)
    st_offs = st_base + tl.arange(0, BD)
    nc = chunk_count(L, H, W, COLMAJOR, TO, TI)

    # pass 1: the state entering every chunk
    h = tl.zeros((BD,), dtype=tl.float32)
    for it in range(nc):
        if REVERSE:
            c = nc - 1 - it
        else:
            c = it
        tl.store(st_ptr + st_offs + it * BD, h)
        off, msk = chunk_tile(c, L, H, W, COLMAJOR, TO, TI)
        valid = flat_mask(msk, COLMAJOR, CH)
        u = load_tile(x_ptr, x_row, off, msk, COLMAJOR, BD, CH)
        dr = load_tile(delta_ptr, dl_row, off, msk, COLMAJOR, BD, CH)
        Bt = load_tile(B_ptr, bc_row, off, msk, COLMAJOR, BD, CH)
        if HAS_BIAS:
            dr = dr + bias[:, None]
        if SOFTPLUS:
            dt = softplus(dr)
        else:
            dt = dr
        dt = tl.where(valid, dt, 0.0)
        aa, hh = tl.associative_scan(
            (tl.exp2(dt * a2[:, None]), dt * u * Bt), 1, combine_fwd, reverse=REVERSE
        )
        hh = hh + aa * h[:, None]
        h = tl.sum(tl.where(last_sel[None, :], hh, 0.0), 1)
    tl.debug_barrier()

    # pass 2: chunks in reverse sequence order
    if HAS_DLAST:
        p = tl.sum(tl.load(dlast_ptr + last_off).to(tl.float32), 1)
    else:
        p = tl.zeros((BD,), dtype=tl.float32)
    acc_dA = tl.zeros((BD, CH), dtype=tl.float32)
    acc_dD = tl.zeros((BD, CH), dtype=tl.float32)
    acc_db = tl.zeros((BD, CH), dtype=tl.float32)
    for it2 in range(nc):
        it = nc - 1 - it2
        if REVERSE:
            c = nc - 1 - it
        else:
            c = it
        h0 = tl.load(st_ptr + st_offs + it * BD)
        off, msk = chunk_tile(c, L, H, W, COLMAJOR, TO, TI)
        valid = flat_mask(msk, COLMAJOR, CH)
        u = load_tile(x_ptr, x_row, off, msk, COLMAJOR, BD, CH)
        dr = load_tile(delta_ptr, dl_row, off, msk, COLMAJOR, BD, CH)
        dy = load_tile(dy_ptr, x_row, off, msk, COLMAJOR, BD, CH)
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
        hh = hh + aa * h0[:, None]
        if HAS_Z:
            zz = load_tile(z_ptr, x_row, off, msk, COLMAJOR, BD, CH)
            y = hh * Ct
            if HAS_D:
                y = y + Dv[:, None] * u
            sz = tl.sigmoid(zz)
            store_tile(
                dz_ptr, x_row, off, msk, dy * y * sz * (1.0 + zz * (1.0 - sz)), COLMAJOR, False, BD, TO, TI
            )
            dy = dy * zz * sz
        ones = tl.full((BD, CH), 1.0, dtype=tl.float32)
        _f, mm, vv = tl.associative_scan((a, ones, Ct * dy), 1, combine_adj, reverse=not REVERSE)
        g = vv + mm * p[:, None]
        p = tl.sum(tl.where(first_sel[None, :], a * g, 0.0), 1)
        ah = hh - bx  # a_t * h_{t-1}
        gdt = g * dt
        du = gdt * Bt
        ddt = g * (Bt * u + ah * A[:, None])
        acc_dA += gdt * ah
        if HAS_D:
            du = du + Dv[:, None] * dy
            acc_dD += dy * u
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(dr)
        ddt = tl.where(valid, ddt, 0.0)
        if HAS_BIAS:
            acc_db += ddt
        store_tile(dx_ptr, x_row, off, msk, du, COLMAJOR, ACCUM, BD, TO, TI)
        store_tile(ddelta_ptr, dl_row, off, msk, ddt, COLMAJOR, False, BD, TO, TI)
        atomic_add_rowsum(dB_ptr, bc_base, off, msk, gdt * u, COLMAJOR, TO, TI)
        atomic_add_rowsum(dC_ptr, bc_base, off, msk, hh * dy, COLMAJOR, TO, TI)
    tl.atomic_add(dA_ptr + prm, tl.sum(acc_dA, 1), sem="relaxed")
    if HAS_D:
        tl.atomic_add(dD_ptr + prm, tl.sum(acc_dD, 1), sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + prm, tl.sum(acc_db, 1), sem="relaxed")


@triton.jit
def _bwd_seq(
    x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr, dx_ptr, ddelta_ptr, dB_ptr, dC_ptr,
    dz_ptr, dA_ptr, dD_ptr, dbias_ptr, x_row, dl_row, bc_base, last_off, st_base, prm, A2, Dv, bias,
    L, H, W, N,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr, ACCUM: tl.constexpr, COLMAJOR: tl.constexpr, REVERSE: tl.constexpr,
    BD: tl.constexpr, NP: tl.constexpr, TO: tl.constexpr, TI: tl.constexpr,
):  # fmt: skip
    if NP == 1:
        _bwd_seq_n1(
            x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr, dx_ptr, ddelta_ptr, dB_ptr,
            dC_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, x_row, dl_row, bc_base, last_off, st_base, prm, A2,
            Dv, bias, L, H, W, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, HAS_DLAST, ACCUM, COLMAJOR, REVERSE, BD,
            TO, TI,
        )  # fmt: skip
    else:
        _bwd_seq_nd(
            x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr, dx_ptr, ddelta_ptr, dB_ptr,
            dC_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, x_row, dl_row, bc_base, last_off, st_base, prm, A2,
            Dv, bias, L, H, W, N, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, HAS_DLAST, ACCUM, COLMAJOR, REVERSE, BD,
            NP, TO, TI,
        )  # fmt: skip


@triton.jit
def scan_bwd_kernel(
    x_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    bias_ptr,
    z_ptr,
    dy_ptr,
    dlast_ptr,
    st_ptr,
    dx_ptr,
    ddelta_ptr,
    dA_ptr,
    dB_ptr,
    dC_ptr,
    dD_ptr,
    dbias_ptr,
    dz_ptr,
    Dm,
    K,
    G,
    N,
    L,
    H,
    W,
    n_dblocks,
    nc_max,
    HAS_D: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_Z: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr,
    ACCUM: tl.constexpr,
    SS2D: tl.constexpr,
    BD: tl.constexpr,
    NP: tl.constexpr,
    CH: tl.constexpr,
    TO_C: tl.constexpr,
    TI_C: tl.constexpr,
):
    """Same grid and layouts as ``scan_fwd_kernel``; dy has y's layout, gradients their input's layout.

    dx (fused SS2D with K > 1), dA, dB, dC, dD, dbias are fp32 accumulators zeroed by the caller;
    ``st_ptr`` is a ``(programs, nc_max, BD, NP)`` fp32 scratch for the chunk-entry states.
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
    st_base = pid.to(tl.int64) * nc_max * (BD * NP)
    if SS2D:
        if k == 0:
            _bwd_seq(
                x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr, dx_ptr, ddelta_ptr,
                dB_ptr, dC_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, x_row, dl_row, bc_base, last_off,
                st_base, prm, A2, Dv, bias, L, H, W, N, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, HAS_DLAST,
                ACCUM, False, False, BD, NP, 1, CH,
            )  # fmt: skip
        elif k == 1:
            _bwd_seq(
                x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr, dx_ptr, ddelta_ptr,
                dB_ptr, dC_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, x_row, dl_row, bc_base, last_off,
                st_base, prm, A2, Dv, bias, L, H, W, N, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, HAS_DLAST,
                ACCUM, True, False, BD, NP, TO_C, TI_C,
            )  # fmt: skip
        elif k == 2:
            _bwd_seq(
                x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr, dx_ptr, ddelta_ptr,
                dB_ptr, dC_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, x_row, dl_row, bc_base, last_off,
                st_base, prm, A2, Dv, bias, L, H, W, N, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, HAS_DLAST,
                ACCUM, False, True, BD, NP, 1, CH,
            )  # fmt: skip
        else:
            _bwd_seq(
                x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr, dx_ptr, ddelta_ptr,
                dB_ptr, dC_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, x_row, dl_row, bc_base, last_off,
                st_base, prm, A2, Dv, bias, L, H, W, N, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, HAS_DLAST,
                ACCUM, True, True, BD, NP, TO_C, TI_C,
            )  # fmt: skip
    else:
        _bwd_seq(
            x_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr, dx_ptr, ddelta_ptr,
            dB_ptr, dC_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, x_row, dl_row, bc_base, last_off,
            st_base, prm, A2, Dv, bias, L, H, W, N, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, HAS_DLAST,
            ACCUM, False, False, BD, NP, 1, CH,
        )  # fmt: skip
