"""Triton forward kernel of the selective scan (plain and fused SS2D layouts).

One program owns ``BD`` channels (all in one group) of one sequence (batch b, direction k) and walks it
chunk by chunk. Its tiles are ``(R, CH)`` with ``R = BD * NP`` state rows (row r: channel r // NP, state
r % NP; for N = 1 a row is a channel), so every operation is two-dimensional: u/delta rows repeat over
the states and B/C rows over the channels (broadcast loads served by L1). Per chunk: ``a = exp(dt*A)``,
``b = dt*B*u``, ``tl.associative_scan`` along the chunk plus the carried state, ``y = sum_n C*h`` (a
reduction over the NP rows of a channel), D skip, SiLU(z) gate, then ``y`` is written (``emit_tile``).

Fused SS2D: the K directions of a block of channels merge in place, either by fp32 atomic adds from
K programs (``SEQ_K = False``) or by one program that runs the K directions in turn and accumulates
with plain loads and stores, the last direction writing the output in its dtype (``SEQ_K = True``).
"""

from __future__ import annotations

import triton
import triton.language as tl

from geomamba.ops.triton._common import (
    channel_pick,
    channel_sum,
    chunk_count,
    chunk_tile,
    combine_fwd,
    delta_to_dt,
    emit_tile,
    flat_mask,
    load_tile,
    project_delta,
)


