"""Triton forward kernel of the plain selective scan for larger state sizes (the N = 16 path).

The general kernel (``scan_fwd.py``) makes every (channel, state) pair a tile row, so it recomputes
softplus(delta) and reloads u and delta once per state, and sums y over a channel's state rows through
a layout conversion. Here a program owns ``BD`` channels of one sequence and tiles are ``(BD, CH)``
(channels x positions): per chunk, u and delta are loaded and ``dt = softplus(delta + bias)``,
``dt * u`` formed once; then a loop unrolled over the ``NP`` states (``tl.static_range``) scans each
state along the chunk (``tl.associative_scan`` on ``(exp2(dt * A_n log2 e), dt * u * B_n)``, B_n and
C_n broadcast rows of the group), adds the carried state ``h_n`` and accumulates ``y += C_n * h``.
The ``NP`` carried states are a tuple of ``(BD,)`` tensors (one per state), so no state is ever
selected out of a tensor. Per element and state this is about one exp2 and ten other instructions.

Shapes: u, delta, z, y ``(batch, Dm, L)``; A ``(Dm, N)`` fp32; B, C ``(batch, G, N, L)``; D, bias
``(Dm,)``; last ``(batch, Dm, N)`` fp32. Grid ``batch * Dm / BD`` (a block never straddles two groups).
"""

from __future__ import annotations

import triton
import triton.language as tl

from geomamba.ops.triton._common import channel_sum, combine_fwd, delta_to_dt


@triton.jit
def chunk_u_dt(x_ptr, delta_ptr, off, valid, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
               EVEN: tl.constexpr):  # fmt: skip
    """A chunk's u and ``dt = softplus(delta + bias)`` as fp32 tiles at offsets ``off`` (dt = 0 where
    ``valid`` is False: the identity step of the recurrence); ``EVEN``: every position valid (no masks)."""
    if EVEN:
        u = tl.load(x_ptr + off).to(tl.float32)
        dr = tl.load(delta_ptr + off).to(tl.float32)
    else:
        u = tl.load(x_ptr + off, mask=valid, other=0.0).to(tl.float32)
        dr = tl.load(delta_ptr + off, mask=valid, other=0.0).to(tl.float32)
    _dr, dt = delta_to_dt(dr, valid, bias, HAS_BIAS, SOFTPLUS, not EVEN)
    return u, dt


@triton.jit(do_not_specialize=["Lv"])
def scan_fwd_n_kernel(
    x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, last_ptr,
    Dm, G, N, L, Lv, n_dblocks,
    TINY: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr,
    SOFTPLUS: tl.constexpr, STORE_LAST: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
    CH: tl.constexpr, STAGES: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    db = pid % n_dblocks
    b = pid // n_dblocks
    d0 = db * BD
    g = d0 // (Dm // G)
    dd = tl.arange(0, BD)
    seq = tl.arange(0, CH)
    rows = (b * Dm + d0 + dd).to(tl.int64) * L
    bc_base = (b * G + g).to(tl.int64) * N * L
    bias = tl.load(bias_ptr + d0 + dd).to(tl.float32) if HAS_BIAS else tl.zeros((BD,), dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + d0 + dd).to(tl.float32)
    if TINY:
        Lm = Lv  # padded short sequence: L is the row stride, Lv the valid length
    else:
        Lm = L
    last_sel = seq == CH - 1
    a2 = ()
    hs = ()
    for n in tl.static_range(NP):
        an = tl.load(A_ptr + (d0 + dd) * N + n, mask=(dd >= 0) & (n < N), other=0.0)
        a2 = a2 + (an * 1.4426950408889634,)  # noqa: RUF005 (the Triton frontend builds tuples by concatenation)
        hs = hs + (tl.zeros((BD,), dtype=tl.float32),)  # noqa: RUF005 (the Triton frontend builds tuples by concatenation)
    nc = tl.cdiv(Lm, CH)
    for c in tl.range(0, nc, num_stages=STAGES):
        t = c * CH + seq
        valid = t < Lm
        off = rows[:, None] + t[None, :]
        u, dt = chunk_u_dt(x_ptr, delta_ptr, off, valid[None, :], bias, HAS_BIAS, SOFTPLUS, False)
        dtu = dt * u
        if HAS_D:
            y = Dv[:, None] * u
        else:
            y = tl.zeros((BD, CH), dtype=tl.float32)
        new_hs = ()
        for n in tl.static_range(NP):
            bcm = valid & (n < N)
            Bn = tl.load(B_ptr + bc_base + n * L + t, mask=bcm, other=0.0).to(tl.float32)
            Cn = tl.load(C_ptr + bc_base + n * L + t, mask=bcm, other=0.0).to(tl.float32)
            aa, hh = tl.associative_scan((tl.exp2(dt * a2[n][:, None]), dtu * Bn[None, :]), 1, combine_fwd)
            hh = hh + aa * hs[n][:, None]
            y += Cn[None, :] * hh
            new_hs = new_hs + (tl.sum(tl.where(last_sel[None, :], hh, 0.0), 1),)  # noqa: RUF005 (the Triton frontend builds tuples by concatenation)
        hs = new_hs
        if HAS_Z:
            zz = tl.load(z_ptr + off, mask=valid[None, :], other=0.0).to(tl.float32)
            y = y * zz * tl.sigmoid(zz)
        tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=valid[None, :])
    if STORE_LAST:
        for n in tl.static_range(NP):
            tl.store(last_ptr + (b * Dm + d0 + dd) * N + n, hs[n], mask=(dd >= 0) & (n < N))


