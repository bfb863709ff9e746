"""Triton backward of the plain selective scan for large state sizes: the sequential kernel (N = 16).

The layout of the sequential forward (``scan_fwd_n.scan_fwd_seq_kernel``): ``SG`` adjacent lanes share a
channel, each owning ``NS = NP / SG`` of its states; a chunk is ``CH`` positions (one 16-byte row of u)
split into per-position columns held in registers. Two passes per program:

1. forward over the chunks: the ``NS`` states entering every chunk go to the scratch ``st``
   (``(batch * D, n_chunks, NP)`` fp32, written and read by the same thread);
2. backward over the chunks: from the stored entry state the chunk's states ``h_t`` and decays
   ``a_t = exp2(dt_t A log2 e)`` are rebuilt position by position (kept in registers), then the adjoint
   ``G_t = C_t dy_t + a_{t+1} G_{t+1}`` runs backwards over the chunk and forms every gradient:
   ``dC_t = dy_t h_t``, ``dB_t = G_t dt_t u_t`` (summed over the program's channels, one fp32 atomic per
   state and position), ``du_t = sum_n G_t dt_t B_t + D dy_t``,
   ``ddt_t = sum_n G_t (A a_t h_{t-1} + u_t B_t)`` (the lanes' sums by shuffles), ``dA = sum_t G_t dt_t
   a_t h_{t-1}`` (registers, one atomic at the end).

With the gate, y (needed for dz) is the lanes' sum of ``C_t h_t`` plus ``D u``. Padded positions (past
the valid length) have ``dt = 0``: ``a = 1``, nothing added, so the carried adjoint passes through them.
Shapes as ``scan_fwd_n.py``; gradients in the launcher's fp32 buffers (du, ddelta, dz in the inputs'
dtype). Grid ``batch * D / BD``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from geomamba.ops.triton._common import channel_sum, delta_to_dt, state_rows
from geomamba.ops.triton.scan_fwd_n import _cols, _rows, bc_cols, lane_rows, seq_chunk_rows


@triton.jit(do_not_specialize=["Lv"])
def scan_bwd_seq_kernel(
    x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dy_ptr, dlast_ptr, st_ptr,
    du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
    Dm, G, N, L, Lv, n_dblocks,
    TINY: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_DLAST: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, CH: tl.constexpr,
    SG: tl.constexpr, EVEN: tl.constexpr = False, PACK_BC: tl.constexpr = False, PREFETCH: tl.constexpr = False,
):  # fmt: skip
    """``EVEN``, ``PACK_BC``: as the forward's (``scan_fwd_seq_kernel``); ``PREFETCH``: pass 1 loads each
    next chunk's rows while the current one computes."""
    NS: tl.constexpr = NP // SG
    R: tl.constexpr = BD * SG
    b, d0, g, rr, ch, s0, rows, bc_rows = lane_rows(Dm, G, N, L, n_dblocks, BD, SG, NS)
    dd = tl.arange(0, BD)
    seq = tl.arange(0, CH)
    rows_d = (b * Dm + d0 + dd).to(tl.int64) * L
    if TINY:
        Lm = Lv
    else:
        Lm = L
    nc = tl.cdiv(Lm, CH)
    st_rows = (b * Dm + d0 + ch).to(tl.int64) * nc * NP + s0
    bias = tl.load(bias_ptr + d0 + ch).to(tl.float32) if HAS_BIAS else tl.zeros((R,), dtype=tl.float32)
    if HAS_BIAS:
        bias_d = tl.load(bias_ptr + d0 + dd).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + d0 + dd).to(tl.float32)
    a2 = ()
    an = ()
    hs = ()
    ps = ()
    for k in tl.static_range(NS):
        ak = tl.load(A_ptr + (d0 + ch) * N + s0 + k, mask=s0 + k < N, other=0.0)
        an = an + (ak,)  # noqa: RUF005 (the Triton frontend builds tuples by concatenation)
        a2 = a2 + (ak * 1.4426950408889634,)  # noqa: RUF005
        hs = hs + (tl.zeros((R,), dtype=tl.float32),)  # noqa: RUF005
        if HAS_DLAST:
            pk = tl.load(dlast_ptr + (b * Dm + d0 + ch) * N + s0 + k, mask=s0 + k < N, other=0.0)
            ps = ps + (pk.to(tl.float32),)  # noqa: RUF005
        else:
            ps = ps + (tl.zeros((R,), dtype=tl.float32),)  # noqa: RUF005

    # pass 1: the states entering every chunk
    if PREFETCH:
        nxt = seq_chunk_rows(
            x_ptr, delta_ptr, B_ptr, C_ptr, rows, bc_rows, rr, s0, 0, Lm, N, L, NS, CH, EVEN, PACK_BC, False
        )
    for c in range(0, nc):
        t = c * CH + seq
        valid = (t < Lm)[None, :] & (rr >= 0)[:, None]
        if PREFETCH:
            cur = nxt
            nxt = seq_chunk_rows(
                x_ptr, delta_ptr, B_ptr, C_ptr, rows, bc_rows, rr, s0, tl.minimum(c + 1, nc - 1) * CH, Lm, N, L,
                NS, CH, EVEN, PACK_BC, False,
            )  # fmt: skip
        else:
            cur = seq_chunk_rows(
                x_ptr, delta_ptr, B_ptr, C_ptr, rows, bc_rows, rr, s0, c * CH, Lm, N, L, NS, CH, EVEN, PACK_BC,
                False,
            )  # fmt: skip
        ur, dr, bts, _cts = cur
        u = ur.to(tl.float32)
        _dr, dt = delta_to_dt(dr.to(tl.float32), valid, bias, HAS_BIAS, SOFTPLUS, not EVEN)
        dts = _cols(dt, R, CH)
        dtus = _cols(dt * u, R, CH)
        new_hs = ()
        for k in tl.static_range(NS):
            tl.store(st_ptr + st_rows + c * NP + k, hs[k])
            bs = bc_cols(bts[k], R, CH, PACK_BC)
            h = hs[k]
            for j in tl.static_range(CH):
                h = tl.exp2(dts[j] * a2[k]) * h + dtus[j] * bs[j]
            new_hs = new_hs + (h,)  # noqa: RUF005
        hs = new_hs

    # pass 2: chunks in reverse order
    acc_dA = ()
    for _k in tl.static_range(NS):
        acc_dA = acc_dA + (tl.zeros((R,), dtype=tl.float32),)  # noqa: RUF005
    acc_dD = tl.zeros((BD, CH), dtype=tl.float32)
    acc_db = tl.zeros((BD, CH), dtype=tl.float32)
    for c2 in range(0, nc):
        c = nc - 1 - c2
        t = c * CH + seq
        tv = t < Lm
        valid = tv[None, :] & (rr >= 0)[:, None]
        valid_d = tv[None, :] & (dd >= 0)[:, None]
        off_d = rows_d[:, None] + t[None, :]
        ur, dr, bts, cts = seq_chunk_rows(
            x_ptr, delta_ptr, B_ptr, C_ptr, rows, bc_rows, rr, s0, c * CH, Lm, N, L, NS, CH, EVEN, PACK_BC
        )
        u = ur.to(tl.float32)
        _dr, dt = delta_to_dt(dr.to(tl.float32), valid, bias, HAS_BIAS, SOFTPLUS, not EVEN)
        dout = tl.load(dy_ptr + off_d, mask=valid_d, other=0.0).to(tl.float32)
        us = _cols(u, R, CH)
        dts = _cols(dt, R, CH)
        dtus = _cols(dt * u, R, CH)
        # the chunk's decays and states, from its entry state
        es = ()
        hh = ()
        bss = ()
        css = ()
        ypart = ()
        for _j in tl.static_range(CH):
            ypart = ypart + (tl.zeros((R,), dtype=tl.float32),)  # noqa: RUF005
        for k in tl.static_range(NS):
            bs = bc_cols(bts[k], R, CH, PACK_BC)
            cs = bc_cols(cts[k], R, CH, PACK_BC)
            h = tl.load(st_ptr + st_rows + c * NP + k)
            ek = ()
            hk = (h,)  # hk[j] = h_{j-1}; hk[0] = the entry state
            ny = ()
            for j in tl.static_range(CH):
                e = tl.exp2(dts[j] * a2[k])
                h = e * h + dtus[j] * bs[j]
                ek = ek + (e,)  # noqa: RUF005
                hk = hk + (h,)  # noqa: RUF005
                ny = ny + (ypart[j] + cs[j] * h,)  # noqa: RUF005
            ypart = ny
            es = es + (ek,)  # noqa: RUF005
            hh = hh + (hk,)  # noqa: RUF005
            bss = bss + (bs,)  # noqa: RUF005
            css = css + (cs,)  # noqa: RUF005
        if HAS_Z:
            zz = tl.load(z_ptr + off_d, mask=valid_d, other=0.0).to(tl.float32)
            y = channel_sum(_rows(ypart, R, CH), BD, SG, CH)
            if HAS_D:
                u_d = tl.load(x_ptr + off_d, mask=valid_d, other=0.0).to(tl.float32)
                y = y + Dv[:, None] * u_d
            sz = tl.sigmoid(zz)
            dz = dout * y * sz * (1.0 + zz * (1.0 - sz))
            tl.store(dz_ptr + off_d, dz.to(dz_ptr.dtype.element_ty), mask=valid_d)
            dout = dout * zz * sz
        dys = _cols(state_rows(dout, BD, SG, CH), R, CH)
        # the adjoint, backwards over the chunk
        ddt = ()
        dus = ()
        for _j in tl.static_range(CH):
            ddt = ddt + (tl.zeros((R,), dtype=tl.float32),)  # noqa: RUF005
            dus = dus + (tl.zeros((R,), dtype=tl.float32),)  # noqa: RUF005
        new_ps = ()
        new_dA = ()
        for k in tl.static_range(NS):
            p = ps[k]
            dak = acc_dA[k]
            dbk = ()
            dck = ()
            nddt = ()
            ndus = ()
            for j in tl.static_range(CH - 1, -1, -1):
                gk = css[k][j] * dys[j] + p
                p = es[k][j] * gk
                ah = es[k][j] * hh[k][j]  # a_t h_{t-1}
                gdt = gk * dts[j]
                dak = dak + gdt * ah
                nddt = (ddt[j] + gk * (an[k] * ah + us[j] * bss[k][j]),) + nddt  # noqa: RUF005
                ndus = (dus[j] + gdt * bss[k][j],) + ndus  # noqa: RUF005
                dbk = (gdt * us[j],) + dbk  # noqa: RUF005
                dck = (dys[j] * hh[k][j + 1],) + dck  # noqa: RUF005
            ddt = nddt
            dus = ndus
            new_ps = new_ps + (p,)  # noqa: RUF005
            new_dA = new_dA + (dak,)  # noqa: RUF005
            dbt = tl.sum(tl.reshape(_rows(dbk, R, CH), (BD, SG, CH)), 0)
            dct = tl.sum(tl.reshape(_rows(dck, R, CH), (BD, SG, CH)), 0)
            sg_s0 = tl.arange(0, SG) * NS
            o2 = (b * G + g).to(tl.int64) * N * L + (sg_s0 + k).to(tl.int64)[:, None] * L + t[None, :]
            m2 = tv[None, :] & (sg_s0 + k < N)[:, None]
            tl.atomic_add(dB_ptr + o2, dbt, mask=m2, sem="relaxed")
            tl.atomic_add(dC_ptr + o2, dct, mask=m2, sem="relaxed")
        ps = new_ps
        acc_dA = new_dA
        du = channel_sum(_rows(dus, R, CH), BD, SG, CH)
        dtt = channel_sum(_rows(ddt, R, CH), BD, SG, CH)
        if HAS_D:
            if not HAS_Z:  # (with the gate, u_d was loaded for y above)
                u_d = tl.load(x_ptr + off_d, mask=valid_d, other=0.0).to(tl.float32)
            du = du + Dv[:, None] * dout
            acc_dD += dout * u_d
        if SOFTPLUS:
            dr_d = tl.load(delta_ptr + off_d, mask=valid_d, other=0.0).to(tl.float32)
            if HAS_BIAS:
                dr_d = dr_d + bias_d[:, None]
            # softplus'(x) = sigmoid(x)
            dtt = dtt * tl.sigmoid(dr_d)
        dtt = tl.where(valid_d, dtt, 0.0)
        if HAS_BIAS:
            acc_db += dtt
        tl.store(du_ptr + off_d, du.to(du_ptr.dtype.element_ty), mask=valid_d)
        tl.store(ddelta_ptr + off_d, dtt.to(ddelta_ptr.dtype.element_ty), mask=valid_d)
    for k in tl.static_range(NS):
        tl.atomic_add(dA_ptr + (d0 + ch) * N + s0 + k, acc_dA[k], mask=s0 + k < N, sem="relaxed")
    if HAS_D:
        tl.atomic_add(dD_ptr + d0 + dd, tl.sum(acc_dD, 1), sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + d0 + dd, tl.sum(acc_db, 1), sem="relaxed")
