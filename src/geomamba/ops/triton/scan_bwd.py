"""Triton backward kernel of the selective scan (plain and fused SS2D layouts).

It recomputes the forward's states chunk by chunk. The state entering each chunk comes either from the
forward (``HAS_ST``: the plain scan's forward wrote it, ``(batch, D, n_chunks - 1, N)`` fp32, see
``scan_fwd_kernel``) or from pass 1, which walks the sequence forward and writes only those states
(``R`` fp32 values per chunk: a scratch of ``N * 4 / CH`` bytes per element). Pass 2 walks the chunks
backwards: it rescans the chunk from its stored state, runs the adjoint
scan ``g_t = C_t dy_t + a_{t+1} g_{t+1}`` (see ``combine_adj``) and forms every gradient. Tiles are the
forward's ``(R = BD * NP, CH)`` state rows. dB/dC are summed over the program's BD channels, then either
added with one atomic per block and state (``DBC_ATOMIC``) or stored as this block's partial sum (the
launcher sums the partials: plain stores, no atomics); dA, dD and d(delta_bias) accumulate elementwise
in registers over the whole sequence and are reduced and added once per program. The fused SS2D merges
dx over the K directions like the forward merges y (atomics, or one program running the K directions
in turn: ``SEQ_K``).
"""

from __future__ import annotations

import triton
import triton.language as tl

from geomamba.ops.triton._common import (
    atomic_add_state_sum,
    channel_pick,
    channel_sum,
    chunk_count,
    chunk_tile,
    combine_adj,
    combine_fwd,
    delta_to_dt,
    emit_tile,
    flat_mask,
    load_tile,
    project_delta,
    state_rows,
    store_tile,
)


@triton.jit
def _entry_states(
    x_ptr, delta_ptr, B_ptr, st_ptr, x_rows_r, dl_rows, bc_rows, st_base, a2, bias, nmask, true_r,
    nc, Lm, H, W, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, COLMAJOR: tl.constexpr, T3: tl.constexpr,
    REVERSE: tl.constexpr, R: tl.constexpr, TO: tl.constexpr, TI: tl.constexpr, STAGES: tl.constexpr,
    L=0, dtw_ptr=None, dts_base=0, w_rows=0, DT_R: tl.constexpr = 0, DT_RP: tl.constexpr = 16,
    DT_DOT: tl.constexpr = False,
):  # fmt: skip
    """Pass 1 of the backward (when the forward stored no states): walk the sequence and write the state
    entering every chunk into the scratch ``st_ptr + st_base + it * R``."""
    CH: tl.constexpr = TO * TI
    rr = tl.arange(0, R)
    seq = tl.arange(0, CH)
    if REVERSE:
        last_sel = seq == 0
    else:
        last_sel = seq == CH - 1
    h = tl.zeros((R,), dtype=tl.float32)
    for it in tl.range(0, nc, num_stages=STAGES):
        if REVERSE:
            c = nc - 1 - it
        else:
            c = it
        tl.store(st_ptr + st_base + it * R + rr, h)
        off, msk = chunk_tile(c, Lm, H, W, COLMAJOR, T3, TO, TI)
        valid = flat_mask(msk, T3, CH)
        u = load_tile(x_ptr, x_rows_r, true_r, off, msk, T3, R, CH)
        if DT_R > 0:
            dr = project_delta(delta_ptr, dts_base, dtw_ptr, w_rows, off, msk, L, R, CH, DT_R, DT_RP, DT_DOT)
        else:
            dr = load_tile(delta_ptr, dl_rows, true_r, off, msk, T3, R, CH)
        Bt = load_tile(B_ptr, bc_rows, nmask, off, msk, T3, R, CH)
        dr, dt = delta_to_dt(dr, valid, bias, HAS_BIAS, SOFTPLUS)
        aa, hh = tl.associative_scan(
            (tl.exp2(dt * a2[:, None]), dt * u * Bt), 1, combine_fwd, reverse=REVERSE
        )
        hh = hh + aa * h[:, None]
        h = tl.sum(tl.where(last_sel[None, :], hh, 0.0), 1)


