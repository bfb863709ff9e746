"""Cross-entropy losses: multi-class CE, binary CE on the change logit, OHEM-sampled CE."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from geomamba.losses._common import change_logit, check_inputs

__all__ = [
    "BinaryCrossEntropyLoss",
    "CrossEntropyLoss",
    "OhemCrossEntropyLoss",
    "binary_cross_entropy",
    "cross_entropy",
    "ohem_cross_entropy",
]


def _weights(
    class_weights: Sequence[float] | torch.Tensor | None, logits: torch.Tensor
) -> torch.Tensor | None:
    if class_weights is None:
        return None
    w = torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device)
    if w.shape != (logits.shape[1],):
        raise ValueError(
            f"class_weights has {w.numel()} entries but the logits have {logits.shape[1]} classes"
        )
    return w


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = 255,
    class_weights: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Pixel-wise CE, mean over valid pixels (weighted mean with ``class_weights``, as ``F.cross_entropy``)."""
    target = check_inputs(logits, target, "cross_entropy")
    w = _weights(class_weights, logits)
    loss = F.cross_entropy(logits.float(), target, weight=w, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    denom = (w[safe] * valid).sum() if w is not None else valid.sum()
    return loss.sum() / denom.clamp(min=1e-12)


def binary_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = 255,
    pos_weight: float | None = None,
) -> torch.Tensor:
    """BCE of the change logit (``l1 - l0`` of 2-class logits) against ``target == 1``; mean over valid pixels."""
    target = check_inputs(logits, target, "binary_cross_entropy")
    z = change_logit(logits.float(), "binary_cross_entropy")
    valid = (target != ignore_index).float()
    pw = None if pos_weight is None else torch.tensor(float(pos_weight), device=z.device)
    loss = F.binary_cross_entropy_with_logits(z, (target == 1).float(), pos_weight=pw, reduction="none")
    return (loss * valid).sum() / valid.sum().clamp(min=1.0)


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    thresh: float | None = 0.7,
    min_kept: int = 100000,
    ignore_index: int = 255,
    class_weights: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """CE over the hard pixels only (online hard example mining, as mmseg's OHEMPixelSampler).

    With ``thresh``: pixels whose predicted probability of the true class is below
    ``max(thresh, p_k)`` are kept, where ``p_k`` is the ``k``-th smallest such probability and
    ``k = min_kept * B`` (so at least ``k`` pixels are kept). Without ``thresh``: the ``k`` pixels of
    largest CE are kept. Mean over the kept pixels (weighted with ``class_weights``).
    """
    target = check_inputs(logits, target, "ohem_cross_entropy")
    if min_kept < 1:
        raise ValueError(f"ohem_cross_entropy: min_kept must be >= 1, got {min_kept}")
    w = _weights(class_weights, logits)
    loss = F.cross_entropy(logits.float(), target, weight=w, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    n_valid = int(valid.sum())
    if n_valid == 0:
        return loss.sum() * 0.0
    k = min(min_kept * logits.shape[0], n_valid)
    with torch.no_grad():
        if thresh is None:
            score = torch.where(valid, loss, torch.full_like(loss, -1.0))
            cut = torch.topk(score.flatten(), k).values[-1]
            kept = valid & (score >= cut)
        else:
            prob = torch.softmax(logits.float(), dim=1)
            safe = torch.where(valid, target, torch.zeros_like(target))
            p_true = prob.gather(1, safe.unsqueeze(1)).squeeze(1)
            kth = torch.kthvalue(p_true[valid], k).values
            kept = valid & (p_true <= torch.clamp(kth, min=float(thresh)))
    denom = (w[target.clamp(0, logits.shape[1] - 1)] * kept).sum() if w is not None else kept.sum()
    return (loss * kept).sum() / denom.clamp(min=1e-12)


class CrossEntropyLoss(nn.Module):
    """Module form of ``cross_entropy``."""

    def __init__(self, *, ignore_index: int = 255, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.ignore_index, self.class_weights = ignore_index, class_weights

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, target, ignore_index=self.ignore_index, class_weights=self.class_weights)


class BinaryCrossEntropyLoss(nn.Module):
    """Module form of ``binary_cross_entropy``."""

    def __init__(self, *, ignore_index: int = 255, pos_weight: float | None = None) -> None:
        super().__init__()
        self.ignore_index, self.pos_weight = ignore_index, pos_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return binary_cross_entropy(
            logits, target, ignore_index=self.ignore_index, pos_weight=self.pos_weight
        )


class OhemCrossEntropyLoss(nn.Module):
    """Module form of ``ohem_cross_entropy``."""

    def __init__(
        self,
        *,
        thresh: float | None = 0.7,
        min_kept: int = 100000,
        ignore_index: int = 255,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.thresh, self.min_kept, self.ignore_index, self.class_weights = (
            thresh,
            min_kept,
            ignore_index,
            class_weights,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ohem_cross_entropy(
            logits,
            target,
            thresh=self.thresh,
            min_kept=self.min_kept,
            ignore_index=self.ignore_index,
            class_weights=self.class_weights,
        )
