"""The change-detection dataset: files -> ``{"image": (2, C, H, W) float32, "mask": (H, W) int64, "name"}``.

Pixel values are normalised per band as ``(x - mean) / std`` with ``mean``/``std`` in the file's units
(computed by ``geomamba stats`` or at the start of training); without statistics they are scaled by the
dtype's range (uint8 /255, uint16 /65535) and float images are left as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from geomamba.data.errors import DataError
from geomamba.data.io import read_raster
from geomamba.data.labels import IGNORE_INDEX, LabelMapping
from geomamba.data.layout import Sample
from geomamba.data.transforms import BitemporalTransform

__all__ = ["ChangeDetectionDataset", "normalise_image", "scale_for_dtype"]


def normalise_image(
    image: np.ndarray,
    *,
    mean: Sequence[float] | np.ndarray | None,
    std: Sequence[float] | np.ndarray | None,
    source_dtype: np.dtype | str | None = None,
    path: object = "image",
) -> np.ndarray:
    """``(C, H, W)`` image in file units -> float32 ``(C, H, W)`` ready for a model.

    ``(x - mean) / std`` per band when statistics are given; otherwise images whose file dtype
    (``source_dtype``, default ``image.dtype``) is an integer type are divided by that type's range, and
    float images are returned as float32.
    """
    if mean is None or std is None:
        scale = scale_for_dtype(source_dtype if source_dtype is not None else image.dtype)
        x = image.astype(np.float32)
        return x / np.float32(scale) if scale is not None else x
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    if mean.shape[0] != image.shape[0] or std.shape[0] != image.shape[0]:
        raise DataError(
            f"{path}: {image.shape[0]} band(s) but data.mean/std have {mean.shape[0]}/{std.shape[0]} values"
        )
    return (image.astype(np.float32) - mean[:, None, None]) / std[:, None, None]


def scale_for_dtype(dtype: np.dtype) -> float | None:
    """Value range of an integer dtype (uint8 -> 255, uint16 -> 65535); None for floats."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        return float(np.iinfo(dtype).max)
    if dtype.kind == "b":
        return 1.0
    return None


class ChangeDetectionDataset(Dataset):
    """Bitemporal samples read from files.

    Item: ``{"image": (2, C, H, W) float32, "mask": (H, W) int64 in {0, 1, 255=ignore}, "name": str}``
    (no ``"mask"`` when the samples have no labels).

    Args:
        samples: from ``geomamba.data.layout.discover_split`` (validated beforehand).
        mapping: label value rule.
        bands: 1-based band numbers to use (default all).
        mean, std: per-band statistics in file units (length C), or None.
        value_scale: the value range used to scale images to [0, 1] for photometric augmentation
            (default: by dtype; float images get no photometric augmentation unless it is given).
        transform: augmentation (None at evaluation).
        repeats: how many times each sample appears per epoch (e.g. several random crops of large tiles).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        mapping: LabelMapping | None = None,
        bands: Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        value_scale: float | None = None,
        transform: BitemporalTransform | None = None,
        repeats: int = 1,
    ) -> None:
        if (mean is None) != (std is None):
            raise DataError("data.mean and data.std must be given together")
        if std is not None and any(s <= 0 for s in std):
            raise DataError(f"data.std must be positive, got {list(std)}")
        if repeats < 1:
            raise DataError(f"repeats must be >= 1, got {repeats}")
        self.samples = list(samples)
        self.mapping = mapping or LabelMapping()
        self.bands = list(bands) if bands is not None else None
        self.mean = np.asarray(mean, np.float32) if mean is not None else None
        self.std = np.asarray(std, np.float32) if std is not None else None
        self.value_scale = value_scale
        self.transform = transform
        self.repeats = repeats
        self.has_labels = bool(self.samples) and all(s.label is not None for s in self.samples)

    def __len__(self) -> int:
        return len(self.samples) * self.repeats

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index % len(self.samples)]
        a = read_raster(sample.a, bands=self.bands)
        b = read_raster(sample.b, bands=self.bands)
        if a.shape != b.shape:
            raise DataError(f"{sample.b}: shape {b.shape} differs from {sample.a} {a.shape}")
        dtype = a.dtype
        scale = self.value_scale if self.value_scale is not None else scale_for_dtype(dtype)
        a = a.transpose(1, 2, 0).astype(np.float32)
        b = b.transpose(1, 2, 0).astype(np.float32)
        if scale is not None:
            a, b = a / np.float32(scale), b / np.float32(scale)
        if self.has_labels:
            mask = self.mapping.apply(read_raster(sample.label), sample.label)
            if mask.shape != a.shape[:2]:
                raise DataError(f"{sample.label}: size {mask.shape} differs from {sample.a} {a.shape[:2]}")
            mask = mask.astype(np.uint8)
        else:
            mask = np.full(a.shape[:2], IGNORE_INDEX, np.uint8)
        if self.transform is not None:
            a, b, mask = self.transform(a, b, mask, photometric=scale is not None)
        dates = []
        for x, path in ((a, sample.a), (b, sample.b)):
            x = x.transpose(2, 0, 1)
            if scale is not None:  # back to file units
                x = x * np.float32(scale)
            dates.append(normalise_image(x, mean=self.mean, std=self.std, source_dtype=dtype, path=path))
        image = torch.from_numpy(np.stack(dates))
        item = {"image": image, "name": sample.name}
        if self.has_labels:
            item["mask"] = torch.from_numpy(mask.astype(np.int64))
        return item
