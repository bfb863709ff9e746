"""Prediction of any image size: sliding windows with overlap and blending, flip TTA, and large scenes
read and written window by window (bounded memory) into GeoTIFFs that keep image A's georeference.

Blending: every window's class probabilities are weighted by a map that is 1 inside the window and, on
each side that borders another window, 0 for the outer ``overlap // 4`` pixels and then rises linearly to 1
across the overlap. Weights of overlapping windows are normalised per pixel, so seams are smooth, and a
model whose receptive field reaches no more than ``overlap // 4`` pixels gives exactly the whole-image
result. Images smaller than a window, or not a multiple of ``pad_multiple``, are reflect-padded and the
output cropped back.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from geomamba.data.datasets import normalise_image
from geomamba.data.errors import DataError
from geomamba.data.io import RasterWriter, raster_info, read_raster
from geomamba.data.labels import IGNORE_INDEX, LabelMapping
from geomamba.metrics.confusion import confusion_matrix, scores_from_confusion
from geomamba.models.base import as_logits

__all__ = [
    "SceneResult",
    "make_predict_fn",
    "predict_scene",
    "sliding_window_probs",
    "window_starts",
]

PredictFn = Callable[[torch.Tensor], torch.Tensor]


def make_predict_fn(model: nn.Module, *, tta: bool = False) -> PredictFn:
    """``x (B, 2, C, H, W)`` (or ``(B, C, H, W)`` for one-image models) ``-> class probabilities
    (B, K, H, W)`` float32; ``tta`` averages over flips."""

    def probs(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(as_logits(model(x)).float(), dim=1)

    if not tta:
        return probs

    def probs_tta(x: torch.Tensor) -> torch.Tensor:
        out = probs(x)
        out = out + probs(x.flip(-1)).flip(-1)
        out = out + probs(x.flip(-2)).flip(-2)
        return out / 3

    return probs_tta


def window_starts(size: int, window: int, overlap: int) -> list[int]:
    """Start offsets of windows covering ``[0, size)`` with at least ``overlap`` pixels of overlap."""
    if size <= window:
        return [0]
    n = math.ceil((size - overlap) / (window - overlap))
    return sorted({round(v) for v in np.linspace(0, size - window, n)})


def _axis_weight(length: int, overlap: int, before: bool, after: bool) -> torch.Tensor:
    w = torch.ones(length)
    if overlap <= 0:
        return w
    m = overlap // 4
    ramp = torch.arange(1, overlap - 2 * m + 1, dtype=torch.float32) / (overlap - 2 * m + 1)
    edge = torch.cat([torch.zeros(m), ramp])
    if before:
        w[: len(edge)] = torch.minimum(w[: len(edge)], edge)
    if after:
        w[length - len(edge) :] = torch.minimum(w[length - len(edge) :], edge.flip(0))
    return w


def _pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad ``(..., C, H, W)`` at the bottom/right to ``(height, width)`` by reflection."""
    *lead, c, h, w = x.shape
    ph, pw = height - h, width - w
    if ph == 0 and pw == 0:
        return x
    flat = x.reshape(-1, c, h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(flat, (0, pw, 0, ph), mode=mode).reshape(*lead, c, height, width)


@torch.no_grad()
def sliding_window_probs(
    predict_fn: PredictFn,
    x: torch.Tensor,
    *,
    window: int | None = None,
    overlap: int = 64,
    pad_multiple: int = 32,
    window_batch: int = 1,
) -> torch.Tensor:
    """Class probabilities ``(B, K, H, W)`` of a bitemporal batch ``x (B, 2, C, H, W)`` (or of an image
    batch ``(B, C, H, W)`` for segmentation models).

    Args:
        predict_fn: from ``make_predict_fn``.
        window: window side (None: the whole image at once).
        overlap: pixels shared by neighbouring windows (< window / 2).
        pad_multiple: inputs are padded to a multiple of this (the model's total stride).
        window_batch: windows (times B images) per call of ``predict_fn``: up to ``max(1, window_batch // B)``
            windows of every image are stacked into one batch (the same probabilities, fewer and larger
            forward passes). The windows are split into equal chunks (the last one padded with a repeated
            window), so every call has the same shape: a compiled model is compiled once.
    """
    if not (x.dim() == 4 or (x.dim() == 5 and x.shape[1] == 2)):
        raise ValueError(
            f"expected a bitemporal batch (B, 2, C, H, W) or an image batch (B, C, H, W), got {tuple(x.shape)}"
        )
    h, w = x.shape[-2:]

    def up(v: int) -> int:
        return math.ceil(v / pad_multiple) * pad_multiple

    if window is None or (h <= window and w <= window):
        return predict_fn(_pad_to(x, up(h), up(w)))[..., :h, :w]
    if window_batch < 1:
        raise ValueError(f"window_batch must be >= 1, got {window_batch}")
    hp, wp = max(h, window), max(w, window)
    xp = _pad_to(x, hp, wp)
    places, weights, norm = _window_plan(hp, wp, window, overlap, x.device)
    n = x.shape[0]
    # Balanced chunks of equal size: ceil(windows / per_call) forward passes, the last one topped up with
    # repeats of its final window (outputs dropped), so that every pass has the same batch shape (one
    # compiled graph / CUDA graph serves them all) and at most calls - 1 windows are computed twice.
    calls = math.ceil(len(places) / max(1, window_batch // n))
    per_call = math.ceil(len(places) / calls)
    out = None
    for start in range(0, len(places), per_call):
        idx = list(range(start, min(start + per_call, len(places))))
        real = len(idx)
        idx += [idx[-1]] * (per_call - real)
        crops = [
            xp[..., places[i][0] : places[i][0] + window, places[i][1] : places[i][1] + window] for i in idx
        ]
        probs = predict_fn(crops[0] if len(crops) == 1 else torch.cat(crops, dim=0))
        # (windows, B, K, window, window) weighted in one kernel
        probs = probs.view(len(idx), n, *probs.shape[1:])[:real] * weights[start : start + real, None, None]
        if out is None:
            out = torch.zeros(n, probs.shape[2], hp, wp, device=x.device, dtype=probs.dtype)
        for k in range(real):
            r, c = places[start + k]
            out[..., r : r + window, c : c + window] += probs[k]
    return (out / norm)[..., :h, :w]


@functools.lru_cache(maxsize=16)
def _window_plan(
    height: int, width: int, window: int, overlap: int, device: torch.device
) -> tuple[list[tuple[int, int]], torch.Tensor, torch.Tensor]:
    """Window corners ``[(row, col), ...]``, their blending weights ``(windows, window, window)`` and the
    per-pixel sum of the weights ``(height, width)`` (on ``device``), for a padded image of that size."""
    rows, cols = window_starts(height, window, overlap), window_starts(width, window, overlap)
    places = [(r, c) for r in rows for c in cols]
    wys = [_axis_weight(window, overlap, i > 0, i < len(rows) - 1) for i in range(len(rows))]
    wxs = [_axis_weight(window, overlap, j > 0, j < len(cols) - 1) for j in range(len(cols))]
    weights = torch.stack([wy[:, None] * wx[None, :] for wy in wys for wx in wxs])
    norm = torch.zeros(height, width)
    for (r, c), wgt in zip(places, weights):
        norm[r : r + window, c : c + window] += wgt
    return places, weights.to(device), norm.to(device)


@dataclass
class SceneResult:
    """What ``predict_scene`` wrote, and the scores when a label was given."""

    path: Path
    height: int
    width: int
    scores: dict | None = None
    confusion: np.ndarray | None = None


def predict_scene(
    model: nn.Module,
    a: str | Path,
    b: str | Path,
    out: str | Path,
    *,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    bands: Sequence[int] | None = None,
    window: int = 256,
    overlap: int = 64,
    pad_multiple: int = 32,
    tta: bool = False,
    output: str = "binary",
    block: int | None = None,
    window_batch: int = 1,
    label: str | Path | None = None,
    ignore_value: int | None = None,
    class_names: Sequence[str] = ("unchanged", "changed"),
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> SceneResult:
    """Predict the change map of the pair ``a``/``b`` into ``out``, block by block.

    Reads blocks of ``block`` x ``block`` pixels (default ``4 * window``) plus an ``overlap`` halo, so memory
    stays bounded whatever the scene size (``window_batch`` windows of a block per forward pass); writes a GeoTIFF with image A's CRS and transform (or a PNG when
    ``out`` ends in .png), atomically. ``output="binary"``: uint8 class ids (changed = 255 for two classes);
    ``output="prob"``: float32 probability of the changed class (all K bands for K > 2). With ``label``,
    also returns the scores of the prediction against it.
    """
    if output not in ("binary", "prob"):
        raise ValueError(f"output must be 'binary' or 'prob', got {output!r}")
    ia, ib = raster_info(a), raster_info(b)
    if ia.size != ib.size:
        raise DataError(
            f"{ib.path}: size {ib.height}x{ib.width} differs from {ia.path} ({ia.height}x{ia.width})"
        )
    if ia.count != ib.count:
        raise DataError(f"{ib.path}: {ib.count} band(s) but {ia.path} has {ia.count} (dates must match)")
    n_bands = len(bands) if bands is not None else ia.count
    if mean is not None and len(mean) != n_bands:
        raise DataError(
            f"{ia.path}: {n_bands} band(s) used but the model was trained on {len(mean)} "
            f"(normalisation statistics of the checkpoint)"
        )
    il = None
    mapping = LabelMapping(ignore_value)
    if label is not None:
        il = raster_info(label)
        if il.size != ia.size:
            raise DataError(f"{il.path}: label size {il.height}x{il.width} differs from {ia.path}")
    k = len(class_names)
    count = (1 if k == 2 else k) if output == "prob" else 1
    dtype = "float32" if output == "prob" else "uint8"
    block = block or 4 * window
    halo = overlap
    h, w = ia.height, ia.width
    cm = np.zeros((k, k), np.int64)
    predict_fn = make_predict_fn(model, tta=tta)
    was_training = model.training
    model.eval()
    blocks = [(r, c) for r in range(0, h, block) for c in range(0, w, block)]
    try:
        with RasterWriter(
            out, height=h, width=w, count=count, dtype=dtype, crs=ia.crs, transform=ia.transform
        ) as dst:
            for r, c in tqdm(blocks, desc=f"predicting {Path(out).name}", disable=not progress or None):
                bh, bw = min(block, h - r), min(block, w - c)
                r1, c1 = min(h, r + bh + halo), min(w, c + bw + halo)
                # At least one window per side where the image allows, so no padding inside the scene.
                r0, c0 = max(0, min(r - halo, r1 - window)), max(0, min(c - halo, c1 - window))
                win = (r0, c0, r1 - r0, c1 - c0)
                dates = []
                for info in (ia, ib):
                    raw = read_raster(info.path, win, bands=list(bands) if bands is not None else None)
                    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
                        raise DataError(f"{info.path}: NaN/inf pixel values in window {win}")
                    dates.append(normalise_image(raw, mean=mean, std=std, path=info.path))
                x = torch.from_numpy(np.stack(dates))[None].to(device)
                probs = sliding_window_probs(
                    predict_fn,
                    x,
                    window=window,
                    overlap=overlap,
                    pad_multiple=pad_multiple,
                    window_batch=window_batch,
                )[0]
                core = probs[:, r - r0 : r - r0 + bh, c - c0 : c - c0 + bw]
                pred = core.argmax(0)
                if output == "prob":
                    arr = (core[1:2] if k == 2 else core).cpu().numpy().astype(np.float32)
                else:
                    arr = (pred * (255 if k == 2 else 1)).to(torch.uint8).cpu().numpy()[None]
                dst.write(arr, r, c)
                if il is not None:
                    target = mapping.apply(read_raster(il.path, (r, c, bh, bw)), il.path)
                    cm += confusion_matrix(pred.cpu(), torch.from_numpy(target), k, IGNORE_INDEX).numpy()
    finally:
        model.train(was_training)
    scores = scores_from_confusion(cm, class_names) if il is not None else None
    return SceneResult(Path(out), h, w, scores, cm if il is not None else None)
