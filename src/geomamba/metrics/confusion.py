"""Metrics from one accumulated confusion matrix, for any number of classes.

Accumulate with ``ConfusionMatrix`` (torchmetrics' ``MulticlassConfusionMatrix``: its state is summed over
DDP ranks, so distributed scores equal single-process scores) or ``confusion_matrix`` (a pure function),
then derive every score from the matrix with ``scores_from_confusion``. Rows are the true class, columns
the predicted class.

Per class: Precision = TP/(TP+FP), Recall = TP/(TP+FN), F1 = 2PR/(P+R), IoU = TP/(TP+FP+FN), and
Acc = TP/(TP+FN), the class's pixel accuracy as in mmsegmentation/open-cd tables (equal to Recall).
Overall: OA = trace/total, Cohen's Kappa, and the class means mIoU, mF1, mPrecision, mRecall (over
classes whose score is defined). A score whose denominator is 0 is NaN (undefined), never a silent 0.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

__all__ = [
    "CLASS_SCORES",
    "ConfusionMatrix",
    "confusion_matrix",
    "find_collapsed_classes",
    "flatten_scores",
    "format_table",
    "scores_from_confusion",
    "warn_collapsed_classes",
]

log = logging.getLogger("geomamba")

CLASS_SCORES = ("Precision", "Recall", "F1", "IoU", "Acc")
OVERALL_SCORES = ("OA", "Kappa", "mIoU", "mF1", "mPrecision", "mRecall")
# Scores added to a scores dict by other metrics (e.g. Boundary IoU: ``scores["BIoU"]`` and
# ``scores["per_class"][name]["BIoU"]``; pixel classification's average accuracy ``scores["AA"]``, see
# ``geomamba.metrics.adcd``); flattened and tabulated where present.
EXTRA_SCORES = ("BIoU", "AA")


def ConfusionMatrix(num_classes: int, ignore_index: int | None = 255) -> MulticlassConfusionMatrix:
    """A DDP-summed accumulating confusion matrix; ``update(preds, target)`` with class-id tensors."""
    return MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index, validate_args=False)


def confusion_matrix(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255
) -> torch.Tensor:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class, ignoring ``ignore_index``.

    Args:
        preds, target: class ids of the same shape (any), integer tensors.
    """
    if preds.shape != target.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape")
    p, t = preds.reshape(-1).long(), target.reshape(-1).long()
    keep = (t >= 0) & (t < num_classes)
    if ignore_index is not None:
        keep &= t != ignore_index
    p, t = p[keep], t[keep]
    if p.numel() and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"predicted class ids must lie in [0, {num_classes}), got [{p.min()}, {p.max()}]")
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


def scores_from_confusion(
    cm: torch.Tensor | np.ndarray, class_names: Sequence[str] | None = None
) -> dict[str, object]:
    """Scores of a ``(K, K)`` confusion matrix (rows true, columns predicted).

    Returns ``{"OA", "Kappa", "mIoU", "mF1", "mPrecision", "mRecall": float,
    "per_class": {name: {"Precision", "Recall", "F1", "IoU", "Acc": float}}, "support": {name: int},
    "predicted": {name: int}}`` with plain Python numbers (NaN where undefined).
    """
    m = (cm.detach().cpu().numpy() if isinstance(cm, torch.Tensor) else np.asarray(cm)).astype(np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"a confusion matrix must be square (K, K), got {m.shape}")
    k = m.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a {k}-class confusion matrix")
    tp = np.diag(m)
    support, predicted, total = m.sum(1), m.sum(0), m.sum()
    precision = _div(tp, predicted)
    recall = _div(tp, support)
    f1 = _div(2 * tp, support + predicted)
    iou = _div(tp, support + predicted - tp)
    oa = float(tp.sum() / total) if total else math.nan
    pe = float((support * predicted).sum() / total**2) if total else math.nan
    kappa = (oa - pe) / (1 - pe) if total and pe < 1 else math.nan
    per_class = {
        n: {"Precision": float(p), "Recall": float(r), "F1": float(f), "IoU": float(i), "Acc": float(r)}
        for n, p, r, f, i in zip(names, precision, recall, f1, iou)
    }
    return {
        "OA": oa,
        "Kappa": float(kappa),
        "mIoU": _nanmean(iou),
        "mF1": _nanmean(f1),
        "mPrecision": _nanmean(precision),
        "mRecall": _nanmean(recall),
        "per_class": per_class,
        "support": {n: int(s) for n, s in zip(names, support)},
        "predicted": {n: int(p) for n, p in zip(names, predicted)},
    }


