"""Whole-scene prediction with an ADCD-Net (stage II) checkpoint: every MS pixel of an MS + PAN scene is
classified (batched patch pairs, progress bar) into a class map.

Outputs (``predict_mspan``, ``geomamba predict CKPT --ms MS --pan PAN --out OUT.tif``):

- ``OUT.tif``: one band, class ids 1..K (``data.class_names`` order; 0 = nodata), uint8 (uint16 beyond
  254 classes), with the PAN image's CRS and georeference: on the PAN grid (``grid="pan"``, default: the
  PAN's size and transform, each MS pixel's class repeated over its ratio x ratio PAN pixels) or on the MS
  grid (``grid="ms"``: the PAN transform scaled by the ratio); a colour table and the class names (tags
  ``CLASS_<id>``) are embedded. A PAN without georeference (e.g. ``.npy``) gives a plain GeoTIFF.
- ``OUT.png``: the same map colour-coded (matplotlib's tab10/tab20 colours, as the training figures).
- with ``label``: OA, AA, Kappa and per-class accuracy over the labelled pixels (logged, and returned).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from geomamba.data.errors import DataError, GeomambaError
from geomamba.data.mspan import MSPanPatchDataset, all_pixels, load_mspan
from geomamba.engine.figures import _default_colours, class_colour_map
from geomamba.engine.module import load_module
from geomamba.metrics.adcd import pixel_classification_scores
from geomamba.metrics.confusion import confusion_matrix, format_table
from geomamba.models.base import as_logits

__all__ = ["MSPanPrediction", "predict_mspan"]

log = logging.getLogger("geomamba.engine")


@dataclass
class MSPanPrediction:
    """What ``predict_mspan`` wrote: the GeoTIFF, the PNG, the map size, and scores when labels were given."""

    path: Path
    png: Path
    height: int
    width: int
    class_counts: dict[str, int]
    scores: dict[str, Any] | None = None


def _write_geotiff(path: Path, ids: np.ndarray, crs: Any, transform: Any, class_names: list[str]) -> None:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": ids.shape[0],
        "width": ids.shape[1],
        "count": 1,
        "dtype": ids.dtype.name,
        "nodata": 0,
        "compress": "deflate",
    }
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(ids, 1)
            dst.update_tags(**{f"CLASS_{k}": name for k, name in enumerate(class_names, start=1)})
            if ids.dtype == np.uint8:
                colours = _default_colours(len(class_names))
                table = {0: (0, 0, 0, 0), **{k: (*c, 255) for k, c in enumerate(colours, start=1)}}
                dst.write_colormap(1, table)


def predict_mspan(
    checkpoint: str | Path,
    ms: str | Path,
    pan: str | Path,
    out: str | Path,
    *,
    label: str | Path | None = None,
    grid: str = "pan",
    batch_size: int = 256,
    device: str | None = None,
    progress: bool = True,
) -> MSPanPrediction:
    """Classify every pixel of the scene ``ms`` + ``pan`` with a stage-II ADCD-Net ``checkpoint``.

    Args:
        checkpoint: a ``task: classification`` stage-II checkpoint (``<run>/stage2/checkpoints/*.ckpt``).
        ms, pan: the images (GeoTIFF/raster or ``.npy``), read and normalised as in training
            (``data.mspan.normalise``, the model's ratio).
        out: the class map ``.tif``; the colour-coded ``.png`` is written next to it.
        label: an optional label map on the MS grid (0 = unlabelled) to score the map against.
        grid: ``"pan"`` (default) or ``"ms"``: the grid of the written maps (see the module docstring).
        batch_size: patch pairs per forward pass.
        device: ``cpu``, ``cuda``, ``cuda:1`` ... (default: cuda when available).
        progress: show a progress bar over the batches.
    """
    out = Path(out)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise DataError(
            f"{out}: the class map is a GeoTIFF; give a path ending in .tif (the .png goes next to it)"
        )
    if grid not in ("pan", "ms"):
        raise GeomambaError(f"--grid must be 'pan' or 'ms', got {grid!r}")
    if batch_size < 1:
        raise GeomambaError(f"--batch-size must be >= 1, got {batch_size}")
    module = load_module(checkpoint)
    cfg = module.cfg
    if cfg.task != "classification" or cfg.classification.stage != 2:
        what = (
            f"a {cfg.task} checkpoint"
            if cfg.task != "classification"
            else "a stage-I (self-supervised) checkpoint"
        )
        raise GeomambaError(
            f"{checkpoint}: {what}; --ms/--pan classify scenes with a stage-II ADCD-Net checkpoint "
            "(<run>/stage2/checkpoints/best-*.ckpt)"
        )
    model = module.model
    try:
        scene = load_mspan(ms, pan, label, ratio=model.ratio, normalise=cfg.data.mspan.normalise)
    except (OSError, ValueError) as exc:
        raise DataError(str(exc)) from None
    if scene.ms.shape[0] != model.in_channels:
        raise DataError(
            f"MS {ms} has {scene.ms.shape[0]} band(s) but the model was trained on {model.in_channels}"
        )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    names = list(cfg.data.class_names)
    dataset = MSPanPatchDataset(
        scene, all_pixels(scene.shape), patch_size=cfg.data.mspan.patch_size, with_labels=False
    )
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    ids = np.zeros(scene.shape, np.uint8 if len(names) < 255 else np.uint16)
    with torch.no_grad():
        for batch in tqdm(
            loader, desc=f"classifying {len(dataset)} pixels", unit="batch", disable=not progress
        ):
            logits = as_logits(model.forward_stage2(batch["ms"].to(device), batch["pan"].to(device)))
            px = batch["pixel"].numpy()
            ids[px[:, 0], px[:, 1]] = logits.argmax(1).cpu().numpy() + 1
    scores = None
    if scene.labels is not None:
        keep = scene.labels > 0
        if scene.labels.max() > len(names):
            raise DataError(
                f"label {label} holds class ids up to {scene.labels.max()}; the model has {len(names)}"
            )
        cm = confusion_matrix(
            torch.from_numpy(ids[keep].astype(np.int64) - 1),
            torch.from_numpy(scene.labels[keep] - 1),
            len(names),
        )
        scores = pixel_classification_scores(cm, names)
        scores["confusion"] = cm.tolist()
        log.info("%s", format_table(scores, f"class map vs {label} ({int(keep.sum())} labelled pixels)"))
    transform = scene.ms_transform
    written = ids
    if grid == "pan":
        r = scene.ratio
        written = np.repeat(np.repeat(ids, r, axis=0), r, axis=1)
        transform = scene.transform
    if scene.crs is None and transform is None:
        log.info("%s has no georeference: the class map is a plain GeoTIFF", pan)
    _write_geotiff(out, written, scene.crs, transform, names)
    png = out.with_suffix(".png")
    Image.fromarray(class_colour_map(written.astype(np.int64) - 1, _default_colours(len(names)))).save(png)
    counts = np.bincount(ids.ravel(), minlength=len(names) + 1)[1:]
    log.info(
        "class map %s (%dx%d, %s grid): %s",
        out,
        *written.shape,
        grid,
        ", ".join(f"{n} {c}" for n, c in zip(names, counts.tolist())),
    )
    return MSPanPrediction(
        out, png, int(written.shape[0]), int(written.shape[1]), dict(zip(names, counts.tolist())), scores
    )
