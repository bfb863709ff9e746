"""Prediction with a checkpoint over image pairs: two files, or two folders of same-named files."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from geomamba.data.errors import DataError, GeomambaError
from geomamba.data.io import PIL_SUFFIXES, RASTER_SUFFIXES, raster_info
from geomamba.engine.inference import SceneResult, predict_scene
from geomamba.engine.module import load_module
from geomamba.metrics.confusion import format_table, scores_from_confusion

__all__ = ["PredictResult", "check_dtypes", "pair_paths", "predict_paths"]

log = logging.getLogger("geomamba.engine")


@dataclass
class PredictResult:
    """The written files, and scores over all pairs when labels were given."""

    outputs: list[SceneResult]
    scores: dict[str, Any] | None = None


def _images(folder: Path) -> dict[str, Path]:
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in RASTER_SUFFIXES
    }


def pair_paths(
    a: str | Path, b: str | Path, out: str | Path, label: str | Path | None = None, output: str = "binary"
) -> list[tuple[Path, Path, Path, Path | None]]:
    """``(a, b, out, label)`` jobs: one for two files, one per shared name for two folders.

    In folder mode outputs are ``out/<name>.tif``, or ``.png`` for binary maps of PNG/JPG/BMP inputs.
    """
    a, b, out = Path(a), Path(b), Path(out)
    label = Path(label) if label is not None else None
    for p in (a, b, label):
        if p is not None and not p.exists():
            if p.is_symlink():
                raster_info(p)  # raises the diagnosis: a symbolic link loop or a broken link
            raise DataError(f"{p}: not found")
    if a.is_dir() != b.is_dir():
        raise DataError(f"--a {a} and --b {b} must both be files or both be folders")
    if not a.is_dir():
        if out.suffix.lower() not in (".tif", ".tiff", *PIL_SUFFIXES):
            raise DataError(f"{out}: output must end in .tif or .png (or be a folder for folder inputs)")
        if label is not None and label.is_dir():
            raise DataError(f"--label {label} must be a file when --a/--b are files")
        return [(a, b, out, label)]
    ia, ib = _images(a), _images(b)
    il = _images(label) if label is not None else {}
    missing = sorted(set(ia) ^ set(ib))
    if missing:
        raise DataError(
            f"{a} and {b} must hold the same names; unpaired: "
            + ", ".join(str((a if n in ia else b) / n) for n in missing[:10])
        )
    if not ia:
        raise DataError(f"{a}: no images found")
    if label is not None and set(ia) - set(il):
        raise DataError(f"{label}: no label for {', '.join(sorted(set(ia) - set(il))[:10])}")
    jobs = []
    for name, pa in ia.items():
        png = pa.suffix.lower() in PIL_SUFFIXES and output == "binary"
        jobs.append((pa, ib[name], out / f"{name}{'.png' if png else '.tif'}", il.get(name)))
    return jobs


def check_dtypes(a: Path, b: Path, trained: str | None) -> None:
    """Both dates must share a dtype, and integer images must have the dtype the model was trained on
    (its normalisation statistics are in those units): ``DataError`` naming the file otherwise."""
    ia, ib = raster_info(a), raster_info(b)
    if ia.dtype != ib.dtype:
        raise DataError(f"{ib.path}: dtype {ib.dtype} but {ia.path} is {ia.dtype} (dates must match)")
    if trained and ia.dtype != trained and "int" in f"{ia.dtype}{trained}":
        raise DataError(
            f"{ia.path}: {ia.dtype} pixels but the model was trained on {trained} images (its "
            f"normalisation statistics are in {trained} units); convert the images or train on {ia.dtype} data"
        )


def predict_paths(
    checkpoint: str | Path,
    a: str | Path,
    b: str | Path,
    out: str | Path,
    *,
    label: str | Path | None = None,
    output: str = "binary",
    window: int | None = None,
    overlap: int | None = None,
    tta: bool | None = None,
    block: int | None = None,
    window_batch: int | None = None,
    device: str | None = None,
    progress: bool = True,
    trust_checkpoint: bool = False,
) -> PredictResult:
    """Predict change maps with ``checkpoint`` for a pair of files or folders (see ``pair_paths``).

    ``window``/``overlap``/``tta``/``window_batch`` default to the checkpoint's ``eval`` settings (window 256
    when unset). Memory: a block (``block``, default 4 x window, plus the overlap) of both dates, and the
    activations of ``window_batch`` windows.
    ``trust_checkpoint`` allows a checkpoint with pickled objects (can run code; see ``load_module``).
    Bad inputs raise ``DataError`` naming the file before anything is written; outputs are written
    atomically, so an error or interruption never leaves a partial file at the output path.
    """
    jobs = pair_paths(a, b, out, label, output)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    module = load_module(checkpoint, trust=trust_checkpoint)
    cfg = module.cfg
    if cfg.task == "classification":
        raise GeomambaError(
            f"{checkpoint}: an MS + PAN classification checkpoint; give --ms and --pan, not --a/--b"
        )
    if cfg.task != "change":
        raise GeomambaError(
            f"{checkpoint}: a {cfg.task} checkpoint; `geomamba predict` maps image pairs with change-detection "
            "checkpoints only (score a segmentation checkpoint with `geomamba test`)"
        )
    model = module.model.to(device)
    e = cfg.eval
    window = window or e.window or 256
    if window % e.pad_multiple:
        raise GeomambaError(
            f"--window {window} must be a multiple of the model's pad multiple {e.pad_multiple}"
        )
    overlap = e.overlap if overlap is None else overlap
    window_batch = e.window_batch if window_batch is None else window_batch
    if window_batch < 1:
        raise GeomambaError(f"--window-batch must be >= 1, got {window_batch}")
    if 2 * overlap >= window:
        raise GeomambaError(f"--overlap {overlap} must be < window/2 ({window // 2})")
    results = []
    total = None
    for pa, pb, _, _ in jobs:  # every pair checked before anything is written
        check_dtypes(pa, pb, module.data_info.get("dtype"))
    for pa, pb, po, pl in jobs:
        res = predict_scene(
            model,
            pa,
            pb,
            po,
            mean=cfg.data.mean,
            std=cfg.data.std,
            bands=cfg.data.bands,
            window=window,
            overlap=overlap,
            pad_multiple=e.pad_multiple,
            tta=e.tta if tta is None else tta,
            output=output,
            block=block,
            window_batch=window_batch,
            label=pl,
            ignore_value=cfg.data.ignore_value,
            class_names=cfg.data.class_names,
            device=device,
            progress=progress,
        )
        results.append(res)
        if res.confusion is not None:
            total = res.confusion if total is None else total + res.confusion
    scores = scores_from_confusion(total, cfg.data.class_names) if total is not None else None
    if scores is not None:
        log.info("%s", format_table(scores, f"prediction vs labels ({len(results)} image pair(s))"))
    return PredictResult(results, scores)
