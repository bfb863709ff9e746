"""The segmentation task of the engine (``task: segmentation``): data preparation, DataModule and
LightningModule. Everything else (config, Trainer, checkpoints, resume, logs, figures, CLI) is shared with
change detection through ``geomamba.engine.tasks``.

Scores: the confusion-matrix scores of ``geomamba.metrics.confusion`` (mIoU, OA, mF1, per-class IoU/F1...)
plus Boundary IoU (``BIoU`` and ``BIoU_<class>``, ``geomamba.metrics.boundary_iou``) with a band width of
``eval.boundary_width`` pixels; both from states summed over DDP ranks. The default monitored score is
``mIoU``. Losses: ``loss`` with ``boundary_weight`` 0.3 unless given (main + auxiliary + boundary terms of
a model that returns ``{"out", "aux", "boundary"}``; the boundary target is derived from the labels).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from geomamba.data.datasets.segmentation import SegmentationDataset
from geomamba.data.errors import DataError
from geomamba.data.labels import IGNORE_INDEX
from geomamba.data.seg_labels import PALETTES, SegmentationLabels
from geomamba.data.segmentation import (
    SegmentationLayout,
    SegmentationSample,
    discover_segmentation_split,
    validate_segmentation_dataset,
)
from geomamba.data.transforms import SegmentationTransform
from geomamba.data.validate import DatasetReport
from geomamba.engine.config import ConfigError, RunConfig
from geomamba.engine.datamodule import ChangeDataModule
from geomamba.engine.figures import save_segmentation_samples
from geomamba.engine.module import ChangeDetectionModule
from geomamba.metrics.boundary_iou import BoundaryIoU, boundary_iou_scores

__all__ = [
    "SegmentationDataModule",
    "SegmentationModule",
    "label_rule",
    "layout_of",
    "prepare_segmentation_data",
    "segmentation_has_split",
]

log = logging.getLogger("geomamba.engine")


def layout_of(cfg: RunConfig) -> SegmentationLayout:
    """The folder layout of ``cfg.data.segmentation``."""
    s = cfg.data.segmentation
    return SegmentationLayout(
        image_dir=s.image_dir,
        label_dir=s.label_dir,
        eval_label_dir=s.eval_label_dir,
        image_suffix=s.image_suffix,
        label_suffix=s.label_suffix,
        eval_label_suffix=s.eval_label_suffix,
    )


def label_rule(cfg: RunConfig) -> SegmentationLabels:
    """The label rule of ``cfg.data`` (class count, encoding, palette, ignored values/colours)."""
    s = cfg.data.segmentation
    colours = ignore = None
    if isinstance(s.palette, str):
        colours, ignore = PALETTES[s.palette].colours, PALETTES[s.palette].ignore_colours
    elif s.palette is not None:
        colours = tuple(tuple(c) for c in s.palette)
    if s.ignore_colours is not None:
        ignore = tuple(tuple(c) for c in s.ignore_colours)
    return SegmentationLabels(
        num_classes=len(cfg.data.class_names),
        encoding=s.encoding,
        colours=colours,  # type: ignore[arg-type]
        ignore_colours=ignore or (),  # type: ignore[arg-type]
        colour_tolerance=s.colour_tolerance,
        reduce_zero_label=s.reduce_zero_label,
        ignore_value=cfg.data.ignore_value,
    )


def segmentation_has_split(cfg: RunConfig, split: str) -> bool:
    """Whether the image folder of ``split`` exists."""
    return Path(cfg.data.root).is_dir() and layout_of(cfg).has_split(cfg.data.root, split)


def prepare_segmentation_data(cfg: RunConfig, roles: tuple[str, ...]) -> tuple[RunConfig, DatasetReport]:
    """Validation pass over the splits of ``roles`` and config resolution (see
    ``geomamba.engine.train.prepare_data``): fills ``data.mean``/``data.std`` from the train split when
    null, ``model.options.in_channels`` when the images do not have 3 bands and ``num_classes`` from
    ``data.class_names``, unless the options give them. The report's splits are keyed by role."""
    d = cfg.data
    if not d.root:
        raise ConfigError("data.root: the dataset folder is not set (e.g. data.root=/data/Potsdam)")
    if not Path(d.root).is_dir():
        raise ConfigError(f"data.root: folder {d.root} not found")
    labels, layout = label_rule(cfg), layout_of(cfg)
    role_splits = {r: getattr(d.splits, r) for r in roles}
    lists = {r: getattr(d.list_files, r) for r in roles}
    need_stats = d.mean is None and "train" in roles
    log.info(
        "checking dataset %s (splits: %s, mode: %s)", d.root, ", ".join(role_splits.values()), d.validate
    )
    common = {"labels": labels, "layout": layout, "list_files": lists, "bands": d.bands}
    report = validate_segmentation_dataset(
        d.root,
        role_splits,
        mode=d.validate,
        stats_role="train" if need_stats and d.validate == "full" else None,
        **common,
    )
    stats = report.stats
    if need_stats and stats is None:
        stats = validate_segmentation_dataset(
            d.root, {"train": d.splits.train}, stats_role="train", **common
        ).stats
    channels = len(d.bands) if d.bands else next((r.bands for r in report.splits.values() if r.bands), 0)
    data_updates: dict[str, Any] = {}
    if need_stats:
        if stats is None:
            raise DataError(
                f"{d.root}: no pixels in the train split: cannot compute normalisation statistics"
            )
        data_updates = {"mean": [round(v, 4) for v in stats.mean], "std": [round(v, 4) for v in stats.std]}
        log.info("normalisation statistics: mean %s std %s", data_updates["mean"], data_updates["std"])
    elif d.mean is not None and channels and len(d.mean) != channels:
        raise ConfigError(f"data.mean/std have {len(d.mean)} values but the images have {channels} band(s)")
    options = dict(cfg.model.options)
    if channels and channels != 3 and "in_channels" not in options:
        options["in_channels"] = channels
    options.setdefault("num_classes", len(d.class_names))
    for role, rep in report.splits.items():
        fractions = rep.class_fractions
        if fractions is None:
            continue
        shares = ", ".join(f"{n} {100 * f:.1f}%" for n, f in zip(d.class_names, fractions))
        log.info("%s (%s): %d images; classes: %s", role, rep.name, len(rep.samples), shares)
        absent = [n for n, f in zip(d.class_names, fractions) if f == 0]
        if absent and role == "train":
            log.warning(
                "the train split has no pixel of class(es) %s: they cannot be learnt", ", ".join(absent)
            )
    resolved = replace(cfg, data=replace(d, **data_updates), model=replace(cfg.model, options=options))
    return resolved, report