@triton.jit
def _bwd_seq(
    x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
    dx_ptr, dxacc_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
    x_base, dl_base, bc_base, dbc_base, prm0, last_base, st_base, L, Lv, H, W, N,
    TINY: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr, DX_MODE: tl.constexpr, DBC_ATOMIC: tl.constexpr, COLMAJOR: tl.constexpr,
    T3: tl.constexpr, REVERSE: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, TO: tl.constexpr,
    TI: tl.constexpr, STAGES: tl.constexpr, NSC, HAS_ST: tl.constexpr, dtw_ptr=None, dts_base=0,
    DT_R: tl.constexpr = 0, DT_RP: tl.constexpr = 16, DT_DOT: tl.constexpr = False,
):  # fmt: skip
    CH: tl.constexpr = TO * TI
    R: tl.constexpr = BD * NP
    rr = tl.arange(0, R)
    rd = rr // NP
    rn = rr % NP
    nmask = rn < N
    true_r = rr >= 0
    dd = tl.arange(0, BD)
    true_d = dd >= 0
    x_rows_r = x_base + rd.to(tl.int64) * L
    x_rows_d = x_base + dd.to(tl.int64) * L
    dl_rows = dl_base + rd.to(tl.int64) * L
    dl_rows_d = dl_base + dd.to(tl.int64) * L
    bc_rows = bc_base + rn.to(tl.int64) * L
    w_rows = (prm0 + rd) * DT_R  # dt_proj fused (DT_R > 0): row r's weights
    a2 = tl.load(A_ptr + (prm0 + rd) * N + rn, mask=nmask, other=0.0) * 1.4426950408889634
    A = a2 * 0.6931471805599453
    if HAS_BIAS:
        bias = tl.load(bias_ptr + prm0 + rd).to(tl.float32)
    else:
        bias = tl.zeros((R,), dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + prm0 + dd).to(tl.float32)
    seq = tl.arange(0, CH)
    if REVERSE:
        first_sel = seq == CH - 1
    else:
        first_sel = seq == 0
    nc = chunk_count(L, H, W, COLMAJOR, TO, TI)
    if TINY:
        Lm = Lv  # padded short sequence: L is the row stride, Lv the valid length
    else:
        Lm = L

    if HAS_ST:
        # chunk-entry states written by the forward: (batch, D, NSC, N), entry j enters chunk j + 1
        st_rows = st_base + (rd.to(tl.int64) * NSC) * N + rn
    else:
        # pass 1: the state entering every chunk
        _entry_states(
            x_ptr, delta_ptr, B_ptr, st_ptr, x_rows_r, dl_rows, bc_rows, st_base, a2, bias, nmask, true_r,
            nc, Lm, H, W, HAS_BIAS, SOFTPLUS, COLMAJOR, T3, REVERSE, R, TO, TI, STAGES,
            L, dtw_ptr, dts_base, w_rows, DT_R, DT_RP, DT_DOT,
        )  # fmt: skip
        tl.debug_barrier()

    # pass 2: chunks in reverse sequence order
    if HAS_DLAST:
        p = tl.load(dlast_ptr + last_base + rd * N + rn, mask=nmask, other=0.0).to(tl.float32)
    else:
        p = tl.zeros((R,), dtype=tl.float32)
    acc_dA = tl.zeros((R, CH), dtype=tl.float32)
    acc_dD = tl.zeros((BD, CH), dtype=tl.float32)
    acc_db = tl.zeros((BD, CH), dtype=tl.float32)
    for it2 in tl.range(0, nc, num_stages=STAGES):
        it = nc - 1 - it2
        if REVERSE:
            c = nc - 1 - it
        else:
            c = it
        if HAS_ST:
            h0 = tl.load(st_ptr + st_rows + (it - 1) * N, mask=nmask & (it > 0), other=0.0)
        else:
            h0 = tl.load(st_ptr + st_base + it * R + rr)
        off, msk = chunk_tile(c, Lm, H, W, COLMAJOR, T3, TO, TI)
        valid = flat_mask(msk, T3, CH)
        u = load_tile(x_ptr, x_rows_r, true_r, off, msk, T3, R, CH)
        if DT_R > 0:
            dr = project_delta(delta_ptr, dts_base, dtw_ptr, w_rows, off, msk, L, R, CH, DT_R, DT_RP, DT_DOT)
        else:
            dr = load_tile(delta_ptr, dl_rows, true_r, off, msk, T3, R, CH)
        Bt = load_tile(B_ptr, bc_rows, nmask, off, msk, T3, R, CH)
        Ct = load_tile(C_ptr, bc_rows, nmask, off, msk, T3, R, CH)
        dr, dt = delta_to_dt(dr, valid, bias, HAS_BIAS, SOFTPLUS)
        a = tl.exp2(dt * a2[:, None])
        bx = dt * u * Bt
        aa, hh = tl.associative_scan((a, bx), 1, combine_fwd, reverse=REVERSE)
        hh = hh + aa * h0[:, None]
        if HAS_Z:
            dout = load_tile(dy_ptr, x_rows_d, true_d, off, msk, T3, BD, CH)
            zz = load_tile(z_ptr, x_rows_d, true_d, off, msk, T3, BD, CH)
            y = channel_sum(hh * Ct, BD, NP, CH)
            if HAS_D:
                y = y + Dv[:, None] * channel_pick(u, BD, NP, CH)
            sz = tl.sigmoid(zz)
            dz = dout * y * sz * (1.0 + zz * (1.0 - sz))
            store_tile(dz_ptr, x_rows_d, true_d, off, msk, dz, T3, False, BD, TO, TI)
            dy_d = dout * zz * sz
            dy = state_rows(dy_d, BD, NP, CH)
        else:
            dy = load_tile(dy_ptr, x_rows_r, true_r, off, msk, T3, R, CH)
            dy_d = channel_pick(dy, BD, NP, CH)
        ones = tl.full((R, CH), 1.0, dtype=tl.float32)
        _f, mm, vv = tl.associative_scan((a, ones, Ct * dy), 1, combine_adj, reverse=not REVERSE)
        g = vv + mm * p[:, None]
        p = tl.sum(tl.where(first_sel[None, :], a * g, 0.0), 1)
        ah = hh - bx  # a_t * h_{t-1}
        gdt = g * dt
        acc_dA += gdt * ah
        du = channel_sum(gdt * Bt, BD, NP, CH)
        ddt = channel_sum(g * (Bt * u + ah * A[:, None]), BD, NP, CH)
        if HAS_D:
            u_d = channel_pick(u, BD, NP, CH)
            du = du + Dv[:, None] * dy_d
            acc_dD += dy_d * u_d
        if SOFTPLUS:
            # softplus'(x) = sigmoid(x) = exp(x - softplus(x)): one exp2, no division
            ddt = ddt * channel_pick(tl.exp2((dr - dt) * 1.4426950408889634), BD, NP, CH)
        ddt = tl.where(valid, ddt, 0.0)
        if HAS_BIAS:
            acc_db += ddt
        emit_tile(dx_ptr, dxacc_ptr, x_rows_d, true_d, off, msk, du, T3, DX_MODE, BD, TO, TI)
        store_tile(ddelta_ptr, dl_rows_d, true_d, off, msk, ddt, T3, False, BD, TO, TI)
        atomic_add_state_sum(dB_ptr, dbc_base, N, L, off, msk, gdt * u, T3, BD, NP, TO, TI, DBC_ATOMIC)
        atomic_add_state_sum(dC_ptr, dbc_base, N, L, off, msk, hh * dy, T3, BD, NP, TO, TI, DBC_ATOMIC)
    tl.atomic_add(dA_ptr + (prm0 + rd) * N + rn, tl.sum(acc_dA, 1), mask=nmask, sem="relaxed")
    if HAS_D:
        tl.atomic_add(dD_ptr + prm0 + dd, tl.sum(acc_dD, 1), sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + prm0 + dd, tl.sum(acc_db, 1), sem="relaxed")


