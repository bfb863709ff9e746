"""Figures of a run: red/green error maps and loss/metric curves (matplotlib ``Figure``, no pyplot state).

Error map colours (the seed's convention): true positive white, true negative black, false positive red,
false negative green; ignored pixels grey.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from geomamba.data.labels import IGNORE_INDEX

__all__ = [
    "class_colour_map",
    "display_rgb",
    "error_map",
    "plot_curves",
    "save_error_maps",
    "save_segmentation_samples",
]

TP, TN, FP, FN, IGNORED = (255, 255, 255), (0, 0, 0), (255, 0, 0), (0, 255, 0), (128, 128, 128)


def error_map(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB: TP white, TN black, FP red, FN green, ignored grey (changed = class 1)."""
    p = np.asarray(pred.cpu() if isinstance(pred, torch.Tensor) else pred)
    t = np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target)
    out = np.zeros((*t.shape, 3), np.uint8)
    pos_p, pos_t = p == 1, t == 1
    out[pos_p & pos_t] = TP
    out[~pos_p & ~pos_t] = TN
    out[pos_p & ~pos_t] = FP
    out[~pos_p & pos_t] = FN
    out[t == IGNORE_INDEX] = IGNORED
    return out


def display_rgb(
    image: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray | None = None
) -> np.ndarray:
    """A ``(C, H, W)`` normalised image as displayable ``(H, W, 3)`` float in [0, 1].

    Each band is stretched between its 2nd and 98th percentiles, taken over ``reference`` when given
    (e.g. both dates, so that the two dates are drawn with the same stretch).
    """

    def rgb(x: torch.Tensor | np.ndarray) -> np.ndarray:
        x = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x, np.float32)
        return x[:3] if x.shape[0] >= 3 else np.repeat(x[:1], 3, 0)

    x = rgb(image)
    ref = rgb(reference) if reference is not None else x
    lo, hi = np.percentile(ref, 2, axis=(1, 2)), np.percentile(ref, 98, axis=(1, 2))
    x = (x - lo[:, None, None]) / np.maximum(hi - lo, 1e-6)[:, None, None]
    return np.clip(x, 0, 1).transpose(1, 2, 0)


