"""The change-detection dataset: files -> ``{"image": (2, C, H, W) float32, "mask": (H, W) int64, "name"}``.

Pixel values are normalised per band as ``(x - mean) / std`` with ``mean``/``std`` in the file's units
(computed by ``geomamba stats`` or at the start of training); without statistics they are scaled by the
dtype's range (uint8 /255, uint16 /65535) and float images are left as they are.

For training, ``crop_size`` makes each item one random window of the pair (GeoTIFFs are read window by
window; PNG/JPG are decoded whole and cut), so that converting and augmenting costs what the crop costs;
``cache`` keeps the decoded images in memory (read once, by several threads, when the dataset is built),
so that the loader workers (forked processes share the arrays) only cut and augment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset

from geomamba.data.errors import DataError
from geomamba.data.io import Window, raster_info, read_raster
from geomamba.data.labels import IGNORE_INDEX, LabelMapping
from geomamba.data.layout import Sample
from geomamba.data.transforms import BitemporalTransform

__all__ = ["ChangeDetectionDataset", "normalise_image", "scale_for_dtype"]

log = logging.getLogger("geomamba.data")


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
        crop_size: side of the random window read per item (training; None: whole images). Images
            smaller than it are read whole (the transform pads them).
        cache: read every image and label once, when the dataset is built, and keep them in memory
            (file dtype; labels as uint8 class ids).
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
        crop_size: int | None = None,
        cache: bool = False,
    ) -> None:
        if (mean is None) != (std is None):
            raise DataError("data.mean and data.std must be given together")
        if std is not None and any(s <= 0 for s in std):
            raise DataError(f"data.std must be positive, got {list(std)}")
        if repeats < 1:
            raise DataError(f"repeats must be >= 1, got {repeats}")
        if crop_size is not None and crop_size < 1:
            raise DataError(f"crop_size must be >= 1, got {crop_size}")
        self.samples = list(samples)
        self.mapping = mapping or LabelMapping()
        self.bands = list(bands) if bands is not None else None
        self.mean = np.asarray(mean, np.float32) if mean is not None else None
        self.std = np.asarray(std, np.float32) if std is not None else None
        self.value_scale = value_scale
        self.transform = transform
        self.repeats = repeats
        self.crop_size = crop_size
        self.has_labels = bool(self.samples) and all(s.label is not None for s in self.samples)
        self.cache: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] | None = None
        if cache and self.samples:
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                self.cache = list(pool.map(self._read, self.samples))
            size = sum(x.nbytes for item in self.cache for x in item if x is not None)
            log.info("cached %d image pairs in memory (%.2f GB)", len(self.cache), size / 1e9)

    def __len__(self) -> int:
        return len(self.samples) * self.repeats

    def _read(
        self, sample: Sample, window: Window | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Dates ``(C, h, w)`` in the file dtype and the uint8 class-id mask (or None) of ``window``."""
        a = read_raster(sample.a, window, bands=self.bands)
        b = read_raster(sample.b, window, bands=self.bands)
        if window is None and a.shape != b.shape:
            raise DataError(f"{sample.b}: shape {b.shape} differs from {sample.a} {a.shape}")
        mask = None
        if self.has_labels:
            mask = self.mapping.apply(read_raster(sample.label, window), sample.label).astype(np.uint8)
            if mask.shape != a.shape[1:]:
                raise DataError(f"{sample.label}: size {mask.shape} differs from {sample.a} {a.shape[1:]}")
        return a, b, mask

    def _window(self, index: int, sample: Sample) -> Window | None:
        """A random ``crop_size`` window of the sample (None: the whole image)."""
        if self.crop_size is None:
            return None
        if self.cache is not None:
            h, w = self.cache[index][0].shape[1:]
        else:
            h, w = raster_info(sample.a).size
            for path in (sample.b, sample.label):
                if path is not None and raster_info(path).size != (h, w):
                    raise DataError(f"{path}: size {raster_info(path).size} differs from {sample.a} {(h, w)}")
        if h <= self.crop_size and w <= self.crop_size:
            return None
        ch, cw = min(self.crop_size, h), min(self.crop_size, w)
        r = int(torch.randint(0, h - ch + 1, ()).item())
        c = int(torch.randint(0, w - cw + 1, ()).item())
        return r, c, ch, cw

    def __getitem__(self, index: int) -> dict:
        i = index % len(self.samples)
        sample = self.samples[i]
        window = self._window(i, sample)
        if self.cache is None:
            a, b, mask = self._read(sample, window)
        else:
            a, b, mask = self.cache[i]
            if window is not None:
                r, c, h, w = window
                a, b = a[:, r : r + h, c : c + w], b[:, r : r + h, c : c + w]
                mask = mask[r : r + h, c : c + w] if mask is not None else None
        dtype = a.dtype
        scale = self.value_scale if self.value_scale is not None else scale_for_dtype(dtype)
        a = a.transpose(1, 2, 0).astype(np.float32)
        b = b.transpose(1, 2, 0).astype(np.float32)
        if scale is not None:
            a, b = a / np.float32(scale), b / np.float32(scale)
        if mask is None:
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
