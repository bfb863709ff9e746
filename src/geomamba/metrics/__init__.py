"""Metrics: one accumulated confusion matrix and pure functions of it (``geomamba.metrics.confusion``),
and Boundary IoU (``geomamba.metrics.boundary_iou``)."""

from geomamba.metrics.boundary_iou import BoundaryIoU, boundary_iou_counts, boundary_iou_scores
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
    "BoundaryIoU",
    "ConfusionMatrix",
    "boundary_iou_counts",
    "boundary_iou_scores",
    "confusion_matrix",
    "find_collapsed_classes",
    "flatten_scores",
    "format_table",
    "scores_from_confusion",
    "warn_collapsed_classes",
]