class SegmentationDataModule(ChangeDataModule):
    """Train (random windows + augmentation), val and test (whole images or ``eval_tile`` tiles) loaders
    of a segmentation dataset; loaders, samplers and DDP behaviour as ``ChangeDataModule``.

    Args:
        cfg: the run config.
        report: the report of ``prepare_segmentation_data`` (samples per role), if it ran.
    """

    def _samples(self, role: str) -> list[SegmentationSample]:  # type: ignore[override]
        if self.report is not None and role in self.report.splits:
            return self.report.splits[role].samples  # type: ignore[return-value]
        samples, problems = discover_segmentation_split(
            self.cfg.data.root,
            getattr(self.cfg.data.splits, role),
            layout=layout_of(self.cfg),
            evaluation=role != "train",
            list_file=getattr(self.cfg.data.list_files, role),
        )
        if problems:
            raise DataError("\n  - ".join([f"problems in {self.cfg.data.root}:", *problems]))
        return samples

    def _dataset(self, role: str) -> SegmentationDataset:  # type: ignore[override]
        if role not in self.datasets:
            d = self.cfg.data
            train = role == "train"
            transform = None
            if train:
                a = d.augment
                transform = SegmentationTransform(
                    crop_size=d.crop_size,
                    hflip=a.hflip,
                    vflip=a.vflip,
                    rotate90=a.rotate90,
                    brightness=a.brightness,
                    contrast=a.contrast,
                    photometric_p=a.photometric_p,
                )
            self.datasets[role] = SegmentationDataset(  # type: ignore[assignment]
                self._samples(role),
                labels=label_rule(self.cfg),
                bands=d.bands,
                mean=d.mean,
                std=d.std,
                value_scale=d.value_scale,
                transform=transform,
                crop_size=d.crop_size if train else None,
                repeats=d.crops_per_image if train else 1,
                tile=None if train else d.segmentation.eval_tile,
            )
        return self.datasets[role]  # type: ignore[return-value]

    def _eval_batch(self, role: str) -> int:
        bs = self.cfg.data.eval_batch_size
        if bs == 1:
            return bs
        tile = self.cfg.data.segmentation.eval_tile
        rep = self.report.splits.get(role) if self.report is not None else None
        sizes = rep.sizes if rep is not None else set()
        uneven = not sizes or len(sizes) > 1 if tile is None else any(h % tile or w % tile for h, w in sizes)
        if uneven:
            log.info("%s: images (or tiles) of several sizes: evaluating one per batch", role)
            return 1
        return bs


