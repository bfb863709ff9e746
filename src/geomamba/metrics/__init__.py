"""Metrics: one accumulated confusion matrix and pure functions of it (``geomamba.metrics.confusion``)."""

from geomamba.metrics.confusion import (
    ConfusionMatrix,
    confusion_matrix,
    find_collapsed_classes,
    flatten_scores,
    format_table,
    scores_from_confusion,
    warn_collapsed_classes,
)

__all__ = [
    "ConfusionMatrix",
    "confusion_matrix",
    "find_collapsed_classes",
    "flatten_scores",
    "format_table",
    "scores_from_confusion",
    "warn_collapsed_classes",
]
