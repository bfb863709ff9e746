"""The reference backend's SS2D forward on the image layout (``ss2d_fwd`` of backend ``"ref"``).

Same function as reorder + :func:`ref_fwd` + ``cross_merge`` (the composed path, which stays the
backward), computed without putting any sequence in scan order:

* Everything is held channels-last, ``(batch, K, H, W, N, D)`` (D innermost). Direction k's sequence is
  cut in chunks that are image lines: rows for the row-major directions (k = 0, 2), columns for the
  column-major ones (k = 1, 3). Step i of every chunk at once is then one image column (rows) or one
  image row (columns): a strided slice whose rows are D contiguous values, so the recurrence
  ``h_t = a_t h_{t-1} + dt_t u_t B_t`` runs as one ``addcmul_`` per step over all chunks and channels,
  and the reversed directions simply run their steps and chunks backwards. No flip, no transpose and no
  K copies of the map: each direction's states stay at their image positions, so cross-merge is a sum.
* Chunks start from a zero state; the chunk end states are then chained (one small step per chunk)
  and each position gets its chunk's incoming state times the decay ``prod_{r<=t} a_r`` of the chunk
  so far, formed in place of ``a`` as a running product (only factors ``a <= 1``: nothing overflows).
* softplus(delta + bias), ``exp(delta * A)`` and ``delta * u * B`` are computed once per call (per
  channel block), not per chunk. Channels are independent, so maps whose working set would exceed
  ``_MAX_ELEMS`` are processed in channel blocks.

Inputs may have any strides: delta laid out ``(batch, K, H*W, D)`` in memory (``SS2DCore`` produces it
so on CPU) and an x in channels-last memory format are read without a copy; the output is computed
channels-last (the custom op gives it x's memory format). State and accumulation in fp32 (fp64 for fp64 inputs).
"""

from __future__ import annotations

import torch
from torch import Tensor

from geomamba.ops.selective_scan.reference import compute_dtype

__all__ = ["ref_ss2d_fwd"]

# Elements (batch * K * H * W * N * channels) of one channel block's working tensors (three of them).
_MAX_ELEMS = 1 << 23


def _softplus_(t: Tensor) -> Tensor:
    """In-place ``softplus`` (beta 1, threshold 20, as ``F.softplus``)."""
    return torch._C._nn.softplus(t, 1, 20, out=t)


def _scan_direction(hk: Tensor, ak: Tensor, k: int) -> None:
    """Direction ``k``'s scan, in place: ``hk`` (b, H, W, N, d) holds ``dt u B`` on entry and the states
    on exit; ``ak`` (b, H, W, N, d) holds ``exp(dt A)`` on entry and is overwritten (chunk decays)."""
    sd = 1 if k % 2 else 2  # step dim: rows for column chunks (k = 1, 3), columns for row chunks
    rev = k >= 2
    hl, al = hk.unbind(sd), ak.unbind(sd)
    t = len(hl)
    prev = 1 if rev else -1
    for i in range(t - 2, -1, -1) if rev else range(1, t):
        hl[i].addcmul_(al[i], hl[i + prev])
        al[i].mul_(al[i + prev])  # decay of the chunk up to step i
    last, decay = (hl[0], al[0]) if rev else (hl[t - 1], al[t - 1])  # (b, nc, N, d)
    nc = last.shape[1]
    if nc == 1:
        return
    starts = torch.zeros_like(last)
    sl, el, pl = starts.unbind(1), last.unbind(1), decay.unbind(1)
    for c in range(nc - 2, -1, -1) if rev else range(1, nc):  # chain the chunks
        torch.addcmul(el[c + prev], pl[c + prev], sl[c + prev], out=sl[c])
    hk.addcmul_(ak, starts.unsqueeze(sd))


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
    dt = torch.empty((b, k, h, w, d), dtype=cdt, device=u.device)
    if bias is None:
        dt.copy_(delta)
    else:
        torch.add(delta, bias.view(1, k, 1, 1, d), out=dt)
    _softplus_(dt)
    a = torch.mul(dt.unsqueeze(-2), A.view(1, k, 1, 1, n, d), out=dt.new_empty((b, k, h, w, n, d))).exp_()
    hs = torch.mul(dt, u.unsqueeze(1), out=dt).unsqueeze(-2)  # dt u, (b, K, H, W, 1, d)
    hs = hs.mul_(B) if n == 1 else hs * B
    del dt
    for i in range(k):
        _scan_direction(hs[:, i], a[:, i], i)
    del a
    for i in range(k):
        if n == 1:
            y.addcmul_(hs[:, i, :, :, 0], C[:, i, :, :, 0])
        else:
            y.add_((hs[:, i] * C[:, i]).sum(-2))


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
    y = torch.zeros((b, h, w, d), dtype=cdt, device=x.device)
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
    if D is not None:
        y.addcmul_(u, D.to(cdt).view(k, d).sum(0))
    return y.permute(0, 3, 1, 2).to(x.dtype)  # (b, D, H, W) channels-last; the op sets the layout
