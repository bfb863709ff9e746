"""Reference selective scan: chunked, pure PyTorch, the CPU path (backend ``"ref"``).

Shapes as in :func:`geomamba.ops.selective_scan.selective_scan`: u, delta, z ``(batch, D, L)``;
A ``(D, N)``; B, C ``(batch, G, N, L)``; D, delta_bias ``(D,)``. Everything is computed in fp32 (fp64 for fp64 inputs).

Algorithm (the recurrence ``h_t = a_t * h_{t-1} + x_t`` with ``a_t = exp(delta_t * A)`` and
``x_t = delta_t * u_t * B_t``):

* The sequence is cut into *blocks* of ``S`` positions, processed one after another (the state is
  carried between blocks), so that no ``(batch, D, L, N)`` tensor exists for the whole sequence: a
  block's working tensors hold about ``_BLOCK_ELEMS`` elements whatever L is.
* A block is stored as ``(nc, T, batch, G, N, D/G)``: ``nc`` chunks of ``T`` positions, each position
  a contiguous row of ``batch * D * N`` values (converting from ``(batch, D, L)`` is a 2-D transpose),
  N before the channels so that the sum over N (``y = C.h``) is a small matrix product.
* When a position holds many elements (``batch * D * N >= _SEQ_MIN``) a block is one chunk and the
  recurrence runs position by position, one fused ``addcmul`` per step. Otherwise the block is cut in
  ``nc ~ T ~ sqrt(S)`` chunks: the recurrence runs inside every chunk from a zero state, all chunks at
  once (``T`` steps); the chunk states are chained (``nc`` small steps); each position then gets its
  chunk's incoming state times ``prod_{r<=t} a_r = exp(A * cumsum(delta))`` (exponent <= 0).
* Only decays ``a <= 1`` and their products are ever formed (exponents ``delta*A <= 0``, cumulative sums
  taken inside a chunk from its start): no ``exp(-cumsum)`` trick, so nothing can overflow for any L
  (tested at L = 16384). A closed form with a ``(T, T)`` segment-sum matrix per channel and state
  (Mamba-2 style) would cost ``T * N`` exps per element since the decay is per channel; the
  chunk-parallel recurrence costs one.
* The backward recomputes: a first pass finds the state at each block start (only ``n_blocks``
  states are kept), then blocks are visited last to first, each recomputing its states, running the
  reverse (adjoint) recurrence ``g_t = C_t dy_t + a_{t+1} g_{t+1}`` the same chunked way, and reducing
  the gradients of the block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["compute_dtype", "ref_bwd", "ref_fwd"]

# Elements (batch * D * N * S) of one block's working tensors; 2**18 fp32 = 1 MiB each.
_BLOCK_ELEMS = 1 << 18
_MIN_BLOCK = 64
# Elements per position (batch * D * N) from which a block runs position by position.
_SEQ_MIN = 2048


def _plan(length: int, per_pos: int) -> list[tuple[int, int, int, int]]:
    """Blocks ``(start, length, T, nc)`` covering ``[0, length)``, with ``T * nc >= length`` of the block."""
    block = max(_MIN_BLOCK, _BLOCK_ELEMS // max(per_pos, 1))
    out = []
    start = 0
    while start < length:
        size = min(block, length - start)
        t, nc = (size, 1) if per_pos >= _SEQ_MIN else _chunks(size)
        out.append((start, size, t, nc))
        start += size
    return out


def _chunks(size: int) -> tuple[int, int]:
    """``(T, nc)`` with ``T ~ nc ~ sqrt(size)`` and ``T * nc >= size``."""
    t = math.isqrt(max(size, 1) - 1) + 1
    return t, -(-size // t)


def compute_dtype(u: Tensor) -> torch.dtype:
    """fp64 for fp64 inputs (gradcheck), else fp32 (bf16 / fp16 / fp32 inputs)."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _block(x: Tensor, start: int, size: int, padded: int, cdt: torch.dtype) -> Tensor:
    """``x[..., start:start+size]`` in ``cdt``, zero-padded on the right to ``padded``, contiguous
    (copying the strided slice first makes the block's later transposes local: several times faster)."""
    s = x[..., start : start + size].to(cdt)
    return F.pad(s, (0, padded - size)) if padded > size else s.contiguous()


# The layout changes below are plain 2-D transposes (position-major <-> channel-major), the fast path
# of ``Tensor.contiguous`` (a general permutation copy is several times slower).


