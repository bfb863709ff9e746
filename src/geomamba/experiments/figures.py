"""Figures of an experiment: the error-map grid of a dataset (samples x models) and all loss curves.

The grid has one row per sample and the columns A, B, ground truth, then one red/green error map per
model (``geomamba.engine.figures.error_map``: TP white, TN black, FP red, FN green, ignored grey); a run
without a prediction gets a grey "not run" panel. Loss curves: one panel per dataset, each run one colour,
training loss solid and validation loss dashed, per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from geomamba.data.errors import DataError
from geomamba.data.io import read_raster
from geomamba.data.labels import IGNORE_INDEX, LabelMapping
from geomamba.data.layout import Sample, discover_split
from geomamba.engine.figures import display_rgb, error_map

__all__ = [
    "FigureSample",
    "comparison_figure",
    "load_figure_samples",
    "loss_curves_figure",
    "read_prediction",
    "select_figure_samples",
]


@dataclass
class FigureSample:
    """One row of the grid: the two dates ``(C, H, W)`` in file units and the class-id label ``(H, W)``."""

    name: str
    a: np.ndarray
    b: np.ndarray
    label: np.ndarray


def _split_samples(root: str | Path, split: str, list_file: str | None) -> list[Sample]:
    samples, problems = discover_split(root, split, list_file=list_file)
    if problems:
        raise DataError("\n  - ".join([f"problems in {root} split {split}:", *problems]))
    if not samples:
        raise DataError(f"{root}: split {split} has no samples")
    return samples


def select_figure_samples(
    root: str | Path,
    split: str = "test",
    n: int = 4,
    *,
    names: Sequence[str] | None = None,
    ignore_value: int | None = None,
    list_file: str | None = None,
) -> list[str]:
    """``n`` sample names of ``split``: ``names`` when given (checked), else a spread over the amount of
    change: the images with changed pixels sorted by changed fraction, taken at evenly spaced ranks
    (small to large changes), then unchanged images by name if fewer than ``n`` have changes."""
    samples = _split_samples(root, split, list_file)
    by_name = {s.name: s for s in samples}
    if names:
        missing = [x for x in names if x not in by_name]
        if missing:
            raise DataError(f"figure.names: {', '.join(missing)} not in {root} split {split}")
        return list(names)
    mapping = LabelMapping(ignore_value)
    frac = {}
    for s in samples:
        label = mapping.apply(read_raster(s.label), s.label)
        frac[s.name] = float((label == 1).mean())
    changed = sorted((f, name) for name, f in frac.items() if f > 0)
    if len(changed) <= n:
        picked = [name for _, name in changed]
    else:
        ranks = [round((i + 0.5) * len(changed) / n - 0.5) for i in range(n)]
        picked = [changed[r][1] for r in ranks]
    rest = [name for name in sorted(frac) if name not in picked]
    return picked + rest[: max(0, n - len(picked))]


def load_figure_samples(
    root: str | Path,
    split: str,
    names: Sequence[str],
    *,
    bands: Sequence[int] | None = None,
    ignore_value: int | None = None,
    list_file: str | None = None,
) -> list[FigureSample]:
    """Read the named samples of ``split`` for the grid."""
    by_name = {s.name: s for s in _split_samples(root, split, list_file)}
    mapping = LabelMapping(ignore_value)
    out = []
    for name in names:
        if name not in by_name:
            raise DataError(f"{root}: sample {name!r} not in split {split}")
        s = by_name[name]
        b = list(bands) if bands else None
        out.append(
            FigureSample(
                name,
                read_raster(s.a, bands=b),
                read_raster(s.b, bands=b),
                mapping.apply(read_raster(s.label), s.label),
            )
        )
    return out


def read_prediction(path: Path) -> np.ndarray | None:
    """A binary change map written by ``geomamba.engine.predict`` as class ids ``(H, W)`` (None if absent)."""
    if not path.is_file():
        return None
    pred = read_raster(path)[0]
    return (pred > 0).astype(np.int64)


def _blank(ax, text: str) -> None:
    ax.set_facecolor((0.85, 0.85, 0.85))
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8)


def comparison_figure(
    samples: Sequence[FigureSample],
    predictions: Mapping[str, Mapping[str, np.ndarray | None]],
    *,
    title: str = "",
    panel_inches: float = 1.9,
) -> Figure:
    """The grid: ``len(samples)`` rows x (3 + ``len(predictions)``) columns.

    ``predictions``: model label -> {sample name -> class-id prediction ``(H, W)`` or None}, in column order.
    """
    if not samples:
        raise ValueError("comparison_figure needs at least one sample")
    models = list(predictions)
    rows, cols = len(samples), 3 + len(models)
    fig = Figure(figsize=(panel_inches * cols, panel_inches * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    heads = ["A", "B", "ground truth", *models]
    for r, s in enumerate(samples):
        both = np.concatenate([s.a, s.b], axis=2)
        gt = s.label.astype(np.float32)
        gt[s.label == IGNORE_INDEX] = 0.5
        panels: list[np.ndarray | None] = [display_rgb(s.a, both), display_rgb(s.b, both), gt]
        for m in models:
            pred = predictions[m].get(s.name)
            if pred is not None and pred.shape != s.label.shape:
                raise DataError(f"prediction of {m} for {s.name} is {pred.shape}, the label {s.label.shape}")
            panels.append(error_map(pred, s.label) if pred is not None else None)
        for c, (ax, img) in enumerate(zip(axes[r], panels)):
            ax.set_xticks([])
            ax.set_yticks([])
            if img is None:
                _blank(ax, "not run")
            else:
                ax.imshow(img, cmap="gray" if c == 2 else None, vmin=0, vmax=1)
            if r == 0:
                ax.set_title(heads[c], fontsize=9)
        axes[r][0].set_ylabel(s.name, fontsize=8)
    fig.suptitle(f"{title}  (TP white, TN black, FP red, FN green)".strip(), fontsize=10)
    fig.tight_layout()
    return fig


def loss_curves_figure(histories: Mapping[str, Mapping[str, Sequence[Mapping[str, float]]]]) -> Figure:
    """Loss curves of every run: ``histories`` dataset -> run label -> validation history entries
    (``epoch``, ``train_loss``, ``loss`` as in a run's ``metrics.json``); one panel per dataset."""
    datasets = list(histories) or ["(no runs)"]
    fig = Figure(figsize=(6.5 * len(datasets), 4.4))
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, ds in zip(axes, datasets):
        runs = histories.get(ds, {})
        for i, (label, history) in enumerate(runs.items()):
            # Beyond 10 runs the colours repeat with another marker.
            colour, marker = f"C{i % 10}", "osd^v<>"[(i // 10) % 7]
            x = [h.get("epoch", math.nan) for h in history]
            train = [_num(h.get("train_loss")) for h in history]
            val = [_num(h.get("loss")) for h in history]
            ax.plot(x, train, "-", marker=marker, ms=3, color=colour, label=label)
            ax.plot(x, val, "--", marker=marker, ms=3, color=colour, alpha=0.6)
        ax.set_title(f"{ds}: training loss (solid), validation loss (dashed)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if runs:
            ax.legend(fontsize=7, ncol=2 if len(runs) > 6 else 1)
        else:
            _blank(ax, "no finished runs")
    fig.tight_layout()
    return fig


def _num(v: float | None) -> float:
    return math.nan if v is None else float(v)
