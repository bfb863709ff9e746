"""Pixel-classification scores of the MS + PAN literature (ADCD-Net): OA, AA, Kappa, per-class accuracy.

All of them come from the shared confusion core (``geomamba.metrics.confusion.scores_from_confusion``,
rows = true class, columns = predicted class); this module only names them as the classification
literature does:

* per-class accuracy (producer's accuracy) = the core's per-class ``Acc`` (= ``Recall``), NaN for a class
  without samples;
* OA = the core's ``OA``; Cohen's Kappa = the core's ``Kappa`` (NaN when undefined: no samples, or chance
  agreement already total);
* AA = the mean per-class accuracy over the classes with samples = the core's ``mRecall``.

``pixel_classification_scores`` is the core's scores dict with ``"AA"`` added (what the engine's
classification task logs and tabulates); ``classification_scores`` the compact form
``{"OA", "AA", "Kappa", "per_class": {name: accuracy}}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from geomamba.metrics.confusion import confusion_matrix, scores_from_confusion

__all__ = [
    "average_accuracy",
    "classification_scores",
    "confusion_from_predictions",
    "kappa",
    "overall_accuracy",
    "per_class_accuracy",
    "pixel_classification_scores",
]


def pixel_classification_scores(cm: Any, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """``scores_from_confusion(cm, class_names)`` plus ``"AA"`` (average accuracy = ``mRecall``)."""
    scores = scores_from_confusion(_as_matrix(cm), class_names)
    scores["AA"] = scores["mRecall"]
    return scores


def _as_matrix(cm: Any) -> torch.Tensor | np.ndarray:
    return cm if isinstance(cm, (torch.Tensor, np.ndarray)) else np.asarray(cm)


def confusion_from_predictions(
    preds: Any, target: Any, num_classes: int, *, ignore_index: int | None = None
) -> np.ndarray:
    """``(K, K)`` int64 confusion matrix (rows = true) of class ids ``preds`` and ``target`` (any shape,
    tensors or arrays), by the core's ``confusion_matrix``; a true class id outside ``[0, K)`` that is
    not ``ignore_index`` is an error."""
    p, t = torch.as_tensor(np.asarray(preds)).long(), torch.as_tensor(np.asarray(target)).long()
    if p.shape != t.shape:
        raise ValueError(f"predictions ({p.numel()}) and targets ({t.numel()}) differ in size")
    bad = (t < 0) | (t >= num_classes)
    if ignore_index is not None:
        bad &= t != ignore_index
    if bad.any():
        raise ValueError(
            f"true class ids must lie in [0, {num_classes}), got {sorted(set(t[bad].tolist()))[:5]}"
        )
    return confusion_matrix(p, t, num_classes, ignore_index).numpy()


def per_class_accuracy(cm: Any) -> np.ndarray:
    """``(K,)`` accuracy of each true class (NaN for a class without samples)."""
    per_class = scores_from_confusion(_as_matrix(cm))["per_class"]
    return np.array([v["Acc"] for v in per_class.values()], dtype=np.float64)


def overall_accuracy(cm: Any) -> float:
    """OA: correctly classified samples / all samples (NaN for an empty matrix)."""
    return float(scores_from_confusion(_as_matrix(cm))["OA"])


def average_accuracy(cm: Any) -> float:
    """AA: mean per-class accuracy over the classes that have samples."""
    return float(pixel_classification_scores(cm)["AA"])


def kappa(cm: Any) -> float:
    """Cohen's Kappa (1 = perfect, 0 = chance agreement; NaN when undefined)."""
    return float(scores_from_confusion(_as_matrix(cm))["Kappa"])


def classification_scores(cm: Any, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """``{"OA", "AA", "Kappa", "per_class": {name: accuracy}}`` (fractions, not percent)."""
    scores = pixel_classification_scores(cm, class_names)
    return {
        "OA": scores["OA"],
        "AA": scores["AA"],
        "Kappa": scores["Kappa"],
        "per_class": {n: v["Acc"] for n, v in scores["per_class"].items()},
    }
