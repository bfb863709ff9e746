"""The reference backend's SS2D forward on the image layout (``ss2d_fwd`` of backend ``"ref"``).

Same function as reorder + :func:`ref_fwd` + ``cross_merge`` (the composed path, which stays the
backward), computed without putting any sequence in scan order:

* Everything is held channels-last (D innermost). Direction k's sequence is cut in chunks that are
  image lines: rows for the row-major directions (k = 0, 2), columns for the column-major ones
  (k = 1, 3). Step i of every chunk at once is one image column (rows) or one image row (columns), a
  set of D-vectors: the recurrence ``h_t = a_t h_{t-1} + dt_t u_t B_t`` runs as one ``addcmul_`` per
  step over all chunks and channels, and the reversed directions run their steps and chunks backwards.
  No flip and no K copies of the map are made: each direction's states are mapped back by a view, so
  cross-merge is a sum.
* Each direction's working tensors are written in its scan layout ``(b, step, chunk, N, D)``: a row
  direction's (H, W) are transposed, which in channels-last layout moves whole D-vectors and costs
  no more than the plain write. On a square map the two forward directions (0, 1), and the two reversed
  ones (2, 3), then share every step: one op per step for both.
* Chunks start from a zero state; the chunk end states are then chained (one small step per chunk)
  and each position gets its chunk's incoming state times the decay ``prod_{r<=t} a_r`` of the chunk
  so far, formed in place of ``a`` as a running product (only factors ``a <= 1``: nothing overflows).
* softplus(delta + bias), ``exp(delta * A)`` and ``delta * u * B`` are computed once per call (per
  group of directions and channel block), not per chunk. Channels are independent, so maps whose working set would exceed
  ``_MAX_ELEMS`` are processed in channel blocks.

Inputs may have any strides: delta laid out ``(batch, K, H*W, D)`` in memory (``SS2DCore`` produces it
so on CPU) and an x in channels-last memory format are read without a copy; the output is computed
channels-last (the custom op gives it x's memory format). State and accumulation in fp32 (fp64 for fp64
inputs).
"""

from __future__ import annotations

import torch
from torch import Tensor

from geomamba.ops.selective_scan.reference import compute_dtype

__all__ = ["ref_ss2d_fwd"]

# Elements (batch * K * H * W * N * channels) of one channel block's working tensors.
_MAX_ELEMS = 1 << 23


def _groups(k: int, h: int, w: int) -> list[list[int]]:
    """Directions that share their steps: both forward and both reversed ones on a square map."""
    if h == w:
        return [g for g in ([d for d in (0, 1) if d < k], [d for d in (2, 3) if d < k]) if g]
    return [[d] for d in range(k)]


def _image(t: Tensor, direction: int, dim: int) -> Tensor:
    """Scan-layout ``(..., step, chunk, ...)`` (step at ``dim``) -> image ``(..., H, W, ...)`` view."""
    return t.transpose(dim, dim + 1) if direction % 2 == 0 else t


def _scan_group(z: Tensor, a: Tensor, rev: bool) -> None:
    """The scans of a group of directions, in place: ``z`` (b, G, S, nc, N, d) holds ``dt u B`` on entry
    and the states on exit, ``a`` (same shape) ``exp(dt A)`` on entry and the chunk decays on exit;
    steps S, chunks nc, ``rev``: run backwards."""
    zl, al = z.unbind(2), a.unbind(2)
    t = len(zl)
    prev = 1 if rev else -1
    first = t - 1 if rev else 0
    for i in range(t - 2, -1, -1) if rev else range(1, t):
        zl[i].addcmul_(al[i], zl[i + prev])
        al[i].mul_(al[i + prev])
    last, decay = zl[t - 1 - first], al[t - 1 - first]
    nc = last.shape[2]
    if nc == 1:
        return
    starts = torch.zeros_like(last)
    sl, el, pl = starts.unbind(2), last.unbind(2), decay.unbind(2)
    for c in range(nc - 2, -1, -1) if rev else range(1, nc):  # chain the chunks
        torch.addcmul(el[c + prev], pl[c + prev], sl[c + prev], out=sl[c])
    rest = slice(None, -1) if rev else slice(1, None)  # chunks with a nonzero incoming state
    z[:, :, :, rest].addcmul_(a[:, :, :, rest], starts[:, :, rest].unsqueeze(2))