@triton.jit
def _bwd_dir(
    x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
    dx_ptr, dxacc_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
    b, k, d0, g, st_base, Dm, K, G, N, L, Lv, H, W,
    TINY: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_DLAST: tl.constexpr, DX_MODE: tl.constexpr, DBC_ATOMIC: tl.constexpr,
    COLMAJOR: tl.constexpr, T3: tl.constexpr, REVERSE: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
    TO: tl.constexpr, TI: tl.constexpr, STAGES: tl.constexpr, NSC=0, HAS_ST: tl.constexpr = False,
    dtw_ptr=None, DT_R: tl.constexpr = 0, DT_RP: tl.constexpr = 16, DT_DOT: tl.constexpr = False,
):  # fmt: skip
    """Direction ``k`` (run-time index of the tensors) of batch ``b``, channels ``d0 .. d0 + BD - 1``.
    Partial dB/dC rows (``DBC_ATOMIC = False``): ``(batch, K*G, n_part, N, L)`` with
    ``n_part = Dm / G / BD``, this block's index ``(d0 mod Dm/G) / BD``. ``DT_R > 0``: delta_ptr holds
    dt_proj's input ``(batch, K, DT_R, L)`` (delta projected in the kernel; ddelta is written in full)."""
    gk = (b * K + k) * G + g
    x_base = (b * Dm + d0).to(tl.int64) * L
    dl_base = ((b * K + k) * Dm + d0).to(tl.int64) * L
    bc_base = gk.to(tl.int64) * N * L
    if DBC_ATOMIC:
        dbc_base = bc_base
    else:
        per_group = Dm // G
        n_part = per_group // BD
        dbc_base = (gk.to(tl.int64) * n_part + (d0 % per_group) // BD) * N * L
    last_base = ((b * K + k) * Dm + d0).to(tl.int64) * N
    _bwd_seq(
        x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
        dx_ptr, dxacc_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
        x_base, dl_base, bc_base, dbc_base, k * Dm + d0, last_base, st_base, L, Lv, H, W, N,
        TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, HAS_DLAST, DX_MODE, DBC_ATOMIC, COLMAJOR, T3, REVERSE,
        BD, NP, TO, TI, STAGES, NSC, HAS_ST, dtw_ptr, ((b * K + k) * DT_R).to(tl.int64) * L, DT_R, DT_RP, DT_DOT,
    )  # fmt: skip


@triton.jit(do_not_specialize=["Lv"])
def scan_bwd_kernel(
    x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
    dx_ptr, dxacc_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
    xT_ptr, deltaT_ptr, BT_ptr, CT_ptr, dyT_ptr, accT_ptr, ddeltaT_ptr, dBT_ptr, dCT_ptr,
    Dm, K, G, N, L, Lv, H, W, n_dblocks, nc_max,
    TINY: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_DLAST: tl.constexpr, SS2D: tl.constexpr, SEQ_K: tl.constexpr,
    KC: tl.constexpr, COL_T3: tl.constexpr, DBC_ATOMIC: tl.constexpr, COL_COPY: tl.constexpr,
    BD: tl.constexpr, NP: tl.constexpr, CH: tl.constexpr, TO_C: tl.constexpr, TI_C: tl.constexpr,
    STAGES: tl.constexpr, HAS_ST: tl.constexpr = False, dtw_ptr=None, DT_R: tl.constexpr = 0,
    DT_RP: tl.constexpr = 16, DT_DOT: tl.constexpr = False,
):  # fmt: skip
    """Same grids and layouts as ``scan_fwd_kernel``; dy has y's layout, gradients their input's layout.

    dA, dB, dC (atomic mode), dD, dbias and dxacc are fp32 accumulators zeroed by the caller; dx is
    written directly when one direction owns it (plain scan, K = 1, or the last direction of
    ``SEQ_K``), else accumulated into dxacc (the caller converts it). ``st_ptr`` is a
    ``(programs, nc_max, BD * NP)`` fp32 scratch for the chunk-entry states (reused by each direction).

    ``HAS_ST``: ``st_ptr`` holds the forward's chunk-entry states ``(batch, K, Dm, nc_max, N)`` (plain
    scan: K = 1; SS2D: ``COL_COPY`` only), and pass 1 is skipped.

    ``COL_COPY`` (SS2D, ``SEQ_K``, K = 2 or 4): the column-major directions read copies that the launcher
    transposed into column-major (sequence) order (``xT``, ``dyT`` ``(batch, Dm, W, H)``; ``deltaT``,
    ``BT``, ``CT`` with directions 1 and 3 in sequence order) and write ``ddeltaT``, ``dBT``, ``dCT`` in
    that order, so every direction is a flat, coalesced row scan (no strided column loads). dx is merged
    in fp32: rows into ``dxacc``, columns into ``accT`` (transposed); the launcher adds the two.

    ``DT_R > 0`` (``COL_COPY`` on the "lines" layout only): dt_proj fused as in ``scan_fwd_kernel``:
    ``delta_ptr`` / ``deltaT_ptr`` hold its input ``(batch, K, DT_R, L)``; ``ddelta`` is written in full.
    """
    pid = tl.program_id(0)
    if SEQ_K:
        k = 0
        rest = pid
    else:
        k = pid % K
        rest = pid // K
    db = rest % n_dblocks
    b = rest // n_dblocks
    d0 = db * BD
    g = d0 // (Dm // G)
    if HAS_ST:
        # the forward's states (batch, K, Dm, nc_max, N): nc_max = NSC entries per channel; direction k's
        # block at st_base + k * st_k
        st_base = ((b * K * Dm + d0).to(tl.int64) * nc_max) * N
        st_k = Dm * nc_max * N
    else:
        # pass 1's scratch, reused by each direction
        st_base = pid.to(tl.int64) * nc_max * (BD * NP)
        st_k = 0
    if not SS2D:
        _bwd_dir(
            x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
            dx_ptr, dxacc_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
            b, 0, d0, g, st_base, Dm, 1, G, N, L, Lv, H, W,
            TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, HAS_DLAST, 0, DBC_ATOMIC, False, False, False,
            BD, NP, 1, CH, STAGES, nc_max, HAS_ST,
        )  # fmt: skip
    elif SEQ_K and COL_COPY:
        _bwd_dir(
            x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
            dx_ptr, dxacc_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
            b, 0, d0, g, st_base + 0 * st_k, Dm, K, G, N, L, Lv, H, W,
            TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 2, DBC_ATOMIC, False, False, False,
            BD, NP, 1, CH, STAGES, nc_max, HAS_ST, dtw_ptr, DT_R, DT_RP, DT_DOT,
        )  # fmt: skip
        tl.debug_barrier()
        _bwd_dir(
            xT_ptr, deltaT_ptr, A_ptr, BT_ptr, CT_ptr, D_ptr, bias_ptr, z_ptr, dyT_ptr, dlast_ptr, st_ptr,
            dx_ptr, accT_ptr, ddeltaT_ptr, dA_ptr, dBT_ptr, dCT_ptr, dD_ptr, dbias_ptr, dz_ptr,
            b, 1, d0, g, st_base + 1 * st_k, Dm, K, G, N, L, Lv, W, H,
            TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 2, DBC_ATOMIC, False, False, False,
            BD, NP, 1, CH, STAGES, nc_max, HAS_ST, dtw_ptr, DT_R, DT_RP, DT_DOT,
        )  # fmt: skip
        if KC == 4:
            tl.debug_barrier()
            _bwd_dir(
                x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
                dx_ptr, dxacc_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
                b, 2, d0, g, st_base + 2 * st_k, Dm, K, G, N, L, Lv, H, W,
                TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 3, DBC_ATOMIC, False, False, True,
                BD, NP, 1, CH, STAGES, nc_max, HAS_ST, dtw_ptr, DT_R, DT_RP, DT_DOT,
            )  # fmt: skip
            tl.debug_barrier()
            _bwd_dir(
                xT_ptr, deltaT_ptr, A_ptr, BT_ptr, CT_ptr, D_ptr, bias_ptr, z_ptr, dyT_ptr, dlast_ptr, st_ptr,
                dx_ptr, accT_ptr, ddeltaT_ptr, dA_ptr, dBT_ptr, dCT_ptr, dD_ptr, dbias_ptr, dz_ptr,
                b, 3, d0, g, st_base + 3 * st_k, Dm, K, G, N, L, Lv, W, H,
                TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 3, DBC_ATOMIC, False, False, True,
                BD, NP, 1, CH, STAGES, nc_max, HAS_ST, dtw_ptr, DT_R, DT_RP, DT_DOT,
            )  # fmt: skip
    elif SEQ_K:
        if KC == 1:
            _bwd_dir(
                x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
                dx_ptr, dxacc_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
                b, 0, d0, g, st_base, Dm, K, G, N, L, Lv, H, W,
                TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 0, DBC_ATOMIC, False, False, False,
                BD, NP, 1, CH, STAGES,
            )  # fmt: skip
        else:
            _bwd_dir(
                x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
                dx_ptr, dxacc_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
                b, 0, d0, g, st_base, Dm, K, G, N, L, Lv, H, W,
                TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 2, DBC_ATOMIC, False, False, False,
                BD, NP, 1, CH, STAGES,
            )  # fmt: skip
            tl.debug_barrier()
            if KC == 2:
                _bwd_dir(
                    x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
                    dx_ptr, dxacc_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
                    b, 1, d0, g, st_base, Dm, K, G, N, L, Lv, H, W,
                    TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 4, DBC_ATOMIC, True, COL_T3, False,
                    BD, NP, TO_C, TI_C, STAGES,
                )  # fmt: skip
            else:
                _bwd_dir(
                    x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
                    dx_ptr, dxacc_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
                    b, 1, d0, g, st_base, Dm, K, G, N, L, Lv, H, W,
                    TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 3, DBC_ATOMIC, True, COL_T3, False,
                    BD, NP, TO_C, TI_C, STAGES,
                )  # fmt: skip
                tl.debug_barrier()
                _bwd_dir(
                    x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
                    dx_ptr, dxacc_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
                    b, 2, d0, g, st_base, Dm, K, G, N, L, Lv, H, W,
                    TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 3, DBC_ATOMIC, False, False, True,
                    BD, NP, 1, CH, STAGES,
                )  # fmt: skip
                tl.debug_barrier()
                _bwd_dir(
                    x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
                    dx_ptr, dxacc_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
                    b, 3, d0, g, st_base, Dm, K, G, N, L, Lv, H, W,
                    TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 4, DBC_ATOMIC, True, COL_T3, True,
                    BD, NP, TO_C, TI_C, STAGES,
                )  # fmt: skip
    else:
        # one direction per program; K > 1 merges dx by atomics into dxacc (KC = K is constexpr)
        if KC == 1:
            MODE: tl.constexpr = 0
        else:
            MODE: tl.constexpr = 1
        if k == 0:
            _bwd_dir(
                x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
                dx_ptr, dxacc_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
                b, k, d0, g, st_base, Dm, K, G, N, L, Lv, H, W,
                TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, MODE, DBC_ATOMIC, False, False, False,
                BD, NP, 1, CH, STAGES,
            )  # fmt: skip
        elif k == 1:
            _bwd_dir(
                x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
                dx_ptr, dxacc_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
                b, k, d0, g, st_base, Dm, K, G, N, L, Lv, H, W,
                TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, MODE, DBC_ATOMIC, True, COL_T3, False,
                BD, NP, TO_C, TI_C, STAGES,
            )  # fmt: skip
        elif k == 2:
            _bwd_dir(
                x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
                dx_ptr, dxacc_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
                b, k, d0, g, st_base, Dm, K, G, N, L, Lv, H, W,
                TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, MODE, DBC_ATOMIC, False, False, True,
                BD, NP, 1, CH, STAGES,
            )  # fmt: skip
        else:
            _bwd_dir(
                x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
                dx_ptr, dxacc_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
                b, k, d0, g, st_base, Dm, K, G, N, L, Lv, H, W,
                TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, MODE, DBC_ATOMIC, True, COL_T3, True,
                BD, NP, TO_C, TI_C, STAGES,
            )  # fmt: skip
