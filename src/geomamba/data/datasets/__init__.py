"""Datasets: one module per task (``change``; segmentation datasets live next to it)."""

from geomamba.data.datasets.change import ChangeDetectionDataset, normalise_image, scale_for_dtype

__all__ = ["ChangeDetectionDataset", "normalise_image", "scale_for_dtype"]