def _block(
    y: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    bias: Tensor | None,
    cdt: torch.dtype,
) -> None:
    """One channel block: ``y`` (b, H, W, d) += the K directions' ``C . h``.

    u (b, H, W, d); delta (b, K, H, W, d); A (K, N, d); B, C (b, K, H, W, N, 1); bias (K, d) or None."""
    b, k, h, w, d = delta.shape
    n = A.shape[1]
    for g in _groups(k, h, w):  # one group at a time: a smaller working set
        sel = slice(g[0], g[-1] + 1)
        dt = torch.empty((b, len(g), h, w, d), dtype=cdt, device=u.device)
        raw = delta[:, sel]
        if bias is not None:  # (in cdt: a bf16 delta is promoted by the fp32 bias)
            raw = torch.add(raw, bias[sel].view(1, len(g), 1, 1, d), out=dt)
        elif raw.dtype != cdt:  # softplus computed in cdt, not in the input's dtype
            raw = dt.copy_(raw)
        torch._C._nn.softplus(raw, 1, 20, out=dt)  # F.softplus (beta 1, threshold 20) into dt
        s_len, n_chunks = (w, h) if g[0] % 2 == 0 else (h, w)
        a = dt.new_empty((b, len(g), s_len, n_chunks, n, d))  # exp(dt A) in the scan layout
        for j, direction in enumerate(g):
            torch.mul(dt[:, j].unsqueeze(-2), A[direction], out=_image(a[:, j], direction, 1))
        a.exp_()
        du = torch.mul(dt, u.unsqueeze(1), out=dt).unsqueeze(-2)  # dt u, (b, G, H, W, 1, d)
        z = dt.new_empty(a.shape)
        for j, direction in enumerate(g):  # dt u B in the scan layout
            torch.mul(du[:, j], B[:, direction], out=_image(z[:, j], direction, 1))
        del dt, du
        _scan_group(z, a, rev=g[0] >= 2)
        del a
        for j, direction in enumerate(g):
            hs = _image(z[:, j], direction, 1)  # (b, H, W, N, d)
            if n == 1:
                y.addcmul_(hs[..., 0, :], C[:, direction, :, :, 0])
            else:
                y.add_((hs * C[:, direction]).sum(-2))
        del z


def ref_ss2d_fwd(x, delta, A, B, C, D, delta_bias, directions):
    """SS2D forward (see the module docstring): x (b, D, H, W), delta (b, K, D, H*W), A (K*D, N),
    B, C (b, K, N, H*W), D and delta_bias (K*D,) or None -> y (b, D, H, W) in x's dtype
    (channels-last memory format)."""
    b, d, h, w = x.shape
    k, n = directions, A.shape[1]
    cdt = compute_dtype(x)
    u = x.permute(0, 2, 3, 1).to(cdt)  # (b, H, W, D): a view for a channels-last fp32 x
    dl = delta.unflatten(-1, (h, w)).permute(0, 1, 3, 4, 2)  # (b, K, H, W, D), any strides
    A3 = A.to(cdt).view(k, d, n).transpose(1, 2)  # (K, N, D)
    bias = None if delta_bias is None else delta_bias.to(cdt).view(k, d)
    Bv = B.to(cdt).unflatten(-1, (h, w)).permute(0, 1, 3, 4, 2).unsqueeze(-1)  # (b, K, H, W, N, 1)
    Cv = C.to(cdt).unflatten(-1, (h, w)).permute(0, 1, 3, 4, 2).unsqueeze(-1)
    y = torch.empty((b, h, w, d), dtype=cdt, device=x.device)
    if D is None:
        y.zero_()
    else:  # the skip term sum_k D_k u first, then the K directions' C . h
        torch.mul(u, D.to(cdt).view(k, d).sum(0), out=y)
    per_channel = b * k * h * w * n
    step = max(1, min(d, _MAX_ELEMS // max(per_channel, 1)))
    for c0 in range(0, d, step):
        cs = slice(c0, min(d, c0 + step))
        _block(
            y[..., cs],
            u[..., cs],
            dl[..., cs],
            A3[..., cs],
            Bv,
            Cv,
            None if bias is None else bias[:, cs],
            cdt,
        )
    return y.permute(0, 3, 1, 2).to(x.dtype)  # (b, D, H, W) channels-last; the op sets the layout
