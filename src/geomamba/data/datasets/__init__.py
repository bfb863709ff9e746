"""Datasets: one module per task (``change``, ``segmentation``)."""

from geomamba.data.datasets.change import ChangeDetectionDataset, normalise_image, scale_for_dtype
from geomamba.data.datasets.segmentation import SegmentationDataset

__all__ = ["ChangeDetectionDataset", "SegmentationDataset", "normalise_image", "scale_for_dtype"]
