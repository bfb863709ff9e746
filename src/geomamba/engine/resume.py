"""Exact resume: a training run stopped at any step and resumed gives the same weights as one that never
stopped (bit-identical on CPU with deterministic settings).

What makes it exact:

- ``ResumableSampler``: the sample order of an epoch is a function of ``(seed, epoch)`` only, each sample
  gets its own random seed (a function of ``(seed, epoch, position)``), and the sampler can start in the
  middle of an epoch. ``SeededDataset`` runs each sample's augmentation under its seed, so augmentation
  does not depend on the process, the number of workers or what happened before.
- ``ResumableDataLoader``: Lightning saves its ``state_dict`` (epoch, batches consumed) in every
  checkpoint and restores it before creating the iterator, so a mid-epoch resume skips exactly the
  batches already trained on. It draws its worker base seed from its own generator, not the global one.
- ``ResumeState`` (callback): saves the global RNG states (Python, NumPy, torch CPU and CUDA) and the
  running states of the module's torchmetrics (e.g. the epoch's mean training loss) in the checkpoint and
  restores them when training restarts.

Optimizer, LR scheduler, loop progress, callbacks (best checkpoint, early stopping) and the module's
history are saved by Lightning and ``ChangeDetectionModule``.
"""

from __future__ import annotations

import math
import os
import random
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from torchmetrics import Metric

__all__ = ["ResumableDataLoader", "ResumableSampler", "ResumeState", "SeededDataset"]


