"""The semantic-segmentation dataset: files -> ``{"image": (C, H, W) float32, "mask": (H, W) int64, "name"}``.

Large tiles (ISPRS: 6000x6000) are never read whole for training: each item reads one random window of
``crop_size`` pixels (GeoTIFFs window by window; PNG/JPG are decoded whole and cut), so several crops of a
tile per epoch (``repeats``) cost what the crops cost. For evaluation an image is one item, or, with
``tile``, a grid of ``tile`` x ``tile`` items (the last row/column narrower), so that memory stays bounded
on huge tiles. Normalisation and photometric augmentation work as in the change-detection dataset
(``geomamba.data.datasets.change``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from geomamba.data.datasets.change import normalise_image, scale_for_dtype
from geomamba.data.errors import DataError
from geomamba.data.io import raster_info, read_raster
from geomamba.data.labels import IGNORE_INDEX
from geomamba.data.seg_labels import SegmentationLabels
from geomamba.data.segmentation import SegmentationSample
from geomamba.data.transforms import SegmentationTransform

__all__ = ["SegmentationDataset"]

Window = tuple[int, int, int, int]


class SegmentationDataset(Dataset):
    """Images and class-id masks read from files.

    Item: ``{"image": (C, H, W) float32, "mask": (H, W) int64 in {0..K-1, 255 = ignore}, "name": str}``
    (no ``"mask"`` when the samples have no labels). Evaluation tiles are named ``<name>_r<row>_c<col>``.

    Args:
        samples: from ``geomamba.data.segmentation.discover_segmentation_split`` (validated beforehand).
        labels: the label rule (values/colours -> class ids).
        bands: 1-based band numbers to use (default all).
        mean, std: per-band statistics in file units, or None (scaled by the dtype's range).
        value_scale: range used to scale images to [0, 1] for photometric augmentation (default by dtype).
        transform: augmentation (None at evaluation).
        crop_size: side of the random window read per item (training; None: whole images).
        repeats: items per image per epoch (several random windows of large tiles).
        tile: evaluation grid tile side (None: whole images); not with ``crop_size``.
    """

    def __init__(
        self,
        samples: Sequence[SegmentationSample],
        *,
        labels: SegmentationLabels,
        bands: Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        value_scale: float | None = None,
        transform: SegmentationTransform | None = None,
        crop_size: int | None = None,
        repeats: int = 1,
        tile: int | None = None,
    ) -> None:
        if (mean is None) != (std is None):
            raise DataError("data.mean and data.std must be given together")
        if std is not None and any(s <= 0 for s in std):
            raise DataError(f"data.std must be positive, got {list(std)}")
        if repeats < 1:
            raise DataError(f"repeats must be >= 1, got {repeats}")
        if crop_size is not None and tile is not None:
            raise DataError(
                "a segmentation dataset takes crop_size (training) or tile (evaluation), not both"
            )
        self.samples = list(samples)
        self.labels = labels
        self.bands = list(bands) if bands is not None else None
        self.mean = np.asarray(mean, np.float32) if mean is not None else None
        self.std = np.asarray(std, np.float32) if std is not None else None
        self.value_scale = value_scale
        self.transform = transform
        self.crop_size = crop_size
        self.repeats = repeats
        self.has_labels = bool(self.samples) and all(s.label is not None for s in self.samples)
        # (sample index, window or None) per item
        self.items: list[tuple[int, Window | None]] = []
        for i, s in enumerate(self.samples):
            if tile is None:
                self.items.append((i, None))
                continue
            h, w = raster_info(s.image).size
            self.items.extend(
                (i, (r, c, min(tile, h - r), min(tile, w - c)))
                for r in range(0, h, tile)
                for c in range(0, w, tile)
            )

    def __len__(self) -> int:
        return len(self.items) * self.repeats

    def _random_window(self, sample: SegmentationSample) -> Window:
        assert self.crop_size is not None
        h, w = raster_info(sample.image).size
        ch, cw = min(self.crop_size, h), min(self.crop_size, w)
        r = int(torch.randint(0, h - ch + 1, ()).item())
        c = int(torch.randint(0, w - cw + 1, ()).item())
        return r, c, ch, cw

    def __getitem__(self, index: int) -> dict:
        sample_index, window = self.items[index % len(self.items)]
        sample = self.samples[sample_index]
        name = sample.name
        if window is not None:
            name = f"{name}_r{window[0]}_c{window[1]}"
        elif self.crop_size is not None:
            window = self._random_window(sample)
        x = read_raster(sample.image, window, bands=self.bands)
        dtype = x.dtype
        if dtype.kind == "f" and not np.isfinite(x).all():
            raise DataError(f"{sample.image}: NaN/inf pixel values (window {window})")
        if self.has_labels:
            assert sample.label is not None
            if window is None and raster_info(sample.label).size != x.shape[1:]:
                raise DataError(f"{sample.label}: size differs from {sample.image} {tuple(x.shape[1:])}")
            mask = self.labels.apply(read_raster(sample.label, window), sample.label)
        else:
            mask = np.full(x.shape[1:], IGNORE_INDEX, np.uint8)
        if self.transform is not None:
            scale = self.value_scale if self.value_scale is not None else scale_for_dtype(dtype)
            img = x.transpose(1, 2, 0).astype(np.float32)
            if scale is not None:
                img = img / np.float32(scale)
            img, mask = self.transform(img, mask, photometric=scale is not None)
            x = img.transpose(2, 0, 1)
            if scale is not None:  # back to file units
                x = x * np.float32(scale)
        image = normalise_image(x, mean=self.mean, std=self.std, source_dtype=dtype, path=sample.image)
        item = {"image": torch.from_numpy(np.ascontiguousarray(image)), "name": name}
        if self.has_labels:
            item["mask"] = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
        return item