def save_error_maps(samples: Sequence[dict[str, Any]], folder: Path, title: str = "") -> Path | None:
    """Write ``<name>.png`` error maps and one figure ``error_maps.png`` (A | B | label | errors per row).

    ``samples``: dicts with ``name``, ``image`` ``(2, C, H, W)``, ``mask`` ``(H, W)``, ``pred`` ``(H, W)``.
    """
    if not samples:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    n = len(samples)
    fig = Figure(figsize=(10, 2.6 * n))
    axes = fig.subplots(n, 4, squeeze=False)
    for row, s in enumerate(samples):
        em = error_map(s["pred"], s["mask"])
        Image.fromarray(em).save(folder / f"{s['name']}.png")
        label = np.asarray(s["mask"]).astype(np.float32)
        label[label == IGNORE_INDEX] = 0.5
        both = np.concatenate([np.asarray(s["image"][0]), np.asarray(s["image"][1])], axis=2)
        panels = [display_rgb(s["image"][0], both), display_rgb(s["image"][1], both), label, em]
        for col, (ax, img, head) in enumerate(zip(axes[row], panels, ("A", "B", "label", "errors"))):
            ax.imshow(img, cmap="gray" if col == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(head)
        axes[row][0].set_ylabel(str(s["name"]), fontsize=8)
    fig.suptitle(f"{title}  (TP white, TN black, FP red, FN green)".strip())
    fig.tight_layout()
    out = folder / "error_maps.png"
    fig.savefig(out, dpi=100)
    return out


def plot_curves(
    history: Sequence[dict[str, float]],
    folder: Path,
    positive: str = "changed",
    keys: Sequence[str] | None = None,
) -> list[Path]:
    """``loss.png`` (train/val loss, learning rate) and ``metrics.png`` (validation scores ``keys``;
    default the ``positive`` class's F1, IoU, Precision, Recall, and OA, Kappa) per epoch."""
    if not history:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    x = [h["epoch"] for h in history]

    def series(key: str) -> list[float]:
        return [h.get(key, math.nan) for h in history]

    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(x, series("train_loss"), "o-", label="train loss")
    ax1.plot(x, series("loss"), "s-", label="val loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.plot(x, series("lr"), "o-")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("learning rate")
    ax2.set_yscale("log")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    loss_png = folder / "loss.png"
    fig.savefig(loss_png, dpi=100)

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    if keys is None:
        keys = (
            f"F1_{positive}",
            f"IoU_{positive}",
            f"Precision_{positive}",
            f"Recall_{positive}",
            "OA",
            "Kappa",
        )
    for key in keys:
        ax.plot(x, series(key), "o-", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation score")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    metrics_png = folder / "metrics.png"
    fig.savefig(metrics_png, dpi=100)
    return [loss_png, metrics_png]


def class_colour_map(ids: np.ndarray | torch.Tensor, colours: Sequence[Sequence[int]]) -> np.ndarray:
    """Class ids ``(H, W)`` -> ``(H, W, 3)`` uint8 RGB with ``colours[k]`` for class k, ignored grey."""
    ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids).astype(np.int64)
    table = np.zeros((256, 3), np.uint8)
    table[: len(colours)] = np.asarray(colours, np.uint8)
    table[IGNORE_INDEX] = IGNORED
    return table[np.clip(ids, 0, 255)]


def _default_colours(k: int) -> list[tuple[int, int, int]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [tuple(int(255 * v) for v in cmap(i % cmap.N)[:3]) for i in range(k)]  # type: ignore[misc]


def save_segmentation_samples(
    samples: Sequence[dict[str, Any]],
    folder: Path,
    title: str = "",
    *,
    class_names: Sequence[str],
    colours: Sequence[Sequence[int]] | None = None,
) -> Path | None:
    """Write ``<name>.png`` error maps (wrong pixels red, right black, ignored grey) and one figure
    ``error_maps.png`` (image | label | prediction | errors per row, with a class legend).

    ``samples``: dicts with ``name``, ``image`` ``(C, H, W)``, ``mask`` ``(H, W)``, ``pred`` ``(H, W)``;
    ``colours``: one RGB colour per class (default: matplotlib's tab10/tab20).
    """
    if not samples:
        return None
    from matplotlib.patches import Patch

    colours = list(colours) if colours is not None else _default_colours(len(class_names))
    folder.mkdir(parents=True, exist_ok=True)
    n = len(samples)
    fig = Figure(figsize=(10, 2.6 * n + 0.6))
    axes = fig.subplots(n, 4, squeeze=False)
    for row, s in enumerate(samples):
        mask, pred = np.asarray(s["mask"]), np.asarray(s["pred"])
        errors = np.zeros((*mask.shape, 3), np.uint8)
        errors[pred != mask] = FP
        errors[mask == IGNORE_INDEX] = IGNORED
        Image.fromarray(errors).save(folder / f"{s['name']}.png")
        panels = [
            display_rgb(s["image"]),
            class_colour_map(mask, colours),
            class_colour_map(np.where(mask == IGNORE_INDEX, IGNORE_INDEX, pred), colours),
            errors,
        ]
        for ax, img, head in zip(axes[row], panels, ("image", "label", "prediction", "errors")):
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(head)
        axes[row][0].set_ylabel(str(s["name"]), fontsize=8)
    handles = [
        Patch(facecolor=np.asarray(c) / 255, edgecolor="black", label=name)
        for name, c in zip(class_names, colours)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8)
    fig.suptitle(f"{title}  (errors: wrong red, right black, ignored grey)".strip())
    fig.tight_layout(rect=(0, 0.5 / (2.6 * n + 0.6), 1, 1))
    out = folder / "error_maps.png"
    fig.savefig(out, dpi=100)
    return out