class SeededDataset(Dataset):
    """Wraps a dataset so that item ``(index, seed)`` is produced with the torch RNG seeded by ``seed``
    (the caller's RNG state is left untouched); a plain ``index`` is passed through.

    Args:
        dataset: any map-style dataset whose randomness comes from the torch RNG.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        if not isinstance(key, tuple):
            return _contiguous(self.dataset[key])
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return _contiguous(self.dataset[index])


def _contiguous(item: Any) -> Any:
    """Tensors of ``item`` made contiguous: loader workers collate into contiguous shared memory, the main
    process stacks keeping each item's strides, and convolutions of differently laid out inputs differ in
    the last bits; with contiguous items a batch is the same either way (resuming with another
    ``data.num_workers`` stays exact)."""
    if torch.is_tensor(item):
        return item.contiguous()
    if isinstance(item, dict):
        return {k: _contiguous(v) for k, v in item.items()}
    if isinstance(item, list):
        return [_contiguous(v) for v in item]
    if type(item) is tuple:
        return tuple(_contiguous(v) for v in item)
    return item


class ResumableSampler(DistributedSampler):
    """Shuffling sampler yielding ``(index, sample_seed)`` pairs, resumable in the middle of an epoch.

    A ``DistributedSampler`` (so Lightning keeps it under DDP, where each rank takes every
    ``num_replicas``-th position of the padded order); with one process it is a plain shuffling sampler.
    ``len()`` is always the whole epoch.

    Args:
        dataset: the (``SeededDataset``-wrapped) dataset.
        seed: the run seed; the order of epoch ``e`` depends only on ``(seed, e)``.
        shuffle: random order (else sequential), still with per-sample seeds.
        num_replicas, rank: default from ``torch.distributed`` when initialised, else 1 and 0.
        drop_last: drop the tail that does not divide among replicas (else pad by repeating).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        seed: int,
        shuffle: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        if num_replicas is None:
            num_replicas = torch.distributed.get_world_size() if dist else 1
        if rank is None:
            rank = torch.distributed.get_rank() if dist else 0
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        self._start: tuple[int, int] | None = None  # (epoch, first position of this rank) to resume at

    def resume_at(self, epoch: int, position: int) -> None:
        """Make the next iteration be epoch ``epoch`` starting at this rank's ``position``-th sample."""
        self.epoch = epoch
        self._start = (epoch, position)

    def _order(self) -> tuple[list[int], list[int]]:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.dataset)  # type: ignore[arg-type]
        order = torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n))
        if self.drop_last:
            order = order[: self.total_size]
        else:
            pad = self.total_size - len(order)
            order += (order * math.ceil(pad / max(1, len(order))))[:pad]
        seeds = torch.randint(0, 2**31 - 1, (self.total_size,), generator=g).tolist()
        return order[self.rank :: self.num_replicas], seeds[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        start = 0
        if self._start is not None and self._start[0] == self.epoch:
            start = self._start[1]
        self._start = None
        order, seeds = self._order()
        return iter(list(zip(order[start:], seeds[start:])))


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a ``ResumableSampler`` whose position Lightning saves in checkpoints.

    Args (besides those of ``DataLoader``, whose ``sampler`` must be a ``ResumableSampler``):
        progress: returns ``(batches of the current epoch already trained on, batches per epoch)``;
            read when a checkpoint is saved.
    """

    def __init__(self, *args: Any, progress: Callable[[], tuple[int, int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError("ResumableDataLoader needs a ResumableSampler")
        self._progress = progress

    def state_dict(self) -> dict[str, int]:
        done, per_epoch = self._progress()
        return {"epoch": int(self.sampler.epoch), "batches": int(done), "per_epoch": int(per_epoch)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, done = state["epoch"], state["batches"]
        if done >= state["per_epoch"]:  # saved at the end of an epoch: the next one starts afresh
            epoch, done = epoch + 1, 0
        self.sampler.resume_at(epoch, done * (self.batch_size or 1))


def trainer_progress(trainer_ref: Callable[[], pl.Trainer | None]) -> Callable[[], tuple[int, int]]:
    """``progress`` function for ``ResumableDataLoader`` reading a trainer's loop counters."""

    def progress() -> tuple[int, int]:
        trainer = trainer_ref()
        if trainer is None:
            return 0, 1
        loop = trainer.fit_loop.epoch_loop
        per_epoch = trainer.num_training_batches
        per_epoch = int(per_epoch) if math.isfinite(per_epoch) else 2**62
        # ``processed`` counts the batches whose training step ran, also when saving in
        # ``on_train_batch_end`` (``completed`` is incremented after that hook).
        return int(loop.batch_progress.current.processed), per_epoch

    return progress


def weak_trainer(owner: pl.LightningDataModule) -> Callable[[], pl.Trainer | None]:
    """A function returning ``owner.trainer`` (or None), holding no strong reference to ``owner``."""
    ref = weakref.ref(owner)

    def get() -> pl.Trainer | None:
        obj = ref()
        return None if obj is None else obj.trainer

    return get


# --------------------------------------------------------------------------------------------------
# Global RNG and metric states.


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global state is what we save)
    return {
        "python": random.getstate(),
        "numpy": (
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _metric_states(module: torch.nn.Module) -> dict[str, Any]:
    out = {}
    for name, m in module.named_modules():
        if isinstance(m, Metric) and m.update_count:
            out[name] = {
                "update_count": int(m.update_count),
                "state": {
                    k: v.detach().cpu().clone() for k, v in m.metric_state.items() if torch.is_tensor(v)
                },
            }
    return out


def _load_metric_states(module: torch.nn.Module, states: dict[str, Any]) -> None:
    mods = dict(module.named_modules())
    for name, saved in states.items():
        m = mods.get(name)
        if not isinstance(m, Metric):
            continue
        for k, v in saved["state"].items():
            current = getattr(m, k)
            setattr(m, k, v.to(current.device, current.dtype) if torch.is_tensor(current) else v)
        m._update_count = saved["update_count"]
        m._computed = None


class ResumeState(pl.Callback):
    """Saves the global RNG states, the module's running metric states and the values monitored by
    ``ReduceLROnPlateau`` schedulers in every checkpoint, and restores them when training resumes (RNG and
    metrics at ``on_train_start``, after Lightning's own restore and the dataloader set-up, just before the
    first resumed step).

    Plateau schedulers (epoch interval) are stepped by Lightning after the ``on_train_epoch_end`` hooks:
    a checkpoint saved in those hooks lacks that step, and Lightning skips it at the end of the first epoch
    after a resume (the monitored metric is not in its checkpoints). This callback makes up for both, with
    the value of the latest validation, as an uninterrupted run would.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None
        self._trainer: pl.Trainer | None = None
        self._module: pl.LightningModule | None = None
        self._monitored: dict[str, float] = {}
        self._step_pending = False  # Lightning is about to step the plateau schedulers of this epoch
        self._deferred_epoch: int | None = None  # epoch whose plateau step Lightning skipped (resumed)

    @property
    def state_key(self) -> str:
        return "geomamba.ResumeState"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer, self._module = trainer, pl_module

    def _plateau_configs(self) -> list:
        configs = self._trainer.lr_scheduler_configs if self._trainer is not None else []
        return [c for c in configs if c.reduce_on_plateau and c.interval == "epoch"]

    def state_dict(self) -> dict[str, Any]:
        metrics = _metric_states(self._module) if self._module is not None else {}
        monitored = dict(self._monitored)
        if self._trainer is not None:
            for c in self._plateau_configs():
                value = self._trainer.callback_metrics.get(c.monitor)
                if value is not None:
                    monitored[c.monitor] = float(value)
        return {
            "rng": _rng_state(),
            "metrics": metrics,
            "monitored": monitored,
            "plateau_step_pending": self._step_pending,
            "epoch": self._trainer.current_epoch if self._trainer is not None else 0,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict
        self._monitored = dict(state_dict.get("monitored", {}))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        _load_metric_states(pl_module, state.get("metrics", {}))
        if state.get("plateau_step_pending"):  # saved at an epoch end, before Lightning's plateau step
            self._step_plateau(trainer, pl_module, int(state.get("epoch", trainer.current_epoch - 1)))
        _set_rng_state(state["rng"])
        if trainer.world_size > 1 and trainer.global_rank > 0:
            # Checkpoints hold rank 0's streams: the other ranks get their own, a function of (seed, rank,
            # step) (DDP resumes within tolerance, not bit-identically).
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) + trainer.global_rank + 7919 * trainer.global_step
            random.seed(seed)
            np.random.seed(seed % 2**32)  # noqa: NPY002 (the global stream)
            torch.manual_seed(seed)

    def _step_plateau(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        for c in self._plateau_configs():
            if (epoch + 1) % c.frequency:
                continue
            value = trainer.callback_metrics.get(c.monitor)
            if value is None and c.monitor in self._monitored:
                value = torch.tensor(self._monitored[c.monitor])
            if value is not None:
                pl_module.lr_scheduler_step(c.scheduler, value)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._deferred_epoch is not None:  # the step Lightning skipped at the end of the resumed epoch
            epoch, self._deferred_epoch = self._deferred_epoch, None
            self._step_plateau(trainer, pl_module, epoch)
        self._step_pending = False

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx):
        self._step_pending = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loop = trainer.fit_loop
        # Lightning steps plateau schedulers after this hook iff ``not restarting`` and the epoch ran out.
        if not pl_module.automatic_optimization or not loop.epoch_loop._num_ready_batches_reached():
            return
        if loop.restarting:
            # Lightning skips this step in the epoch it resumed in: make it up, at the same point of the run
            # (after the epoch-end checkpoints, before the next epoch), so checkpoints match.
            self._deferred_epoch = trainer.current_epoch
        self._step_pending = True
