"""Synthetic segmentation scenes with the six ISPRS classes, in the segmentation layout (deterministic).

A scene is a patch of land seen from above: grass (low vegetation) with bare-soil patches (clutter), tree
clumps, straight roads and paved yards (impervious surfaces), rectangular buildings with roofs of several
colours casting shadows (a shadow keeps the class of the ground it falls on, as in the ISPRS labels), and
cars on the roads. Class ids follow ``geomamba.data.seg_labels.ISPRS_CLASSES``.

``generate_segmentation_dataset(root)`` writes ``root/{train,val,test}/{images,labels}/<name>.<fmt>``, with
class-id labels (``labels="ids"``; ``reduce_zero_label=True`` writes ids + 1 with 0 = no-data, as LoveDA)
or ISPRS RGB-coded labels (``labels="rgb"``), which every part of geomamba reads like a real dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geomamba.data.io import write_raster
from geomamba.data.seg_labels import ISPRS_PALETTE
from geomamba.data.synthetic import _GRASS, _ROAD, _ROOFS, _SOIL, _TREES, _bands, _paint, _smooth_noise

__all__ = ["generate_segmentation_dataset", "make_segmentation_scene"]

IMPERVIOUS, BUILDING, LOW_VEGETATION, TREE, CAR, CLUTTER = range(6)
_PAVED = np.array([0.62, 0.61, 0.60], np.float32)


def make_segmentation_scene(
    rng: np.random.Generator, size: int = 128, bands: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """One scene: image ``(bands, size, size)`` float32 in [0, 1] and class ids ``(size, size)`` uint8."""
    if size < 32:
        raise ValueError(f"scene size must be >= 32 pixels, got {size}")
    area = (size / 128.0) ** 2
    texture = _smooth_noise(rng, size, 3) - 0.5
    img = np.empty((3, size, size), np.float32)
    img[:] = (_GRASS * rng.uniform(0.9, 1.1))[:, None, None]
    img += 0.08 * texture[None]
    ids = np.full((size, size), LOW_VEGETATION, np.uint8)
    soil = _smooth_noise(rng, size, 24)
    bare = soil > np.quantile(soil, 0.88)
    _paint(img, bare, _SOIL)
    ids[bare] = CLUTTER
    tree_f = _smooth_noise(rng, size, 16)
    trees = tree_f > np.quantile(tree_f, 0.8)
    img[:, trees] = _TREES[:, None] * (1 + 0.6 * texture[trees])[None]
    ids[trees] = TREE
    road = np.zeros((size, size), bool)
    for _ in range(max(1, round(rng.integers(1, 3) * size / 128.0))):
        width = int(rng.integers(4, 9))
        pos = int(rng.integers(width, size - width))
        if rng.random() < 0.5:
            road[pos : pos + width] = True
        else:
            road[:, pos : pos + width] = True
    _paint(img, road, _ROAD)
    ids[road] = IMPERVIOUS
    occupied = road.copy()
    sun = rng.choice([-1, 1], size=2) * 2
    for _ in range(max(2, round(26 * area))):
        h, w = int(rng.integers(8, 22)), int(rng.integers(8, 22))
        y, x = int(rng.integers(3, size - h - 3)), int(rng.integers(3, size - w - 3))
        if occupied[y - 3 : y + h + 3, x - 3 : x + w + 3].any():
            continue
        occupied[y - 3 : y + h + 3, x - 3 : x + w + 3] = True
        if rng.random() < 0.4:  # a paved yard around the building
            yard = np.zeros_like(road)
            yard[y - 3 : y + h + 3, x - 3 : x + w + 3] = True
            _paint(img, yard, _PAVED)
            ids[yard] = IMPERVIOUS
        fp = np.zeros_like(road)
        fp[y : y + h, x : x + w] = True
        shadow = np.roll(np.roll(fp, sun[0], 0), sun[1], 1) & ~fp
        img[:, shadow] *= 0.45
        roof = _ROOFS[rng.integers(len(_ROOFS))] * rng.uniform(0.9, 1.1)
        _paint(img, fp, roof.astype(np.float32))
        img[:, y + h // 2, x : x + w] *= 0.85  # ridge line
        ids[fp] = BUILDING
    ys, xs = np.nonzero(road)
    for _ in range(max(1, round(rng.integers(3, 9) * size / 128.0))):
        if not len(ys):
            break
        i = int(rng.integers(len(ys)))
        car = np.zeros_like(road)
        car[ys[i] : ys[i] + 2, xs[i] : xs[i] + 4] = True
        car &= road
        _paint(img, car, rng.uniform(0.1, 0.95, 3).astype(np.float32))
        ids[car] = CAR
    img = img * rng.uniform(0.85, 1.15) + rng.normal(0, 0.015, img.shape).astype(np.float32)
    img = _bands(np.clip(img, 0, 1), trees | (ids == LOW_VEGETATION), bands)
    return np.clip(img, 0, 1).astype(np.float32), ids


def generate_segmentation_dataset(
    root: str | Path,
    *,
    splits: dict[str, int] | None = None,
    size: int = 128,
    bands: int = 3,
    seed: int = 0,
    labels: str = "ids",
    reduce_zero_label: bool = False,
    fmt: str = "png",
) -> Path:
    """Write ``root/{split}/{images,labels}/<split>_<i>.<fmt>``; returns ``root``.

    Args:
        splits: images per split, default ``{"train": 16, "val": 4, "test": 4}``.
        size: tile side; bands: 3 (RGB) or more (4th = near-infrared).
        seed: the same seed writes the same files.
        labels: ``"ids"`` (single-band class ids) or ``"rgb"`` (ISPRS colours).
        reduce_zero_label: ``"ids"`` only: write ids + 1 (0 = no-data, none here), LoveDA style.
        fmt: ``"png"`` or ``"tif"``.
    """
    if labels not in ("ids", "rgb"):
        raise ValueError(f"labels must be 'ids' or 'rgb', got {labels!r}")
    if fmt not in ("png", "tif"):
        raise ValueError(f"fmt must be 'png' or 'tif', got {fmt!r}")
    splits = splits if splits is not None else {"train": 16, "val": 4, "test": 4}
    root = Path(root)
    palette = np.array(ISPRS_PALETTE, np.uint8)
    for k, (split, n) in enumerate(splits.items()):
        for i in range(n):
            image, ids = make_segmentation_scene(np.random.default_rng([seed, 100 + k, i]), size, bands)
            name = f"{split}_{i:04d}.{fmt}"
            write_raster(root / split / "images" / name, np.round(image * 255).astype(np.uint8))
            if labels == "rgb":
                label = palette[ids].transpose(2, 0, 1)
            else:
                label = ids + 1 if reduce_zero_label else ids
            write_raster(root / split / "labels" / name, np.ascontiguousarray(label, np.uint8))
    return root
