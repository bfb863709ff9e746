"""Synthetic bitemporal scenes in the standard change-detection layout (deterministic by seed).

A scene is a patch of land seen twice: bare soil and grass from smooth noise, tree/field patches, straight
roads with cars, and rectangular buildings with roofs of several colours and sun shadows. Between the
dates some buildings are built and some are demolished (left as bare construction ground): the label is
the union of their footprints, LEVIR-CD style (0/255, or 0/1). Date B also differs by things that are
*not* changes: season (vegetation colour), illumination (gain, offset, gamma, colour cast), sensor noise,
moved cars, and a small sub-pixel misregistration. With 4 or more bands the 4th is near-infrared.

``generate_dataset(root)`` writes ``root/{train,val,test}/{A,B,label}/<name>.png`` (or ``.tif`` with a
georeference), which every other part of geomamba reads like a real dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from geomamba.data.io import write_raster

__all__ = ["Scene", "generate_dataset", "make_scene"]

_ROOFS = np.array(
    [
        [0.62, 0.30, 0.24],  # red tiles
        [0.72, 0.72, 0.70],  # concrete
        [0.85, 0.85, 0.88],  # white metal
        [0.35, 0.45, 0.62],  # blue metal
        [0.50, 0.42, 0.38],  # brown
    ],
    np.float32,
)
_SOIL = np.array([0.56, 0.48, 0.38], np.float32)
_GRASS = np.array([0.36, 0.46, 0.26], np.float32)
_TREES = np.array([0.16, 0.30, 0.14], np.float32)
_ROAD = np.array([0.46, 0.46, 0.47], np.float32)
_SITE = np.array([0.66, 0.58, 0.46], np.float32)  # bare construction ground


@dataclass
class Scene:
    """Two dates ``(C, H, W)`` float32 in [0, 1] and the change mask ``(H, W)`` bool."""

    a: np.ndarray
    b: np.ndarray
    change: np.ndarray


def _smooth_noise(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
    n = max(2, size // cell + 2)
    coarse = torch.from_numpy(rng.random((1, 1, n, n), dtype=np.float32))
    fine = F.interpolate(coarse, size=(size + 2 * cell, size + 2 * cell), mode="bicubic", align_corners=False)
    return fine[0, 0, cell : cell + size, cell : cell + size].numpy()


def _shift(img: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Sub-pixel shift of a ``(C, H, W)`` image (bilinear, edges replicated)."""
    _, h, w = img.shape
    ys = np.clip(np.arange(h, dtype=np.float32) - dy, 0, h - 1)
    xs = np.clip(np.arange(w, dtype=np.float32) - dx, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = img[:, y0][:, :, x0] * (1 - fx) + img[:, y0][:, :, x1] * fx
    bot = img[:, y1][:, :, x0] * (1 - fx) + img[:, y1][:, :, x1] * fx
    return top * (1 - fy) + bot * fy


def _paint(img: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    img[:, mask] = colour[:, None]


def make_scene(rng: np.random.Generator, size: int = 128, bands: int = 3) -> Scene:
    """One bitemporal scene of ``size`` x ``size`` pixels with ``bands`` bands (>= 1)."""
    if size < 32:
        raise ValueError(f"scene size must be >= 32 pixels, got {size}")
    # Object sizes in pixels are fixed (one ground resolution); object counts grow with the area.
    area = (size / 128.0) ** 2
    # Ground: soil/grass mixture, tree patches.
    grass_w = _smooth_noise(rng, size, 32)
    tree_f = _smooth_noise(rng, size, 20)
    trees = tree_f > np.quantile(tree_f, 0.8)
    texture = _smooth_noise(rng, size, 3) - 0.5

    def ground(season: float) -> np.ndarray:
        grass = _GRASS + season * np.array([0.14, 0.04, 0.0], np.float32)  # yellower in the dry season
        tree = _TREES + season * np.array([0.10, 0.05, 0.02], np.float32)
        img = _SOIL[:, None, None] * (1 - grass_w) + grass[:, None, None] * grass_w
        img = img + 0.06 * texture[None]
        img[:, trees] = tree[:, None] * (1 + 0.5 * texture[trees])[None]
        return img.astype(np.float32)

    # Roads (present at both dates).
    road = np.zeros((size, size), bool)
    for _ in range(max(1, round(rng.integers(1, 3) * size / 128.0))):
        width = int(rng.integers(3, 7))
        pos = int(rng.integers(width, size - width))
        if rng.random() < 0.5:
            road[pos : pos + width] = True
        else:
            road[:, pos : pos + width] = True
    # Buildings: persistent, built (only in B), demolished (only in A).
    occupied = road.copy()
    buildings = []
    for _ in range(max(2, round(34 * area))):
        h = int(rng.integers(6, 18))
        w = int(rng.integers(6, 18))
        y, x = int(rng.integers(2, size - h - 2)), int(rng.integers(2, size - w - 2))
        pad = 2
        if occupied[max(0, y - pad) : y + h + pad, max(0, x - pad) : x + w + pad].any():
            continue
        occupied[max(0, y - pad) : y + h + pad, max(0, x - pad) : x + w + pad] = True
        kind = rng.choice(["keep", "new", "gone"], p=[0.55, 0.3, 0.15])
        buildings.append((y, x, h, w, kind, _ROOFS[rng.integers(len(_ROOFS))] * rng.uniform(0.9, 1.1)))
    sun = rng.choice([-1, 1], size=2) * 2

    def draw(img: np.ndarray, date: str) -> np.ndarray:
        _paint(img, road, _ROAD)
        for _ in range(
            max(1, round(rng.integers(2, 8) * size / 128.0))
        ):  # cars move between the dates: not a change
            ys, xs = np.nonzero(road)
            if len(ys):
                i = int(rng.integers(len(ys)))
                car = np.zeros_like(road)
                car[ys[i] : ys[i] + 2, xs[i] : xs[i] + 3] = True
                _paint(img, car & road, rng.uniform(0.1, 0.95, 3).astype(np.float32))
        for y, x, h, w, kind, roof in buildings:
            fp = np.zeros((size, size), bool)
            fp[y : y + h, x : x + w] = True
            if (kind == "new" and date == "A") or (kind == "gone" and date == "B"):
                if kind == "gone":
                    _paint(img, fp, _SITE)
                continue
            shadow = np.roll(np.roll(fp, sun[0], 0), sun[1], 1) & ~fp
            img[:, shadow] *= 0.45
            _paint(img, fp, roof.astype(np.float32))
            ridge = np.zeros_like(fp)
            ridge[y + h // 2, x : x + w] = True  # a ridge line gives roofs some structure
            img[:, ridge] *= 0.85
        return img

    a = draw(ground(rng.uniform(0.0, 0.3)), "A")
    b = draw(ground(rng.uniform(0.4, 1.0)), "B")
    change = np.zeros((size, size), bool)
    for y, x, h, w, kind, _ in buildings:
        if kind != "keep":
            change[y : y + h, x : x + w] = True
    # Illumination, colour cast, misregistration and noise of date B; noise of date A.
    gain, offset, gamma = rng.uniform(0.8, 1.2), rng.uniform(-0.05, 0.05), rng.uniform(0.85, 1.15)
    cast = rng.uniform(0.95, 1.05, 3).astype(np.float32)[:, None, None]
    b = np.clip(b * gain * cast + offset, 0, 1) ** gamma
    b = _shift(b, *rng.uniform(-1.0, 1.0, 2))
    a = a + rng.normal(0, 0.015, a.shape).astype(np.float32)
    b = b + rng.normal(0, 0.015, b.shape).astype(np.float32)
    a, b = _bands(a, trees, bands), _bands(b, trees, bands)
    return Scene(np.clip(a, 0, 1).astype(np.float32), np.clip(b, 0, 1).astype(np.float32), change)


def _bands(rgb: np.ndarray, vegetation: np.ndarray, bands: int) -> np.ndarray:
    if bands == 3:
        return rgb
    if bands < 3:
        grey = rgb.mean(0, keepdims=True)
        return np.repeat(grey, bands, 0)
    green = rgb[1] - 0.5 * (rgb[0] + rgb[2])
    nir = np.clip(0.3 + 2.0 * green + 0.25 * vegetation, 0, 1)[None]
    extra = [rgb[i % 3 : i % 3 + 1] * 0.5 + nir * 0.5 for i in range(bands - 4)]
    return np.concatenate([rgb, nir, *extra], 0)


def generate_dataset(
    root: str | Path,
    *,
    splits: dict[str, int] | None = None,
    size: int = 128,
    bands: int = 3,
    seed: int = 0,
    fmt: str = "png",
    label_values: int = 255,
) -> Path:
    """Write a synthetic dataset ``root/{split}/{A,B,label}/<split>_<i>.<fmt>``; returns ``root``.

    Args:
        root: output folder (created).
        splits: images per split, default ``{"train": 32, "val": 8, "test": 8}``.
        size: tile side in pixels.
        bands: bands per date (3 = RGB, 4 = RGB + NIR; PNG supports 1, 3 or 4).
        seed: the same seed writes the same files.
        fmt: ``"png"`` or ``"tif"`` (GeoTIFF in UTM zone 50N, 0.5 m pixels, tiles side by side).
        label_values: value of changed pixels, 255 or 1.
    """
    if fmt not in ("png", "tif"):
        raise ValueError(f"fmt must be 'png' or 'tif', got {fmt!r}")
    if label_values not in (1, 255):
        raise ValueError(f"label_values must be 1 or 255, got {label_values}")
    splits = splits if splits is not None else {"train": 32, "val": 8, "test": 8}
    root = Path(root)
    for k, (split, n) in enumerate(splits.items()):
        for i in range(n):
            rng = np.random.default_rng([seed, k, i])
            scene = make_scene(rng, size, bands)
            name = f"{split}_{i:04d}.{fmt}"
            georef = {}
            if fmt == "tif":
                from affine import Affine
                from rasterio.crs import CRS

                x0, y0 = 500000.0 + i * size * 0.5, 4400000.0 - k * 1e4
                georef = {"crs": CRS.from_epsg(32650), "transform": Affine(0.5, 0.0, x0, 0.0, -0.5, y0)}
            for date, img in (("A", scene.a), ("B", scene.b)):
                write_raster(root / split / date / name, np.round(img * 255).astype(np.uint8), **georef)
            label = (scene.change * label_values).astype(np.uint8)
            write_raster(root / split / "label" / name, label, **georef)
    return root
