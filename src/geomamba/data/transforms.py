"""Bitemporal augmentation with albumentations.

Geometric transforms (random crop, flips, 90° rotations) are drawn once and applied to date A, date B
and the mask alike (``additional_targets``). Photometric transforms (brightness/contrast) are drawn per
date, on images scaled to [0, 1] by their value range. A date swap exchanges A and B.

Randomness comes from the torch generator of the calling process (seeded by Lightning per worker), so
that a run is reproducible from its seed.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from geomamba.data.labels import IGNORE_INDEX

__all__ = ["BitemporalTransform", "SegmentationTransform"]


def _geometric(crop_size: int | None, hflip: float, vflip: float, rotate90: float, ignore_index: int) -> list:
    """Random crop (padding smaller images, mask with ``ignore_index``), flips and 90° rotations."""
    ops: list = []
    if crop_size:
        ops.append(
            A.RandomCrop(
                crop_size,
                crop_size,
                pad_if_needed=True,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0.0,
                fill_mask=float(ignore_index),
            )
        )
    if hflip > 0:
        ops.append(A.HorizontalFlip(p=hflip))
    if vflip > 0:
        ops.append(A.VerticalFlip(p=vflip))
    if rotate90 > 0:
        ops.append(A.RandomRotate90(p=rotate90))
    return ops


def _photometric(brightness: float, contrast: float, p: float) -> A.Compose | None:
    """Brightness/contrast jitter on images scaled to [0, 1] (None when disabled)."""
    if p <= 0 or (brightness <= 0 and contrast <= 0):
        return None
    return A.Compose(
        [
            A.RandomBrightnessContrast(
                brightness_limit=brightness, contrast_limit=contrast, brightness_by_max=False, p=p
            )
        ]
    )


class BitemporalTransform:
    """Training augmentation of one bitemporal sample.

    Call with ``a``, ``b`` of shape ``(H, W, C)`` float32 scaled to [0, 1] (or ``photometric=False``) and
    ``mask`` ``(H, W)`` uint8; returns the three transformed arrays (crop size ``(S, S)`` when cropping).

    Args:
        crop_size: side of the random crop (None: no crop). Smaller images are padded (mask: ignore).
        hflip, vflip, rotate90: probabilities of a horizontal flip, vertical flip, random 90° rotation.
        date_swap: probability of exchanging the two dates.
        brightness, contrast: limits of the per-date brightness/contrast jitter (0 disables).
        photometric_p: probability of the jitter for each date.
        ignore_index: mask value of padded pixels.
    """

    def __init__(
        self,
        *,
        crop_size: int | None = None,
        hflip: float = 0.5,
        vflip: float = 0.5,
        rotate90: float = 0.5,
        date_swap: float = 0.0,
        brightness: float = 0.1,
        contrast: float = 0.1,
        photometric_p: float = 0.5,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.geometric = A.Compose(
            _geometric(crop_size, hflip, vflip, rotate90, ignore_index),
            additional_targets={"image_b": "image"},
        )
        self.photometric = _photometric(brightness, contrast, photometric_p)
        self.date_swap = date_swap

    def __call__(
        self, a: np.ndarray, b: np.ndarray, mask: np.ndarray, *, photometric: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        self.geometric.set_random_seed(seed)
        out = self.geometric(image=a, image_b=b, mask=mask)
        a, b, mask = out["image"], out["image_b"], out["mask"]
        if photometric and self.photometric is not None:
            self.photometric.set_random_seed(seed + 1)
            a = self.photometric(image=a)["image"]
            b = self.photometric(image=b)["image"]
        if self.date_swap > 0 and torch.rand(()).item() < self.date_swap:
            a, b = b, a
        return a, b, mask


class SegmentationTransform:
    """Training augmentation of one image and its mask (the geometric and photometric transforms of
    ``BitemporalTransform``, for a single date).

    Call with ``image`` ``(H, W, C)`` float32 scaled to [0, 1] (or ``photometric=False``) and ``mask``
    ``(H, W)`` uint8; returns both transformed (crop size ``(S, S)`` when cropping; smaller images are
    padded, the mask with ``ignore_index``).

    Args:
        crop_size, hflip, vflip, rotate90, brightness, contrast, photometric_p, ignore_index: as in
            ``BitemporalTransform``.
    """

    def __init__(
        self,
        *,
        crop_size: int | None = None,
        hflip: float = 0.5,
        vflip: float = 0.5,
        rotate90: float = 0.5,
        brightness: float = 0.1,
        contrast: float = 0.1,
        photometric_p: float = 0.5,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.geometric = A.Compose(_geometric(crop_size, hflip, vflip, rotate90, ignore_index))
        self.photometric = _photometric(brightness, contrast, photometric_p)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, *, photometric: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        self.geometric.set_random_seed(seed)
        out = self.geometric(image=image, mask=mask)
        image, mask = out["image"], out["mask"]
        if photometric and self.photometric is not None:
            self.photometric.set_random_seed(seed + 1)
            image = self.photometric(image=image)["image"]
        return image, mask
