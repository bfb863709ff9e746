"""Pixel-classification scores of the MS + PAN literature (ADCD-Net): OA, AA, Kappa, per-class accuracy.

Pure functions on a confusion matrix ``cm (K, K)`` with rows = true class and columns = predicted class
(NumPy or torch, any integer or float dtype):

* per-class accuracy (producer's accuracy, recall) ``cm[k, k] / cm[k, :].sum()`` (NaN without samples),
* OA = ``trace / total``, AA = mean of the per-class accuracies over classes with samples,
* Cohen's Kappa = ``(OA - pe) / (1 - pe)`` with ``pe = sum_k row_k * col_k / total**2``.

Interim home: the engine's shared confusion core (``geomamba.metrics.confusion``) accumulates the same
matrix; these functions take its output unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "average_accuracy",
    "classification_scores",
    "confusion_from_predictions",
    "kappa",
    "overall_accuracy",
    "per_class_accuracy",
]


def _cm(cm: Any) -> np.ndarray:
    a = cm.detach().cpu().numpy() if isinstance(cm, torch.Tensor) else np.asarray(cm)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"a confusion matrix must be square (K, K), got shape {a.shape}")
    if (a < 0).any():
        raise ValueError("a confusion matrix cannot hold negative counts")
    return a.astype(np.float64)


def confusion_from_predictions(
    preds: Any, target: Any, num_classes: int, *, ignore_index: int | None = None
) -> np.ndarray:
    """``(K, K)`` int64 confusion matrix (rows = true) of class ids ``preds`` and ``target`` (any shape)."""
    p = (
        np.asarray(preds.detach().cpu() if isinstance(preds, torch.Tensor) else preds)
        .ravel()
        .astype(np.int64)
    )
    t = (
        np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target)
        .ravel()
        .astype(np.int64)
    )
    if p.shape != t.shape:
        raise ValueError(f"predictions ({p.size}) and targets ({t.size}) differ in size")
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    for name, v in (("predicted", p), ("true", t)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} class ids must lie in [0, {num_classes}), got [{v.min()}, {v.max()}]")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def per_class_accuracy(cm: Any) -> np.ndarray:
    """``(K,)`` accuracy of each true class (NaN for a class without samples)."""
    a = _cm(cm)
    support = a.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(a) / np.where(support > 0, support, 1), np.nan)


def overall_accuracy(cm: Any) -> float:
    """OA: correctly classified samples / all samples (NaN for an empty matrix)."""
    a = _cm(cm)
    total = a.sum()
    return float(np.trace(a) / total) if total > 0 else float("nan")


def average_accuracy(cm: Any) -> float:
    """AA: mean per-class accuracy over the classes that have samples."""
    acc = per_class_accuracy(cm)
    return float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")


def kappa(cm: Any) -> float:
    """Cohen's Kappa (1 = perfect, 0 = chance agreement; 1.0 when chance agreement is already total)."""
    a = _cm(cm)
    total = a.sum()
    if total == 0:
        return float("nan")
    po = np.trace(a) / total
    pe = float((a.sum(axis=0) * a.sum(axis=1)).sum() / total**2)
    return 1.0 if pe == 1.0 else float((po - pe) / (1.0 - pe))


def classification_scores(cm: Any, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """``{"OA", "AA", "Kappa", "per_class": {name: accuracy}}`` (fractions, not percent)."""
    a = _cm(cm)
    names = list(class_names) if class_names is not None else [str(i) for i in range(a.shape[0])]
    if len(names) != a.shape[0]:
        raise ValueError(f"{len(names)} class names for a {a.shape[0]}-class confusion matrix")
    acc = per_class_accuracy(a)
    return {
        "OA": overall_accuracy(a),
        "AA": average_accuracy(a),
        "Kappa": kappa(a),
        "per_class": {n: float(v) for n, v in zip(names, acc)},
    }
