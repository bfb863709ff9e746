"""The tasks of the engine: one table entry per task, chosen by the config key ``task``.

An entry names (as ``"module:attribute"`` strings, imported when used, so that this table imports nothing
heavy and the config can read it):

- ``module``: the LightningModule class, built from a resolved config dict;
- ``datamodule``: the LightningDataModule class, built as ``cls(cfg, report)``;
- ``prepare_data``: ``fn(cfg, roles) -> (resolved cfg, report)``: the validation pass over the splits of
  ``roles`` ("train", "val", "test") and the config resolution (statistics, channels, classes);
- ``has_split``: ``fn(cfg, split) -> bool``: whether a split folder exists;
- ``runner`` (optional): ``fn(cfg, *, resume, callbacks) -> TrainResult | None``, the task's own training
  plan, which ``geomamba.engine.train.train`` calls first (``classification``: ADCD-Net's stage I, then
  stage II, each a normal one-stage run); ``None`` from it lets ``train`` run the config as one stage;

and plain values: the default ``eval.monitor`` and the names of the scores the task reports (overall,
and per class as ``<score>_<class name>``), which ``eval.monitor`` is checked against.

Adding a task is one entry in ``TASKS``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

__all__ = ["RESERVED_TASKS", "TASKS", "TaskSpec", "get_task"]

_CONFUSION_OVERALL = ("OA", "Kappa", "mIoU", "mF1", "mPrecision", "mRecall")
_CONFUSION_CLASS = ("Precision", "Recall", "F1", "IoU")


@dataclass(frozen=True)
class TaskSpec:
    """One task of the engine (see the module docstring)."""

    name: str
    module: str
    datamodule: str
    prepare_data: str
    has_split: str
    monitor: str
    scores: tuple[str, ...] = _CONFUSION_OVERALL
    class_scores: tuple[str, ...] = _CONFUSION_CLASS
    runner: str | None = None

    @staticmethod
    def _load(ref: str) -> Any:
        mod, _, attr = ref.partition(":")
        return getattr(importlib.import_module(mod), attr)

    @property
    def module_class(self) -> type:
        """The LightningModule class."""
        return self._load(self.module)

    @property
    def datamodule_class(self) -> type:
        """The LightningDataModule class."""
        return self._load(self.datamodule)

    def prepare(self, cfg: Any, roles: tuple[str, ...]) -> tuple[Any, Any]:
        """Validation pass and config resolution: ``(resolved cfg, report)``."""
        return self._load(self.prepare_data)(cfg, roles)

    def split_exists(self, cfg: Any, split: str) -> bool:
        """Whether the dataset of ``cfg`` has the split folder ``split``."""
        return bool(self._load(self.has_split)(cfg, split))

    def run(self, cfg: Any, **kwargs: Any) -> Any:
        """The task's own training plan (``runner``) on ``cfg``; ``None`` when it has none for ``cfg``."""
        return self._load(self.runner)(cfg, **kwargs) if self.runner else None


TASKS: dict[str, TaskSpec] = {
    "change": TaskSpec(
        name="change",
        module="geomamba.engine.module:ChangeDetectionModule",
        datamodule="geomamba.engine.datamodule:ChangeDataModule",
        prepare_data="geomamba.engine.train:prepare_data",
        has_split="geomamba.engine.tasks:change_has_split",
        monitor="F1_changed",
    ),
    "segmentation": TaskSpec(
        name="segmentation",
        module="geomamba.engine.segmentation:SegmentationModule",
        datamodule="geomamba.engine.segmentation:SegmentationDataModule",
        prepare_data="geomamba.engine.segmentation:prepare_segmentation_data",
        has_split="geomamba.engine.segmentation:segmentation_has_split",
        monitor="mIoU",
        scores=(*_CONFUSION_OVERALL, "BIoU"),
        class_scores=(*_CONFUSION_CLASS, "BIoU"),
    ),
    "classification": TaskSpec(
        name="classification",
        module="geomamba.engine.classification:ClassificationModule",
        datamodule="geomamba.engine.classification:ClassificationDataModule",
        prepare_data="geomamba.engine.classification:prepare_classification_data",
        has_split="geomamba.engine.classification:classification_has_split",
        monitor="OA",
        scores=("OA", "AA", *_CONFUSION_OVERALL[1:], "cosine"),
        runner="geomamba.engine.adcd_stages:train_stages",
    ),
}
# Task names kept for engines still to be wired in (none at present).
RESERVED_TASKS: dict[str, str] = {}


def get_task(name: str) -> TaskSpec:
    """The entry of task ``name``; ``KeyError`` naming the valid tasks otherwise."""
    if name in TASKS:
        return TASKS[name]
    if name in RESERVED_TASKS:
        raise KeyError(f"task {name!r} ({RESERVED_TASKS[name]}) is not wired into the engine yet")
    raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")


def change_has_split(cfg: Any, split: str) -> bool:
    """Whether the change-detection dataset of ``cfg`` has ``split`` (``root/split/A`` or a one-split root)."""
    from geomamba.engine.train import _has_split

    return _has_split(cfg.data.root, split)