def _seq(x: Tensor, g: int, t: int, nc: int) -> Tensor:
    """Channel tensor ``(b, D, nc*T)`` -> contiguous ``(nc, T, b, G, 1, D/G)`` (a copy)."""
    b, d, s = x.shape
    return x.reshape(b * d, s).t().contiguous().view(nc, t, b, g, 1, d // g)


def _seq_n(x: Tensor, t: int, nc: int) -> Tensor:
    """State-input tensor ``(b, G, N, nc*T)`` -> contiguous ``(nc, T, b, G, N, 1)`` (a copy)."""
    b, g, n, s = x.shape
    return x.reshape(b * g * n, s).t().contiguous().view(nc, t, b, g, n, 1)


def _unseq(x: Tensor) -> Tensor:
    """``(nc, T, b, G, K)`` -> ``(b, G*K, nc*T)`` (a copy)."""
    nc, t, b, g, k = x.shape
    return x.reshape(nc * t, b * g * k).t().contiguous().view(b, g * k, nc * t)


def _unseq_n(x: Tensor) -> Tensor:
    """``(nc, T, b, G, N)`` -> ``(b, G, N, nc*T)`` (a copy)."""
    nc, t, b, g, n = x.shape
    return x.reshape(nc * t, b * g * n).t().contiguous().view(b, g, n, nc * t)


def _sum_n(w: Tensor, x: Tensor) -> Tensor:
    """``sum_n w[..., n, 0] * x[..., n, :]``: ``(..., N, 1), (..., N, Dg) -> (..., Dg)``."""
    if w.shape[-2] == 1:
        return (x * w)[..., 0, :]
    return torch.matmul(w.transpose(-1, -2), x)[..., 0, :]


def _sum_d(x: Tensor, v: Tensor) -> Tensor:
    """``sum_d x[..., :, d] * v[..., 0, d]``: ``(..., N, Dg), (..., 1, Dg) -> (..., N)``.

    (A multiply and a sum: batched matrix-vector products are several times slower here.)"""
    return (x * v).sum(-1)


def _cumsum1(x: Tensor, *, reverse: bool = False) -> Tensor:
    """Cumulative sum along dim 1 (from the end when ``reverse``), one slice at a time: several times
    faster than ``torch.cumsum`` along an outer dimension."""
    out = x.clone()
    rows = out.unbind(1)
    order = range(len(rows) - 2, -1, -1) if reverse else range(1, len(rows))
    step = 1 if reverse else -1
    for i in order:
        rows[i].add_(rows[i + step])
    return out


def _to_internal(h: Tensor, g: int) -> Tensor:
    """State ``(b, D, N)`` -> ``(b, G, N, D/G)``."""
    b, d, n = h.shape
    return h.reshape(b, g, d // g, n).transpose(-1, -2)


def _to_external(h: Tensor) -> Tensor:
    """State ``(b, G, N, D/G)`` -> ``(b, D, N)``."""
    b, g, n, dg = h.shape
    return h.transpose(-1, -2).reshape(b, g * dg, n)


class _Block:
    """One block's working tensors, ``(nc, T, b, G, N, D/G)``: chunk, position in the chunk, then
    everything else, so that a position of every chunk is an evenly strided set of contiguous rows.

    Args: dt, u ``(b, D, nc*T)`` (dt after softplus, zero-padded); A4 ``(G, N, D/G)``;
    B ``(b, G, N, nc*T)``."""

    def __init__(self, dt: Tensor, u: Tensor, A4: Tensor, B: Tensor, t: int, nc: int) -> None:
        b, d, _ = dt.shape
        g, n = B.shape[1], B.shape[2]
        self.t, self.nc, self.A4 = t, nc, A4
        self.shape = (nc, t, b, g, n, d // g)
        self.dt_t = _seq(dt, g, t, nc)
        self.du_t = _seq(dt * u, g, t, nc)
        self.B_t = _seq_n(B, t, nc)
        self.a = torch.mul(self.dt_t, A4, out=dt.new_empty(self.shape)).exp_()

    def states(self, h0: Tensor, *, full: bool = True) -> tuple[Tensor, Tensor]:
        """States of every position (exact only when ``full``) and the block's end state, starting
        from ``h0`` ``(b, G, N, D/G)``."""
        a, t, nc = self.a, self.t, self.nc
        h = torch.mul(self.du_t, self.B_t, out=a.new_empty(self.shape))  # x_t = dt_t u_t B_t
        hl, al = h.unbind(1), a.unbind(1)
        if nc == 1:
            hl[0][0].addcmul_(al[0][0], h0)
            for i in range(1, t):
                hl[i].addcmul_(al[i], hl[i - 1])
            return h, hl[t - 1][0]
        for i in range(1, t):  # every chunk from a zero state
            hl[i].addcmul_(al[i], hl[i - 1])
        # decay[c, i] = prod_{r <= i} a[c, r] = exp(A * cumsum(dt)), exponent <= 0
        cs = _cumsum1(self.dt_t) if full else self.dt_t.sum(1, keepdim=True)
        decay = torch.mul(cs, self.A4).exp_()
        starts = a.new_empty((nc + 1, *h0.shape))
        starts[0] = h0
        ends, dl, sl = hl[t - 1].unbind(0), decay[:, -1].unbind(0), starts.unbind(0)
        for c in range(nc):  # chain the chunks
            torch.addcmul(ends[c], dl[c], sl[c], out=sl[c + 1])
        if full:
            h.addcmul_(decay, starts[:nc].unsqueeze(1))
        return h, sl[nc]

    def adjoint(self, g: Tensor, gin: Tensor) -> Tensor:
        """In place on ``g`` (``C_t dy_t`` on entry): ``g_t = C_t dy_t + a_{t+1} g_{t+1}``; ``gin``
        ``(b, G, N, D/G)`` is the gradient reaching the block's last state from later positions."""
        a, t, nc = self.a, self.t, self.nc
        gl, al = g.unbind(1), a.unbind(1)
        if nc == 1:
            gl[t - 1][0].add_(gin)
            for i in range(t - 2, -1, -1):
                gl[i].addcmul_(al[i + 1], gl[i + 1])
            return g
        for i in range(t - 2, -1, -1):  # every chunk from a zero gradient at its end
            gl[i].addcmul_(al[i + 1], gl[i + 1])
        # decay[c, i] = prod_{r = i+1}^{T} a[c, r] with a[c, T] = a[c+1, 0] (1 after the last chunk)
        rc = _cumsum1(self.dt_t, reverse=True)  # sum_{r >= i}
        expo = torch.zeros_like(rc)
        expo[:, :-1] = rc[:, 1:]
        expo[:-1] += self.dt_t[1:, :1]
        decay = torch.mul(expo, self.A4).exp_()
        gnext = a.new_empty((nc + 1, *gin.shape))
        gnext[nc] = gin
        firsts, d0, gn = gl[0].unbind(0), decay[:, 0].unbind(0), gnext.unbind(0)
        for c in range(nc - 1, -1, -1):
            torch.addcmul(firsts[c], d0[c], gn[c + 1], out=gn[c])
        return g.addcmul_(decay, gnext[1:].unsqueeze(1))


def _softplus_delta(delta: Tensor, delta_bias: Tensor | None, softplus: bool) -> tuple[Tensor, Tensor]:
    """``(raw, dt)``: raw = delta + bias, dt = softplus(raw) or raw."""
    raw = delta if delta_bias is None else delta + delta_bias.to(delta.dtype)[:, None]
    return raw, (F.softplus(raw) if softplus else raw)


def _a4(A: Tensor, g: int, cdt: torch.dtype) -> Tensor:
    """A ``(D, N)`` -> ``(G, N, D/G)``."""
    d, n = A.shape
    return A.to(cdt).reshape(g, d // g, n).transpose(1, 2).contiguous()


def ref_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Forward of the reference backend: ``(y (batch, D, L) in u.dtype, last_state (batch, D, N))``
    (last_state fp32, fp64 for fp64 inputs)."""
    b, d, length = u.shape
    n, g = A.shape[1], B.shape[1]
    cdt = compute_dtype(u)
    A4 = _a4(A, g, cdt)
    y = torch.empty(b, d, length, dtype=cdt, device=u.device)
    h = torch.zeros(b, g, n, d // g, dtype=cdt, device=u.device)
    for start, size, t, nc in _plan(length, b * d * n):
        padded = t * nc
        _, dt = _softplus_delta(_block(delta, start, size, size, cdt), delta_bias, delta_softplus)
        dt = F.pad(dt, (0, padded - size))  # padding: dt = 0 -> a = 1, x = 0
        blk = _Block(dt, _block(u, start, size, padded, cdt), A4, _block(B, start, size, padded, cdt), t, nc)
        hs, h = blk.states(h)
        ys = _sum_n(_seq_n(_block(C, start, size, padded, cdt), t, nc), hs)
        y[..., start : start + size] = _unseq(ys)[..., :size]
        h = h.clone()
        del blk, hs, ys
    if D is not None:
        y.addcmul_(u.to(cdt), D.to(cdt)[:, None])
    if z is not None:
        y.mul_(F.silu(z.to(cdt)))
    return y.to(u.dtype), _to_external(h)


def ref_bwd(dy, u, delta, A, B, C, D, z, delta_bias, delta_softplus, dlast_state=None):
    """Backward of the reference backend (recomputes the forward block by block).

    Returns ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)`` with the inputs' shapes and dtypes
    (None where the input is None)."""
    b, d, length = u.shape
    n, g = A.shape[1], B.shape[1]
    dev, cdt = u.device, compute_dtype(u)
    A4 = _a4(A, g, cdt)
    Df = D.to(cdt) if D is not None else None
    du = torch.empty(b, d, length, dtype=cdt, device=dev)
    ddelta = torch.empty(b, d, length, dtype=cdt, device=dev)
    dB = torch.empty(b, g, n, length, dtype=cdt, device=dev)
    dC = torch.empty(b, g, n, length, dtype=cdt, device=dev)
    dz = torch.empty(b, d, length, dtype=cdt, device=dev) if z is not None else None
    dA4 = torch.zeros_like(A4)
    dD = torch.zeros(d, dtype=cdt, device=dev) if D is not None else None
    dbias = torch.zeros(d, dtype=cdt, device=dev) if delta_bias is not None else None
    plan = _plan(length, b * d * n)

    def load(start, size, t, nc):
        padded = t * nc
        raw, dt = _softplus_delta(_block(delta, start, size, size, cdt), delta_bias, delta_softplus)
        dt = F.pad(dt, (0, padded - size))
        u_s = _block(u, start, size, padded, cdt)
        return _Block(dt, u_s, A4, _block(B, start, size, padded, cdt), t, nc), raw, dt, u_s

    # Pass 1: the state at each block start. Only block end states are needed, so the blocks are always
    # cut in chunks here (no per-position correction, far fewer steps).
    h = torch.zeros(b, g, n, d // g, dtype=cdt, device=dev)
    block_h0 = []
    for i, (start, size, _, _) in enumerate(plan):
        block_h0.append(h)
        if i + 1 < len(plan):
            blk = load(start, size, *_chunks(size))[0]
            h = blk.states(h, full=False)[1].clone()
            del blk

    # Pass 2: blocks last to first. gin = gradient reaching the block's last state from later positions.
    gin = torch.zeros(b, g, n, d // g, dtype=cdt, device=dev)
    if dlast_state is not None:
        gin += _to_internal(dlast_state.to(cdt), g)
    for (start, size, t, nc), h0 in zip(reversed(plan), reversed(block_h0)):
        padded = t * nc
        sl = slice(start, start + size)
        blk, raw, dt, u_s = load(start, size, t, nc)
        hs, _ = blk.states(h0)
        C_t = _seq_n(_block(C, start, size, padded, cdt), t, nc)
        dout = _block(dy, start, size, padded, cdt)
        if z is not None:
            z_s = _block(z, start, size, padded, cdt)
            sig = torch.sigmoid(z_s)
            y1 = _unseq(_sum_n(C_t, hs))
            if Df is not None:
                y1.addcmul_(u_s, Df[:, None])
            dz[..., sl] = (dout * y1 * sig * (1 + z_s * (1 - sig)))[..., :size]
            dout = dout * (z_s * sig)
            del y1, sig, z_s
        if Df is not None:
            dD += (dout * u_s).sum((0, 2))
        dout_t = _seq(dout, g, t, nc)
        dC[..., sl] = _unseq_n(_sum_d(hs, dout_t))[..., :size]

        # Adjoint recurrence g_t = C_t dy_t + a_{t+1} g_{t+1}.
        a = blk.a
        gr = blk.adjoint(torch.mul(dout_t, C_t, out=torch.empty_like(a)), gin)
        gin = a[0, 0] * gr[0, 0]

        # x_t = du_t B_t: gradients of du (then u and delta) and of B.
        d_du = _unseq(_sum_n(blk.B_t, gr))  # (b, D, S)
        dB[..., sl] = _unseq_n(_sum_d(gr, blk.du_t))[..., :size]
        # a_t = exp(dt_t A): dL/d(dt_t A) = g_t a_t h_{t-1}.
        term = a.mul_(gr)
        del gr
        term[:, 1:].mul_(hs[:, :-1])
        term[1:, 0].mul_(hs[:-1, -1])
        term[0, 0].mul_(h0)
        del hs
        dA4 += (term * blk.dt_t).sum((0, 1, 2))
        ddt = _unseq((term * A4).sum(-2))
        del term, blk
        ddt.addcmul_(d_du, u_s)
        du_s = d_du.mul_(dt)
        if Df is not None:
            du_s.addcmul_(dout, Df[:, None])
        du[..., sl] = du_s[..., :size]
        ddt = ddt[..., :size]
        if delta_softplus:
            ddt.mul_(torch.sigmoid(raw))
        ddelta[..., sl] = ddt
        if dbias is not None:
            dbias += ddt.sum((0, 2))
        del d_du, du_s, ddt

    dA = dA4.transpose(1, 2).reshape(d, n)

    def cast(grad, ref):
        return None if ref is None else grad.to(ref.dtype)

    return (
        cast(du, u),
        cast(ddelta, delta),
        cast(dA, A),
        cast(dB, B),
        cast(dC, C),
        cast(dD, D),
        cast(dz, z),
        cast(dbias, delta_bias),
    )