def flatten_scores(scores: dict[str, object], prefix: str = "") -> dict[str, float]:
    """``{"OA": .., "F1_changed": .., ...}`` (with ``prefix`` prepended) for loggers and JSON."""
    flat = {f"{prefix}{k}": float(scores[k]) for k in (*OVERALL_SCORES, *EXTRA_SCORES) if k in scores}
    for name, vals in scores["per_class"].items():  # type: ignore[union-attr]
        for k in (*CLASS_SCORES, *EXTRA_SCORES):
            if k != "Acc" and k in vals:
                flat[f"{prefix}{k}_{name}"] = float(vals[k])
    return flat


def _table(header: list[str], rows: list[list[str]], left: bool = False) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) + 2 for i in range(len(header))]
    line = "+" + "+".join("-" * w for w in widths) + "+"

    def fmt(row: list[str]) -> str:
        cells = [
            (" " + c).ljust(w) if i == 0 and left else c.center(w)
            for i, (c, w) in enumerate(zip(row, widths))
        ]
        return "|" + "|".join(cells) + "|"

    return "\n".join([line, fmt(header), line, *(fmt(r) for r in rows), line])


def _pct(x: float) -> str:
    return "nan" if math.isnan(x) else f"{100 * x:.2f}"


def format_table(scores: dict[str, object], title: str = "") -> str:
    """A printable per-class and summary table (percent, 2 decimals), like mmengine's."""
    per_class = scores["per_class"]
    extra = [k for k in EXTRA_SCORES if k in scores]
    class_extra = [k for k in extra if any(k in v for v in per_class.values())]  # type: ignore[union-attr]
    columns = ["IoU", "Acc", "F1", "Precision", "Recall", *class_extra]
    rows = [
        [name, *(_pct(v.get(k, math.nan)) for k in columns)]
        for name, v in per_class.items()  # type: ignore[union-attr]
    ]
    head = _table(["Class", *columns], rows, left=True)
    overall = [*OVERALL_SCORES, *extra]
    summary = _table(overall, [[_pct(float(scores[k])) for k in overall]])
    prefix = f"{title}\n" if title else ""
    return f"{prefix}per-class results:\n{head}\nsummary:\n{summary}"


def find_collapsed_classes(scores: dict[str, object]) -> list[str]:
    """Names of classes that were never predicted although present in the ground truth."""
    return [
        n
        for n, p in scores["predicted"].items()  # type: ignore[union-attr]
        if p == 0 and scores["support"][n] > 0  # type: ignore[index]
    ]


def warn_collapsed_classes(scores: dict[str, object], where: str = "validation") -> list[str]:
    """Log a loud warning naming every class never predicted in ``where``; returns their names."""
    collapsed = find_collapsed_classes(scores)
    for name in collapsed:
        log.warning(
            "\n%s\n!! class %r was NEVER predicted in %s (%d true pixels): the model has collapsed to the "
            "other class(es).\n!! Remedies: class-weighted focal loss, Dice + Focal loss, OHEM pixel "
            "sampling (lower its threshold), oversampling tiles that contain %r, or a lower learning "
            "rate.\n%s",
            "!" * 100,
            name,
            where,
            scores["support"][name],  # type: ignore[index]
            name,
            "!" * 100,
        )
    return collapsed
