"""The change-detection DataModule: datasets and loaders of a run's splits.

Samples come from the validation pass (``geomamba.data.validate``) when it ran, otherwise from
``geomamba.data.layout.discover_split``. The training loader is resumable mid-epoch
(``geomamba.engine.resume``; its sampler also splits the data among DDP ranks); evaluation loaders get an
unrepeated distributed sampler under DDP (each sample on exactly one rank).
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
from geomamba.engine.interrupt import worker_init
from geomamba.engine.resume import (
    ResumableDataLoader,
    ResumableSampler,
    SeededDataset,
    trainer_progress,
    weak_trainer,
)

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
        self._train_loader: ResumableDataLoader | None = None
        self._train_position: dict | None = None  # loader position restored from a checkpoint

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
        world = 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
        # Worker base seeds from the loader's own generator: iterating never draws from the global RNG.
        common = {
            "num_workers": workers,
            "pin_memory": torch.cuda.is_available(),
            "persistent_workers": workers > 0,
            "prefetch_factor": self.cfg.data.prefetch_factor if workers > 0 else None,
            "generator": torch.Generator().manual_seed(self.cfg.seed),
            "worker_init_fn": worker_init if workers > 0 else None,  # workers ignore SIGINT
        }
        if shuffle:
            # Order and augmentation are functions of (seed, epoch, position): resumable mid-epoch. The
            # sampler is a DistributedSampler, which Lightning keeps under DDP: each rank gets
            # ceil(len / world) samples; the last partial batch is dropped only when a rank has more
            # than one batch.
            seeded = SeededDataset(ds)
            per_rank = -(-len(ds) // world)
            return ResumableDataLoader(
                seeded,
                batch_size=batch_size,
                sampler=ResumableSampler(seeded, seed=self.cfg.seed),
                drop_last=per_rank > batch_size,
                progress=trainer_progress(weak_trainer(self)),
                **common,
            )
        sampler = None
        if world > 1:
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
        return DataLoader(ds, batch_size=batch_size, shuffle=False, sampler=sampler, **common)

    def _eval_batch(self, role: str) -> int:
        split = getattr(self.cfg.data.splits, role)
        bs = self.cfg.data.eval_batch_size
        if bs > 1 and self.report is not None and split in self.report.splits:
            if not self.report.splits[split].uniform_size:
                log.info("%s split has images of several sizes: evaluating one image per batch", split)
                return 1
        return bs

    def train_dataloader(self) -> DataLoader:
        loader = self._loader("train", self.cfg.data.batch_size, shuffle=True)
        if self._train_position:
            loader.load_state_dict(self._train_position)
        self._train_loader = loader
        return loader

    # The training loader's position (epoch, batches done) is saved with the data module's state, which
    # Lightning restores before it creates the loader (it may create it early, for the LR schedule).
    def state_dict(self) -> dict:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self._train_position = state_dict.get("train_loader")
        if self._train_loader is not None and self._train_position:
            self._train_loader.load_state_dict(self._train_position)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self._eval_batch("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self._eval_batch("test"), shuffle=False)