class SegmentationModule(ChangeDetectionModule):
    """Training, validation and test of a semantic-segmentation model (see the module docstring).

    Batches: ``{"image": (B, C, H, W), "mask": (B, H, W) int64, "name": [str]}``. Logged as for change
    detection (``train/loss`` and its components ``train/loss_ce``, ``train/loss_aux0``,
    ``train/loss_boundary``..., ``lr``, ``val/<score>``, ``test/<score>``), with ``BIoU`` scores added.

    Args:
        config: a resolved run config as a plain dict with ``task: segmentation``.
    """

    task = "segmentation"
    curve_keys = ("mIoU", "mF1", "OA", "BIoU", "Kappa")

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        if self.cfg.task != "segmentation":
            raise ConfigError(f"task: SegmentationModule needs task 'segmentation', got {self.cfg.task!r}")
        k, width = len(self.class_names), self.cfg.eval.boundary_width
        self.val_biou = BoundaryIoU(k, width=width, ignore_index=IGNORE_INDEX)
        self.test_biou = BoundaryIoU(k, width=width, ignore_index=IGNORE_INDEX)
        self._pending_biou: dict | None = None
        self.colours = label_rule(self.cfg).colours

    def example_input(self, channels: int, size: int) -> torch.Tensor:
        """A zero input batch of one sample, ``(1, channels, size, size)``."""
        return torch.zeros(1, channels, size, size)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        preds = self._eval_step(batch, self.val_confusion, keep_samples=True)
        self.val_biou.update(preds, batch["mask"])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        preds = self._eval_step(batch, self.test_confusion, keep_samples=True)
        self.test_biou.update(preds, batch["mask"])

    @staticmethod
    def _take(metric: BoundaryIoU) -> tuple[torch.Tensor, torch.Tensor]:
        """The rank-summed (intersection, union) counts of ``metric``, then reset it."""
        with metric.sync_context(should_sync=True):
            counts = metric.intersection.clone(), metric.union.clone()
        metric.reset()
        return counts

    def on_validation_epoch_end(self) -> None:
        self._pending_biou = boundary_iou_scores(*self._take(self.val_biou), self.class_names)
        super().on_validation_epoch_end()

    def on_test_epoch_end(self) -> None:
        self._pending_biou = boundary_iou_scores(*self._take(self.test_biou), self.class_names)
        super().on_test_epoch_end()

    def _scores(self, cm: torch.Tensor) -> dict:
        scores = super()._scores(cm)
        biou, self._pending_biou = self._pending_biou, None
        if biou is not None:
            scores["BIoU"] = biou["BIoU"]
            scores["boundary_width"] = self.cfg.eval.boundary_width
            for name, value in biou["per_class"].items():
                scores["per_class"][name]["BIoU"] = value
        return scores

    def save_samples(self, samples: list[dict], folder: Path, title: str = "") -> Path | None:
        """Figures of a few evaluated samples (used by ``RunArtifacts``)."""
        return save_segmentation_samples(
            samples, folder, title, class_names=self.class_names, colours=self.colours
        )