@triton.jit
def _fwd_seq(
    x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, acc_ptr, last_ptr, st_ptr,
    x_base, dl_base, bc_base, prm0, last_base, st_base, L, Lv, H, W, N, NSC,
    TINY: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr,
    STORE_LAST: tl.constexpr, MODE: tl.constexpr, COLMAJOR: tl.constexpr, T3: tl.constexpr,
    REVERSE: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, TO: tl.constexpr, TI: tl.constexpr,
    STAGES: tl.constexpr, SC: tl.constexpr, ST_SUM: tl.constexpr = False, dtw_ptr=None, dts_base=0,
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
    bc_rows = bc_base + rn.to(tl.int64) * L
    w_rows = (prm0 + rd) * DT_R  # dt_proj fused (DT_R > 0): row r's weights
    a2 = tl.load(A_ptr + (prm0 + rd) * N + rn, mask=nmask, other=0.0) * 1.4426950408889634
    if HAS_BIAS:
        bias = tl.load(bias_ptr + prm0 + rd).to(tl.float32)
    else:
        bias = tl.zeros((R,), dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + prm0 + dd).to(tl.float32)
    seq = tl.arange(0, CH)
    if REVERSE:
        last_sel = seq == 0
    else:
        last_sel = seq == CH - 1
    nc = chunk_count(L, H, W, COLMAJOR, TO, TI)
    if TINY:
        Lm = Lv  # padded short sequence: L is the row stride, Lv the valid length
    else:
        Lm = L
    if SC > 0:
        # chunk-entry states for the backward (flat sequences: plain scan, SS2D "lines"): (.., NSC, N),
        # entry j = the state entering the backward's chunk iteration j + 1: in forward order the state
        # after position (j + 1) * SC - 1; reversed, after position (NSC - j) * SC (the scan runs from
        # the end). With SC dividing CH (forward order) the positions and entries inside a chunk are
        # loop-invariant: entry (c * CH / SC + sub) at the positions st_sel.
        st_rows = st_base + (rd.to(tl.int64) * NSC) * N + rn
        if ST_SUM and CH % SC == 0:
            # the CH / SC boundary states of a chunk picked by one masked sum over each SC segment
            NSUB: tl.constexpr = CH // SC
            ss = tl.arange(0, NSUB)
            if REVERSE:
                bsel = (seq % SC) == 0
            else:
                bsel = (seq % SC) == SC - 1
        elif CH % SC == 0 and not REVERSE:
            sub = (seq + 1) // SC - 1
            st_sel = ((seq + 1) % SC) == 0
            st_p = st_ptr + st_rows[:, None] + (sub * N)[None, :]
    h = tl.zeros((R,), dtype=tl.float32)
    for it in tl.range(0, nc, num_stages=STAGES):
        if REVERSE:
            c = nc - 1 - it
        else:
            c = it
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
        aa, hh = tl.associative_scan(
            (tl.exp2(dt * a2[:, None]), dt * u * Bt), 1, combine_fwd, reverse=REVERSE
        )
        hh = hh + aa * h[:, None]
        h = tl.sum(tl.where(last_sel[None, :], hh, 0.0), 1)
        if SC > 0:
            if ST_SUM and CH % SC == 0:
                v = tl.sum(tl.reshape(tl.where(bsel[None, :], hh, 0.0), (R, NSUB, SC)), 2)
                if REVERSE:
                    ent = NSC - c * NSUB - ss
                else:
                    ent = c * NSUB + ss
                ok = (ent >= 0) & (ent < NSC)
                tl.store(st_ptr + st_rows[:, None] + (ent * N)[None, :], v, mask=ok[None, :] & nmask[:, None])
            elif CH % SC == 0 and not REVERSE:
                e0 = c * (CH // SC)
                sel = st_sel & (e0 + sub < NSC)
                tl.store(st_p + e0 * N, hh, mask=sel[None, :] & nmask[:, None])
            elif REVERSE:
                t0 = c * CH + seq
                sel = ((t0 % SC) == 0) & (t0 > 0) & (t0 < Lm)
                tl.store(
                    st_ptr + st_rows[:, None] + ((NSC - t0 // SC) * N)[None, :],
                    hh,
                    mask=sel[None, :] & nmask[:, None],
                )
            else:
                t1 = c * CH + seq + 1
                sel = ((t1 % SC) == 0) & (t1 < Lm)
                tl.store(
                    st_ptr + st_rows[:, None] + ((t1 // SC - 1) * N)[None, :],
                    hh,
                    mask=sel[None, :] & nmask[:, None],
                )
        y = channel_sum(hh * Ct, BD, NP, CH)
        if HAS_D:
            y = y + Dv[:, None] * channel_pick(u, BD, NP, CH)
        if HAS_Z:
            zz = load_tile(z_ptr, x_rows_d, true_d, off, msk, T3, BD, CH)
            y = y * zz * tl.sigmoid(zz)
        emit_tile(y_ptr, acc_ptr, x_rows_d, true_d, off, msk, y, T3, MODE, BD, TO, TI)
    if STORE_LAST:
        tl.store(last_ptr + last_base + rd * N + rn, h, mask=nmask)


@triton.jit
def _fwd_dir(
    x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, acc_ptr, last_ptr,
    b, k, d0, g, Dm, K, G, N, L, Lv, H, W,
    TINY: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr,
    SOFTPLUS: tl.constexpr, STORE_LAST: tl.constexpr, MODE: tl.constexpr, COLMAJOR: tl.constexpr,
    T3: tl.constexpr, REVERSE: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, TO: tl.constexpr,
    TI: tl.constexpr, STAGES: tl.constexpr, st_ptr=None, NSC=0, SC: tl.constexpr = 0,
    ST_SUM: tl.constexpr = False, dtw_ptr=None, DT_R: tl.constexpr = 0, DT_RP: tl.constexpr = 16,
    DT_DOT: tl.constexpr = False,
):  # fmt: skip
    """Direction ``k`` (run-time index of the tensors) of batch ``b``, channels ``d0 .. d0 + BD - 1``.
    ``DT_R > 0``: delta_ptr holds dt_proj's input ``(batch, K, DT_R, L)`` and dtw_ptr its weight
    ``(K*Dm, DT_R)``: the kernel projects delta itself (``project_delta``)."""
    x_base = (b * Dm + d0).to(tl.int64) * L
    dl_base = ((b * K + k) * Dm + d0).to(tl.int64) * L
    bc_base = ((b * K + k) * G + g).to(tl.int64) * N * L
    last_base = ((b * K + k) * Dm + d0).to(tl.int64) * N
    st_base = (((b * K + k) * Dm + d0).to(tl.int64) * NSC) * N
    dts_base = ((b * K + k) * DT_R).to(tl.int64) * L
    _fwd_seq(
        x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, acc_ptr, last_ptr, st_ptr,
        x_base, dl_base, bc_base, k * Dm + d0, last_base, st_base, L, Lv, H, W, N, NSC,
        TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, STORE_LAST, MODE, COLMAJOR, T3, REVERSE, BD, NP, TO, TI, STAGES,
        SC, ST_SUM, dtw_ptr, dts_base, DT_R, DT_RP, DT_DOT,
    )  # fmt: skip


@triton.jit(do_not_specialize=["Lv"])
def scan_fwd_kernel(
    x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, acc_ptr, last_ptr, st_ptr,
    xT_ptr, accT_ptr, Dm, K, G, N, L, Lv, H, W, n_dblocks, NSC,
    TINY: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr,
    SOFTPLUS: tl.constexpr, STORE_LAST: tl.constexpr, SS2D: tl.constexpr, SEQ_K: tl.constexpr,
    KC: tl.constexpr, COL_T3: tl.constexpr, COL_COPY: tl.constexpr,
    BD: tl.constexpr, NP: tl.constexpr, CH: tl.constexpr, TO_C: tl.constexpr, TI_C: tl.constexpr,
    STAGES: tl.constexpr, SC: tl.constexpr = 0, ST_SUM: tl.constexpr = False, dtw_ptr=None,
    DT_R: tl.constexpr = 0, DT_RP: tl.constexpr = 16, DT_DOT: tl.constexpr = False,
):  # fmt: skip
    """Plain scan: ``K = 1``, grid ``batch * n_dblocks``; x/z/y ``(batch, Dm, L)``; delta
    ``(batch, Dm, L)``; B/C ``(batch, G, N, L)``.

    SS2D: x/y ``(batch, Dm, H, W)``; delta ``(batch, K, Dm, L)``; B/C ``(batch, K, N, L)`` (G = 1);
    A ``(K*Dm, N)``; D/bias ``(K*Dm,)``; direction k: 0 row, 1 column, 2 row reversed, 3 column reversed.
    ``SEQ_K = False``: grid ``batch * n_dblocks * K`` (k fastest), y merged by atomic adds into the fp32
    ``acc`` when K > 1 (else stored into y). ``SEQ_K = True``: grid ``batch * n_dblocks``, the program
    runs the ``KC`` (= K, constexpr) directions in turn through ``acc`` and the last one writes y.

    ``COL_COPY`` (SS2D, ``SEQ_K``, K = 2 or 4): delta/B/C in the ``"lines"`` layout (directions 1 and 3
    column-major) and ``xT`` ``(batch, Dm, W, H)`` (x transposed by the launcher), so every direction is a
    flat, coalesced row scan: the row directions accumulate into ``acc`` (image order, fp32), the column
    ones into ``accT`` (column-major, fp32), and the launcher writes ``y = acc + accT^T``.

    ``SC > 0`` (plain scan, or ``COL_COPY``): also write the state entering every ``SC``-position chunk of
    the backward into ``st_ptr`` ``(batch, K, Dm, NSC, N)`` fp32 (``NSC = cdiv(L, SC) - 1``; entry j: the
    state entering the backward's chunk iteration j + 1, in each direction's scan order), which then
    skips its recompute pass.

    ``DT_R > 0`` (``COL_COPY`` only): dt_proj fused: ``delta_ptr`` holds its input ``(batch, K, DT_R, L)``
    (the "lines" layout) and ``dtw_ptr`` its weight ``(K*Dm, DT_R)``; each tile of delta is computed in
    the kernel (``project_delta``), so delta ``(batch, K, Dm, L)`` is never written or read.
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
    if not SS2D:
        _fwd_dir(
            x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, acc_ptr, last_ptr,
            b, 0, d0, g, Dm, 1, G, N, L, Lv, H, W,
            TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, STORE_LAST, 0, False, False, False, BD, NP, 1, CH, STAGES,
            st_ptr, NSC, SC,
        )  # fmt: skip
    elif SEQ_K and COL_COPY:
        _fwd_dir(
            x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, acc_ptr, last_ptr,
            b, 0, d0, g, Dm, K, G, N, L, Lv, H, W,
            TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 2, False, False, False, BD, NP, 1, CH, STAGES,
            st_ptr, NSC, SC, ST_SUM, dtw_ptr, DT_R, DT_RP, DT_DOT,
        )  # fmt: skip
        _fwd_dir(
            xT_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, accT_ptr, last_ptr,
            b, 1, d0, g, Dm, K, G, N, L, Lv, W, H,
            TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 2, False, False, False, BD, NP, 1, CH, STAGES,
            st_ptr, NSC, SC, ST_SUM, dtw_ptr, DT_R, DT_RP, DT_DOT,
        )  # fmt: skip
        if KC == 4:
            tl.debug_barrier()
            _fwd_dir(
                x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, acc_ptr, last_ptr,
                b, 2, d0, g, Dm, K, G, N, L, Lv, H, W,
                TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 3, False, False, True, BD, NP, 1, CH, STAGES,
                st_ptr, NSC, SC, ST_SUM, dtw_ptr, DT_R, DT_RP, DT_DOT,
            )  # fmt: skip
            _fwd_dir(
                xT_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, accT_ptr, last_ptr,
                b, 3, d0, g, Dm, K, G, N, L, Lv, W, H,
                TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 3, False, False, True, BD, NP, 1, CH, STAGES,
                st_ptr, NSC, SC, ST_SUM, dtw_ptr, DT_R, DT_RP, DT_DOT,
            )  # fmt: skip
    elif SEQ_K:
        if KC == 1:
            _fwd_dir(
                x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, acc_ptr, last_ptr,
                b, 0, d0, g, Dm, K, G, N, L, Lv, H, W,
                TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 0, False, False, False, BD, NP, 1, CH, STAGES,
            )  # fmt: skip
        else:
            _fwd_dir(
                x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, acc_ptr, last_ptr,
                b, 0, d0, g, Dm, K, G, N, L, Lv, H, W,
                TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 2, False, False, False, BD, NP, 1, CH, STAGES,
            )  # fmt: skip
            tl.debug_barrier()
            if KC == 2:
                _fwd_dir(
                    x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, acc_ptr, last_ptr,
                    b, 1, d0, g, Dm, K, G, N, L, Lv, H, W,
                    TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 4, True, COL_T3, False, BD, NP, TO_C, TI_C, STAGES,
                )  # fmt: skip
            else:
                _fwd_dir(
                    x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, acc_ptr, last_ptr,
                    b, 1, d0, g, Dm, K, G, N, L, Lv, H, W,
                    TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 3, True, COL_T3, False, BD, NP, TO_C, TI_C, STAGES,
                )  # fmt: skip
                tl.debug_barrier()
                _fwd_dir(
                    x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, acc_ptr, last_ptr,
                    b, 2, d0, g, Dm, K, G, N, L, Lv, H, W,
                    TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 3, False, False, True, BD, NP, 1, CH, STAGES,
                )  # fmt: skip
                tl.debug_barrier()
                _fwd_dir(
                    x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, acc_ptr, last_ptr,
                    b, 3, d0, g, Dm, K, G, N, L, Lv, H, W,
                    TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, 4, True, COL_T3, True, BD, NP, TO_C, TI_C, STAGES,
                )  # fmt: skip
    else:
        # one direction per program; K > 1 merges by atomics into acc (KC = K is constexpr)
        if KC == 1:
            MODE: tl.constexpr = 0
        else:
            MODE: tl.constexpr = 1
        if k == 0:
            _fwd_dir(
                x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, acc_ptr, last_ptr,
                b, k, d0, g, Dm, K, G, N, L, Lv, H, W,
                TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, MODE, False, False, False, BD, NP, 1, CH, STAGES,
            )  # fmt: skip
        elif k == 1:
            _fwd_dir(
                x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, acc_ptr, last_ptr,
                b, k, d0, g, Dm, K, G, N, L, Lv, H, W,
                TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, MODE, True, COL_T3, False, BD, NP, TO_C, TI_C, STAGES,
            )  # fmt: skip
        elif k == 2:
            _fwd_dir(
                x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, acc_ptr, last_ptr,
                b, k, d0, g, Dm, K, G, N, L, Lv, H, W,
                TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, MODE, False, False, True, BD, NP, 1, CH, STAGES,
            )  # fmt: skip
        else:
            _fwd_dir(
                x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, acc_ptr, last_ptr,
                b, k, d0, g, Dm, K, G, N, L, Lv, H, W,
                TINY, HAS_D, HAS_BIAS, HAS_Z, SOFTPLUS, False, MODE, True, COL_T3, True, BD, NP, TO_C, TI_C, STAGES,
            )  # fmt: skip
