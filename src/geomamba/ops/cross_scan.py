"""Cross-scan and cross-merge of VMamba's SS2D.

``cross_scan(x: (B, C, H, W), directions=4) -> (B, K, C, H*W)`` with K = directions:
k=0 row-major, k=1 column-major, k=2 row-major reversed, k=3 column-major reversed
(K=2: the first two; K=1: row-major only). ``cross_merge(y: (B, K, C, H*W), H, W) -> (B, C, H, W)``
maps each sequence back to the image layout and sums; it is the adjoint of ``cross_scan``.

INTERIM: plain PyTorch indexing; autograd provides the backward.
"""

from __future__ import annotations

import torch

__all__ = ["cross_merge", "cross_scan"]


def cross_scan(x: torch.Tensor, directions: int = 4) -> torch.Tensor:
    if directions not in (1, 2, 4):
        raise ValueError(f"directions must be 1, 2 or 4, got {directions}")
    if x.dim() != 4:
        raise ValueError(f"cross_scan expects x of shape (B, C, H, W), got {tuple(x.shape)}")
    row = x.flatten(2)
    if directions == 1:
        return row[:, None]
    col = x.transpose(2, 3).flatten(2)
    if directions == 2:
        return torch.stack([row, col], dim=1)
    return torch.stack([row, col, row.flip(-1), col.flip(-1)], dim=1)


def cross_merge(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, k, c, length = y.shape
    if k not in (1, 2, 4) or length != h * w:
        raise ValueError(f"cross_merge expects (B, K in 1|2|4, C, {h}*{w}), got {tuple(y.shape)}")
    out = y[:, 0]
    if k == 4:
        out = out + y[:, 2].flip(-1)
    if k >= 2:
        col = y[:, 1] if k == 2 else y[:, 1] + y[:, 3].flip(-1)
        out = out + col.view(b, c, w, h).transpose(2, 3).reshape(b, c, length)
    return out.view(b, c, h, w)
