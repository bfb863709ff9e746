"""The change-detection DataModule: datasets and loaders of a run's splits.

Samples come from the validation pass (``geomamba.data.validate``) when it ran, otherwise from
``geomamba.data.layout.discover_split``. Under DDP Lightning adds a ``DistributedSampler`` to the training
loader; evaluation loaders get an unrepeated one (each sample on exactly one rank).
"""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from geomamba.data.datasets import ChangeDetectionDataset
from geomamba.data.errors import DataError
from geomamba.data.labels import LabelMapping
from geomamba.data.layout import Sample, discover_split
from geomamba.data.transforms import BitemporalTransform
from geomamba.data.validate import DatasetReport
from geomamba.engine.config import RunConfig

__all__ = ["ChangeDataModule"]

log = logging.getLogger("geomamba.engine")


class ChangeDataModule(pl.LightningDataModule):
    """Train (random crops + augmentation), val and test (whole images) loaders.

    Loaders: ``data.num_workers`` worker processes kept alive between epochs, each ``data.prefetch_factor``
    batches ahead, pinned host memory when a GPU is present; ``data.cache`` keeps the decoded training
    images in memory.

    Args:
        cfg: the run config (``data`` section used).
        report: the validation pass's report (samples per split, image sizes), if it ran.
    """

    def __init__(self, cfg: RunConfig, report: DatasetReport | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.report = report
        self.datasets: dict[str, ChangeDetectionDataset] = {}

    def _samples(self, role: str) -> list[Sample]:
        split = getattr(self.cfg.data.splits, role)
        if self.report is not None and split in self.report.splits:
            return self.report.splits[split].samples
        samples, problems = discover_split(
            self.cfg.data.root, split, list_file=getattr(self.cfg.data.list_files, role)
        )
        if problems:
            raise DataError("\n  - ".join([f"problems in {self.cfg.data.root}:", *problems]))
        return samples

    def _dataset(self, role: str) -> ChangeDetectionDataset:
        if role not in self.datasets:
            d = self.cfg.data
            transform = None
            if role == "train":
                a = d.augment
                transform = BitemporalTransform(
                    crop_size=d.crop_size,
                    hflip=a.hflip,
                    vflip=a.vflip,
                    rotate90=a.rotate90,
                    date_swap=a.date_swap,
                    brightness=a.brightness,
                    contrast=a.contrast,
                    photometric_p=a.photometric_p,
                )
            self.datasets[role] = ChangeDetectionDataset(
                self._samples(role),
                mapping=LabelMapping(d.ignore_value),
                bands=d.bands,
                mean=d.mean,
                std=d.std,
                value_scale=d.value_scale,
                transform=transform,
                repeats=d.crops_per_image if role == "train" else 1,
                crop_size=d.crop_size if role == "train" else None,
                cache=d.cache and role == "train",
            )
        return self.datasets[role]

    def setup(self, stage: str | None = None) -> None:
        roles = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "fit", ())
        for role in roles:
            self._dataset(role)

    def _loader(self, role: str, batch_size: int, shuffle: bool) -> DataLoader:
        ds = self._dataset(role)
        workers = self.cfg.data.num_workers
        sampler = None
        world = 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
        if not shuffle and world > 1:
            # Evaluation under DDP: every sample exactly once over all ranks (no padding duplicates), so
            # the summed confusion matrix equals the single-process one. Each rank needs a sample: DDP's
            # first forward of an evaluation broadcasts buffers, which a rank without batches would miss.
            if len(ds) < world:
                split = getattr(self.cfg.data.splits, role)
                raise DataError(
                    f"{role} split {split!r} of {self.cfg.data.root} has {len(ds)} image(s) but the run uses "
                    f"{world} processes; each process needs at least one (use fewer devices or more images)"
                )
            sampler = UnrepeatedDistributedSampler(ds, shuffle=False)
        # Training under DDP: Lightning swaps in a DistributedSampler giving each rank ceil(len / world)
        # samples; drop the last partial batch only when a rank has more than one batch.
        per_rank = -(-len(ds) // world)
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=shuffle and per_rank > batch_size,
            persistent_workers=workers > 0,
            prefetch_factor=self.cfg.data.prefetch_factor if workers > 0 else None,
        )

    def _eval_batch(self, role: str) -> int:
        split = getattr(self.cfg.data.splits, role)
        bs = self.cfg.data.eval_batch_size
        if bs > 1 and self.report is not None and split in self.report.splits:
            if not self.report.splits[split].uniform_size:
                log.info("%s split has images of several sizes: evaluating one image per batch", split)
                return 1
        return bs

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.cfg.data.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self._eval_batch("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self._eval_batch("test"), shuffle=False)