@triton.jit
def _cols(x, BD: tl.constexpr, CH: tl.constexpr):
    """``(BD, CH)`` -> tuple of its CH columns ``(BD,)`` in order (CH = 4 or 8; free when a thread holds
    a whole row, as the loads of a 16-byte row do)."""
    if CH == 8:
        e, o = tl.split(tl.reshape(x, (BD, 4, 2)))
        ee, eo = tl.split(tl.reshape(e, (BD, 2, 2)))
        oe, oo = tl.split(tl.reshape(o, (BD, 2, 2)))
        c0, c4 = tl.split(ee)
        c2, c6 = tl.split(eo)
        c1, c5 = tl.split(oe)
        c3, c7 = tl.split(oo)
        r = (c0, c1, c2, c3, c4, c5, c6, c7)
    else:
        e, o = tl.split(tl.reshape(x, (BD, 2, 2)))
        c0, c2 = tl.split(e)
        c1, c3 = tl.split(o)
        r = (c0, c1, c2, c3)
    return r


@triton.jit
def _bf16_pair_cols(w, BD: tl.constexpr, CH: tl.constexpr):
    """``(BD, CH // 2)`` int32 words, each two packed bf16 (the earlier position in the low half) -> tuple
    of the CH fp32 columns in order: one shift or mask per value (a bf16 is the top half of its fp32)."""
    ws = _cols(w, BD, CH // 2)
    r = ()
    for j in tl.static_range(CH // 2):
        lo = (ws[j] << 16).to(tl.float32, bitcast=True)
        hi = (ws[j] & -65536).to(tl.float32, bitcast=True)
        r = r + (lo, hi)  # noqa: RUF005 (the Triton frontend builds tuples by concatenation)
    return r


@triton.jit
def _rows(c, BD: tl.constexpr, CH: tl.constexpr):
    """Inverse of ``_cols``: tuple of CH ``(BD,)`` columns -> ``(BD, CH)``."""
    if CH == 8:
        e = tl.reshape(tl.join(tl.join(c[0], c[4]), tl.join(c[2], c[6])), (BD, 4))
        o = tl.reshape(tl.join(tl.join(c[1], c[5]), tl.join(c[3], c[7])), (BD, 4))
    else:
        e = tl.join(c[0], c[2])
        o = tl.join(c[1], c[3])
    return tl.reshape(tl.join(e, o), (BD, CH))


@triton.jit
def lane_rows(Dm, G, N, L, n_dblocks, BD: tl.constexpr, SG: tl.constexpr, NS: tl.constexpr):
    """The sequential kernels' layout: this program's sequence ``b``, first channel ``d0``, group ``g``;
    per lane row ``rr`` (``BD * SG`` of them) its channel ``ch`` in the block, its first state ``s0``, the
    row offset of its channel in u-like tensors and of its first state's row in B/C."""
    pid = tl.program_id(0)
    b = pid // n_dblocks
    d0 = (pid % n_dblocks) * BD
    g = d0 // (Dm // G)
    rr = tl.arange(0, BD * SG)
    ch = rr // SG
    s0 = (rr % SG) * NS
    rows = (b * Dm + d0 + ch).to(tl.int64) * L
    bc_rows = (b * G + g).to(tl.int64) * N * L + s0.to(tl.int64) * L
    return b, d0, g, rr, ch, s0, rows, bc_rows


@triton.jit
def seq_chunk_rows(x_ptr, delta_ptr, B_ptr, C_ptr, rows, bc_rows, rr, s0, t0, Lm, N, L, NS: tl.constexpr,
                   CH: tl.constexpr, EVEN: tl.constexpr, PACK_BC: tl.constexpr = False,
                   WITH_C: tl.constexpr = True):  # fmt: skip
    """The sequential kernels' raw rows of the chunk at positions ``t0 + [0, CH)`` (input dtype, zeros past
    ``Lm`` or N): u and delta ``(rows, CH)`` and tuples of the ``NS`` B and C rows of each lane's states;
    ``PACK_BC`` (bf16 B/C, ``EVEN``): those rows as ``(rows, CH // 2)`` int32 words (``_bf16_pair_cols``);
    ``WITH_C`` False: C is not read (an empty tuple)."""
    t = t0 + tl.arange(0, CH)
    valid = (t < Lm)[None, :] & (rr >= 0)[:, None]
    off = rows[:, None] + t[None, :]
    if EVEN:
        ur = tl.load(x_ptr + off)
        dr = tl.load(delta_ptr + off)
    else:
        ur = tl.load(x_ptr + off, mask=valid, other=0.0)
        dr = tl.load(delta_ptr + off, mask=valid, other=0.0)
    bw = B_ptr.to(tl.pointer_type(tl.int32))
    cw = C_ptr.to(tl.pointer_type(tl.int32))
    w_off = (bc_rows // 2)[:, None] + (t0 // 2 + tl.arange(0, CH // 2))[None, :]  # words (PACK_BC only)
    bc_off = bc_rows[:, None] + t[None, :]
    bts = ()
    cts = ()
    for k in tl.static_range(NS):
        bt = _bc_row(B_ptr, bw, bc_off, w_off, valid, s0, k, N, L, EVEN, PACK_BC)
        bts = bts + (bt,)  # noqa: RUF005 (the Triton frontend builds tuples by concatenation)
        if WITH_C:
            ct = _bc_row(C_ptr, cw, bc_off, w_off, valid, s0, k, N, L, EVEN, PACK_BC)
            cts = cts + (ct,)  # noqa: RUF005 (the Triton frontend builds tuples by concatenation)
    return ur, dr, bts, cts


@triton.jit
def _bc_row(ptr, wptr, off, w_off, valid, s0, k: tl.constexpr, N, L, EVEN: tl.constexpr, PACK: tl.constexpr):
    """State ``s0 + k``'s B or C row of a chunk (see ``seq_chunk_rows``)."""
    if PACK:
        r = tl.load(wptr + w_off + k * (L // 2))
    elif EVEN:
        r = tl.load(ptr + off + k * L)
    else:
        r = tl.load(ptr + off + k * L, mask=valid & (s0 + k < N)[:, None], other=0.0)
    return r


@triton.jit
def bc_cols(raw, R: tl.constexpr, CH: tl.constexpr, PACK: tl.constexpr):
    """A raw B/C row of ``seq_chunk_rows`` -> tuple of its CH fp32 columns."""
    if PACK:
        r = _bf16_pair_cols(raw, R, CH)
    else:
        r = _cols(raw.to(tl.float32), R, CH)
    return r


@triton.jit(do_not_specialize=["Lv"])
def scan_fwd_seq_kernel(
    x_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, last_ptr,
    Dm, G, N, L, Lv, n_dblocks,
    TINY: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr,
    SOFTPLUS: tl.constexpr, STORE_LAST: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
    CH: tl.constexpr, STAGES: tl.constexpr, EVEN: tl.constexpr = False, SG: tl.constexpr = 1,
    PREFETCH: tl.constexpr = False, PACK_BC: tl.constexpr = False,
):  # fmt: skip
    """Sequential variant: a thread owns one channel and ``NP / SG`` of its states (``SG`` threads, adjacent
    lanes, share a channel); per chunk of ``CH`` positions (one 16-byte load per row: 8 bf16/fp16 or 4
    fp32) the recurrence runs position by position in registers for each of its states,
    ``h_n = exp2(dt * A_n log2 e) * h_n + dt * u * B_n``, ``y += C_n * h_n`` (5 instructions per element
    and state, one of them exp2), and the ``SG`` partial outputs of a channel are summed across lanes.
    The gate is linear in y, so each partial is gated before the sum (and the D skip is added by the
    thread of state group 0). Same arguments and grid as ``scan_fwd_n_kernel`` (``BD`` channels per
    program); ``EVEN``: L is a multiple of CH and N a power of two (no masks); ``PREFETCH``: the next
    chunk's rows are loaded (into registers) before this chunk is computed, so their latency is hidden
    behind a chunk's arithmetic instead of stalling the warp; ``PACK_BC`` (bf16 B and C, ``EVEN``): their
    rows are loaded as int32 words and split into fp32 by one shift or mask per value."""
    NS: tl.constexpr = NP // SG
    b, d0, _g, rr, ch, s0, rows, bc_rows = lane_rows(Dm, G, N, L, n_dblocks, BD, SG, NS)
    seq = tl.arange(0, CH)
    bias = tl.load(bias_ptr + d0 + ch).to(tl.float32) if HAS_BIAS else tl.zeros((BD * SG,), dtype=tl.float32)
    if HAS_D:
        Dv = tl.where(s0 == 0, tl.load(D_ptr + d0 + ch).to(tl.float32), 0.0)
    if TINY:
        Lm = Lv  # padded short sequence: L is the row stride, Lv the valid length
    else:
        Lm = L
    a2 = ()
    hs = ()
    for k in tl.static_range(NS):
        an = tl.load(A_ptr + (d0 + ch) * N + s0 + k, mask=s0 + k < N, other=0.0)
        a2 = a2 + (an * 1.4426950408889634,)  # noqa: RUF005 (the Triton frontend builds tuples by concatenation)
        hs = hs + (tl.zeros((BD * SG,), dtype=tl.float32),)  # noqa: RUF005 (the Triton frontend builds tuples by concatenation)
    nc = tl.cdiv(Lm, CH)
    if PREFETCH:
        nxt = seq_chunk_rows(
            x_ptr, delta_ptr, B_ptr, C_ptr, rows, bc_rows, rr, s0, 0, Lm, N, L, NS, CH, EVEN, PACK_BC
        )
    for c in tl.range(0, nc, num_stages=STAGES):
        t = c * CH + seq
        valid = (t < Lm)[None, :] & (rr >= 0)[:, None]
        off = rows[:, None] + t[None, :]
        if PREFETCH:
            cur = nxt
            t_next = tl.minimum(c + 1, nc - 1) * CH  # the last chunk reloads itself (in bounds)
            nxt = seq_chunk_rows(
                x_ptr, delta_ptr, B_ptr, C_ptr, rows, bc_rows, rr, s0, t_next, Lm, N, L, NS, CH, EVEN, PACK_BC
            )
        else:
            cur = seq_chunk_rows(
                x_ptr, delta_ptr, B_ptr, C_ptr, rows, bc_rows, rr, s0, c * CH, Lm, N, L, NS, CH, EVEN, PACK_BC
            )
        ur, dr, bts, cts = cur
        u = ur.to(tl.float32)
        _dr, dt = delta_to_dt(dr.to(tl.float32), valid, bias, HAS_BIAS, SOFTPLUS, not EVEN)
        if HAS_D:
            y = Dv[:, None] * u
        else:
            y = tl.zeros((BD * SG, CH), dtype=tl.float32)
        dts = _cols(dt, BD * SG, CH)
        dtus = _cols(dt * u, BD * SG, CH)
        ys = _cols(y, BD * SG, CH)
        new_hs = ()
        for k in tl.static_range(NS):
            bs = bc_cols(bts[k], BD * SG, CH, PACK_BC)
            cs = bc_cols(cts[k], BD * SG, CH, PACK_BC)
            h = hs[k]
            acc = ()
            for j in tl.static_range(CH):
                h = tl.exp2(dts[j] * a2[k]) * h + dtus[j] * bs[j]
                acc = acc + (ys[j] + cs[j] * h,)  # noqa: RUF005 (the Triton frontend builds tuples by concatenation)
            ys = acc
            new_hs = new_hs + (h,)  # noqa: RUF005 (the Triton frontend builds tuples by concatenation)
        hs = new_hs
        y = _rows(ys, BD * SG, CH)
        if HAS_Z:
            if EVEN:
                zz = tl.load(z_ptr + off).to(tl.float32)
            else:
                zz = tl.load(z_ptr + off, mask=valid, other=0.0).to(tl.float32)
            y = y * zz * tl.sigmoid(zz)
        if SG == 1:
            if EVEN:
                tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty))
            else:
                tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=valid)
        else:
            ysum = channel_sum(y, BD, SG, CH)
            yoff = (b * Dm + d0 + tl.arange(0, BD)).to(tl.int64)[:, None] * L + t[None, :]
            if EVEN:
                tl.store(y_ptr + yoff, ysum.to(y_ptr.dtype.element_ty))
            else:
                tl.store(y_ptr + yoff, ysum.to(y_ptr.dtype.element_ty), mask=(t < Lm)[None, :])
    if STORE_LAST:
        for k in tl.static_range(NS):
            tl.store(last_ptr + (b * Dm + d0 + ch) * N + s0 + k, hs[k], mask=s0 + k < N)
