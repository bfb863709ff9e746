"""Cross-scan and cross-merge of VMamba's SS2D, and the per-direction reorderings they are made of.

Directions (K = ``directions``): k=0 row-major, k=1 column-major, k=2 row-major reversed, k=3
column-major reversed; K=2 uses the first two, K=1 row-major only.

* ``cross_scan(x: (B, C, H, W), directions=4) -> (B, K, C, H*W)``: the K sequences of the map.
* ``cross_merge(y: (B, K, C, H*W), h, w) -> (B, C, H, W)``: each sequence mapped back to the image
  and summed. It is the adjoint of ``cross_scan`` (``<cross_scan(x), y> = <x, cross_merge(y)>``), so
  each one's backward is the other.
* ``to_scan_order(t: (B, K, C, H*W), h, w)`` reorders slice k, given in image (row-major) order, into
  direction k's order; ``from_scan_order`` is its inverse. ``cross_scan(x)`` is ``to_scan_order`` of x
  repeated K times and ``cross_merge(y)`` is ``from_scan_order(y).sum(1)``.
* ``to_line_order(t: (B, K, C, H*W), h, w)`` reorders slice k, given in image order, into the line order
  of direction k without its reversal: row-major for k = 0, 2 (unchanged), column-major for k = 1, 3
  (transposed). ``from_line_order`` is its inverse. The fused SS2D kernels read per-direction inputs in
  this ``"lines"`` layout as contiguous rows (``geomamba.ops.ss2d_scan``, ``layout="lines"``).

Plain PyTorch indexing (transpose / flip); autograd provides the backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "LAYOUTS",
    "cross_merge",
    "cross_scan",
    "from_line_order",
    "from_scan_order",
    "to_line_order",
    "to_scan_order",
]

# Layouts of the SS2D scan's per-direction tensors: image order, or "lines" (see to_line_order).
LAYOUTS = ("image", "lines")


def _check_directions(directions: int) -> None:
    if directions not in (1, 2, 4):
        raise ValueError(f"directions must be 1, 2 or 4, got {directions!r}")


def _transpose_seq(t: Tensor, rows: int, cols: int) -> Tensor:
    """``(..., rows*cols)`` read row-major as (rows, cols) -> the same grid read column-major."""
    return t.unflatten(-1, (rows, cols)).transpose(-1, -2).flatten(-2)


def cross_scan(x: Tensor, directions: int = 4) -> Tensor:
    """``(B, C, H, W) -> (B, K, C, H*W)``, K = directions (see the module docstring)."""
    _check_directions(directions)
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"cross_scan expects x of shape (B, C, H, W), got {getattr(x, 'shape', type(x))}")
    row = x.flatten(2)
    if directions == 1:
        return row.unsqueeze(1)
    col = x.transpose(2, 3).flatten(2)
    if directions == 2:
        return torch.stack([row, col], dim=1)
    return torch.stack([row, col, row.flip(-1), col.flip(-1)], dim=1)


def _check_seq(name: str, y: Tensor, h: int, w: int) -> None:
    if not isinstance(y, Tensor) or y.dim() != 4 or y.shape[1] not in (1, 2, 4) or y.shape[3] != h * w:
        raise ValueError(
            f"{name} expects a tensor (B, K in 1|2|4, C, H*W = {h}*{w}), got {getattr(y, 'shape', type(y))}"
        )


def cross_merge(y: Tensor, h: int, w: int) -> Tensor:
    """``(B, K, C, H*W) -> (B, C, H, W)``: sum of the K sequences mapped back to the image."""
    _check_seq("cross_merge", y, h, w)
    b, k, c, _ = y.shape
    out = y[:, 0]
    if k == 4:
        out = out + y[:, 2].flip(-1)
    if k >= 2:
        col = y[:, 1] if k == 2 else y[:, 1] + y[:, 3].flip(-1)
        out = out + _transpose_seq(col, w, h)
    return out.reshape(b, c, h, w)


def to_scan_order(t: Tensor, h: int, w: int) -> Tensor:
    """``(B, K, C, H*W)`` in image order -> slice k in direction k's order (same shape)."""
    _check_seq("to_scan_order", t, h, w)
    k = t.shape[1]
    parts = [t[:, 0]]
    if k >= 2:
        parts.append(_transpose_seq(t[:, 1], h, w))
    if k == 4:
        parts.append(t[:, 2].flip(-1))
        parts.append(_transpose_seq(t[:, 3], h, w).flip(-1))
    return torch.stack(parts, dim=1)


def from_scan_order(t: Tensor, h: int, w: int) -> Tensor:
    """Inverse of :func:`to_scan_order`: slice k in direction k's order -> image order."""
    _check_seq("from_scan_order", t, h, w)
    k = t.shape[1]
    parts = [t[:, 0]]
    if k >= 2:
        parts.append(_transpose_seq(t[:, 1], w, h))
    if k == 4:
        parts.append(t[:, 2].flip(-1))
        parts.append(_transpose_seq(t[:, 3].flip(-1), w, h))
    return torch.stack(parts, dim=1)


def _odd_transposed(t: Tensor, rows: int, cols: int) -> Tensor:
    k = t.shape[1]
    if k == 1:
        return t
    parts = [t[:, j] if j % 2 == 0 else _transpose_seq(t[:, j], rows, cols) for j in range(k)]
    return torch.stack(parts, dim=1)


def to_line_order(t: Tensor, h: int, w: int) -> Tensor:
    """``(B, K, C, H*W)`` in image order -> slice k in direction k's line order, not reversed: slices 0
    and 2 unchanged (row-major), slices 1 and 3 column-major (same shape)."""
    _check_seq("to_line_order", t, h, w)
    return _odd_transposed(t, h, w)


def from_line_order(t: Tensor, h: int, w: int) -> Tensor:
    """Inverse of :func:`to_line_order`: slice k in direction k's line order -> image order."""
    _check_seq("from_line_order", t, h, w)
    return _odd_transposed(t, w, h)
