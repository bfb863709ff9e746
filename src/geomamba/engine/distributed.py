"""Distributed (DDP) helpers of the engine: the launch rank before Lightning knows it, per-rank random
streams, and a one-line summary of the process layout.

Lightning sets up the process group inside ``Trainer.fit``; a run writes its config and opens its log
file before that, so ``launch_rank`` reads the rank from the launcher's environment: ``RANK`` (torchrun,
``torch.distributed`` launchers), ``SLURM_PROCID`` (``srun``), ``JSM_NAMESPACE_RANK`` (LSF), or
Lightning's own ``NODE_RANK`` / ``LOCAL_RANK`` (processes started by the ``ddp`` strategy).
"""

from __future__ import annotations

import logging
import os
import random

import lightning.pytorch as pl
import numpy as np
import torch

__all__ = ["PerRankRandomState", "is_launch_rank_zero", "launch_rank"]

log = logging.getLogger("geomamba.engine")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer rank") from None


def launch_rank() -> int | None:
    """Global rank of this process as the launcher's environment gives it.

    Returns ``RANK`` when set (torchrun); ``None`` for a process that is not global rank 0 but whose
    exact rank is not known before the Trainer starts (``LOCAL_RANK`` > 0 or ``NODE_RANK`` > 0: started
    by Lightning's ``ddp`` strategy, which also happens inside an interactive SLURM shell whose
    ``SLURM_PROCID`` every child inherits); else ``SLURM_PROCID`` or ``JSM_NAMESPACE_RANK`` (one process
    per task, ``srun``); else 0 (a single-process run, or the first process of a Lightning launch).
    """
    rank = _env_int("RANK")
    if rank is not None:
        return rank
    if (_env_int("LOCAL_RANK") or 0) > 0 or (_env_int("NODE_RANK") or 0) > 0:
        return None
    for name in ("SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        rank = _env_int(name)
        if rank is not None:
            return rank
    return 0


def is_launch_rank_zero() -> bool:
    """True in the process that writes a run's files (global rank 0 of the launch)."""
    return launch_rank() == 0


class PerRankRandomState(pl.Callback):
    """Give every DDP rank its own random stream when training starts.

    ``seed_everything`` seeds all ranks alike, so with ``data.num_workers=0`` every rank would draw
    the same crops, flips and dropout masks. At ``on_train_start`` rank r > 0 reseeds Python, NumPy and
    torch with ``seed + r`` (rank 0 and single-process runs keep their stream). The distributed
    sampler keeps the shared seed (``PL_GLOBAL_SEED``), so ranks still split each epoch disjointly;
    loader workers are seeded per rank by Lightning already. When fitting starts, rank 0 also logs the
    process layout and the global batch.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1 and trainer.global_rank > 0:
            s = self.seed + trainer.global_rank
            random.seed(s)
            np.random.seed(s % 2**32)  # noqa: NPY002 (the global stream seed_everything seeds)
            torch.manual_seed(s)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1 and trainer.is_global_zero:
            dm = trainer.datamodule
            per = getattr(getattr(dm, "cfg", None), "data", None)
            batch = per.batch_size if per is not None else None
            acc = trainer.accumulate_grad_batches
            total = f", global batch {batch * trainer.world_size * acc}" if batch else ""
            log.info(
                "distributed: %d processes (%d node(s) x %d), strategy %s, batch %s per process%s",
                trainer.world_size,
                trainer.num_nodes,
                trainer.num_devices,
                type(trainer.strategy).__name__,
                batch,
                total,
            )
