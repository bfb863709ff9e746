"""Training and testing runs: validation pass, config resolution, Lightning Trainer, outputs.

``train(cfg)`` writes ``<output_dir>/<name>/``::

    config.yaml         the resolved config (statistics, channels, version) — rerun it to reproduce
    checkpoints/        best-epochXXX-stepN.ckpt (best validation score) and last.ckpt
    metrics.json        history of validation scores, best, last, full val/test scores
    curves/             loss.png, metrics.png
    error_maps/         val/ and test/: red/green error maps of a few samples
    logs/               tensorboard/version_N/ and csv/version_N/ (one version per (re)start)
    train.log           the console log

A run whose ``checkpoints/last.ckpt`` exists resumes from it unless told otherwise (see ``train``).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import yaml
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher

from geomamba.data.errors import DataError, GeomambaError
from geomamba.data.labels import LabelMapping
from geomamba.data.layout import resolve_split_dir
from geomamba.data.validate import DatasetReport, validate_dataset
from geomamba.engine.callbacks import GPUMemoryMonitor, RunArtifacts
from geomamba.engine.checkpoint import (
    AtomicCheckpointIO,
    CheckpointError,
    GracefulInterrupt,
    ResumeCheckpoint,
    config_differences,
    find_resume_checkpoint,
    state_dict_differences,
    verify_checkpoint,
)
from geomamba.engine.config import ConfigError, RunConfig, config_to_dict, parse_config
from geomamba.engine.distributed import PerRankRandomState, is_launch_rank_zero, launch_rank
from geomamba.engine.guards import CollapseMonitor, NonFiniteGuard
from geomamba.engine.module import ChangeDetectionModule, load_module
from geomamba.engine.resume import ResumeState
from geomamba.engine.tasks import get_task

__all__ = ["TrainResult", "evaluate_checkpoint", "prepare_data", "setup_logging", "train"]

log = logging.getLogger("geomamba.engine")


@dataclass
class TrainResult:
    """Where a training run put its outputs, and its scores."""

    run_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    best: dict[str, Any] | None
    test_scores: dict[str, Any] | None
    task: str = "change"
    monitor: str = "F1_changed"


def setup_logging(log_file: Path | None = None, level: int = logging.INFO) -> None:
    """Console (stderr) logging of the ``geomamba`` logger at ``level`` (unless the application already
    configured the root logger), plus ``log_file`` on global rank 0. Under DDP the other ranks print
    warnings and errors only (prefixed with their rank)."""
    logger = logging.getLogger("geomamba")
    logger.setLevel(level)
    rank = launch_rank()
    mine = [h for h in logger.handlers if getattr(h, "_geomamba_console", False)]
    for h in mine:
        if h.stream is not sys.stderr:  # stderr was replaced since (redirection, test capture)
            h.setStream(sys.stderr)
    if not mine and not logging.getLogger().handlers:
        h = logging.StreamHandler(sys.stderr)
        prefix = "" if rank == 0 else f"[rank {'>0' if rank is None else rank}] "
        h.setFormatter(logging.Formatter(prefix + "%(levelname)s %(message)s"))
        if rank != 0:
            h.setLevel(logging.WARNING)
        h._geomamba_console = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    if log_file is not None and rank == 0:
        for h in list(logger.handlers):
            if getattr(h, "_geomamba_file", None) is not None:
                logger.removeHandler(h)
                h.close()
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        fh._geomamba_file = str(log_file)  # type: ignore[attr-defined]
        logger.addHandler(fh)


def _has_split(root: str, split: str) -> bool:
    try:
        resolve_split_dir(root, split)
        return True
    except DataError:
        return False


def prepare_data(cfg: RunConfig, roles: tuple[str, ...]) -> tuple[RunConfig, DatasetReport]:
    """Validation pass over the splits of ``roles`` ("train", "val", "test") and config resolution.

    Fills ``data.mean``/``data.std`` (from the train split, both dates) when null, and sets
    ``model.options.in_channels`` / ``num_classes`` when the data differ from 3 bands / 2 classes and
    the options do not say. Raises ``DataError`` listing every bad file, ``ConfigError`` for bad values.
    """
    d = cfg.data
    if not d.root:
        raise ConfigError("data.root: the dataset folder is not set (e.g. data.root=/data/LEVIR-CD)")
    if not Path(d.root).is_dir():
        raise ConfigError(f"data.root: folder {d.root} not found")
    splits = [getattr(d.splits, r) for r in roles]
    train_split = d.splits.train if "train" in roles else None
    need_stats = d.mean is None and train_split is not None
    mapping = LabelMapping(d.ignore_value)
    lists = {getattr(d.splits, r): getattr(d.list_files, r) for r in roles}
    log.info(
        "checking dataset %s (splits: %s, mode: %s)", d.root, ", ".join(dict.fromkeys(splits)), d.validate
    )
    report = validate_dataset(
        d.root,
        splits,
        mapping=mapping,
        list_files=lists,
        mode=d.validate,
        bands=d.bands,
        stats_split=train_split if need_stats and d.validate == "full" else None,
    )
    stats = report.stats
    if need_stats and stats is None:
        stats = validate_dataset(
            d.root, [train_split], mapping=mapping, list_files=lists, bands=d.bands, stats_split=train_split
        ).stats
    first = next(iter(report.splits.values()))
    channels = len(d.bands) if d.bands else first.bands
    data_updates: dict[str, Any] = {}
    if need_stats:
        data_updates["mean"] = [round(v, 4) for v in stats.mean]
        data_updates["std"] = [round(v, 4) for v in stats.std]
        log.info(
            "normalisation statistics of %s: mean %s std %s",
            train_split,
            data_updates["mean"],
            data_updates["std"],
        )
    elif d.mean is not None and channels and len(d.mean) != channels:
        raise ConfigError(f"data.mean/std have {len(d.mean)} values but the images have {channels} band(s)")
    options = dict(cfg.model.options)
    if channels and channels != 3 and "in_channels" not in options:
        options["in_channels"] = channels
    if len(d.class_names) != 2 and "num_classes" not in options:
        options["num_classes"] = len(d.class_names)
    for split, rep in report.splits.items():
        if rep.changed_fraction is not None:
            log.info(
                "%s: %d images, %.2f%% changed pixels", split, len(rep.samples), 100 * rep.changed_fraction
            )
            if rep.changed_fraction == 0 and split == train_split:
                log.warning("the train split %s has no changed pixels: the model cannot learn changes", split)
    resolved = replace(cfg, data=replace(d, **data_updates), model=replace(cfg.model, options=options))
    return resolved, report


def _check_model_runs(module: ChangeDetectionModule, channels: int) -> None:
    p = module.cfg.eval.pad_multiple * 2
    x = module.example_input(channels, p)
    module.eval()
    try:
        with torch.no_grad():
            out = module.predict_probs(x)
    except Exception as exc:
        raise ConfigError(
            f"model {module.cfg.model.name!r} failed on a {tuple(x.shape)} input ({type(exc).__name__}: "
            f"{exc}); check model.options (in_channels for {channels}-band data) and eval.pad_multiple"
        ) from exc
    finally:
        module.train()
    k = len(module.class_names)
    if out.shape[1] != k:
        raise ConfigError(
            f"model {module.cfg.model.name!r} outputs {out.shape[1]} classes but data.class_names has {k}"
        )


def _trainer(cfg: RunConfig, run_dir: Path, *, callbacks: list, loggers: Any) -> pl.Trainer:
    t = cfg.trainer
    extra = {}
    for key in ("val_check_interval", "limit_train_batches", "limit_val_batches", "limit_test_batches"):
        if getattr(t, key) is not None:
            extra[key] = getattr(t, key)
    if t.gradient_clip_val is not None:
        extra["gradient_clip_val"] = t.gradient_clip_val
        extra["gradient_clip_algorithm"] = t.gradient_clip_algorithm
    trainer = pl.Trainer(
        default_root_dir=run_dir,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=t.precision,
        accumulate_grad_batches=t.accumulate_grad_batches,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        num_sanity_val_steps=t.num_sanity_val_steps,
        log_every_n_steps=t.log_every_n_steps,
        deterministic=t.deterministic,
        benchmark=t.benchmark,
        sync_batchnorm=t.sync_batchnorm,
        enable_progress_bar=t.enable_progress_bar,
        enable_model_summary=False,
        callbacks=callbacks,
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        **extra,
    )
    _check_distributed(cfg, trainer)
    return trainer


def _check_distributed(cfg: RunConfig, trainer: pl.Trainer) -> None:
    """Reject DDP settings that cannot work, before any process is started."""
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        raise ConfigError(
            f"trainer.strategy={cfg.trainer.strategy!r}: spawned/forked processes are not supported (the "
            "scores and history would stay in the child processes); use trainer.strategy=ddp, which "
            "re-runs the command once per device, or start the processes with torchrun or srun"
        )
    if (
        cfg.trainer.sync_batchnorm
        and trainer.world_size > 1
        and not isinstance(trainer.accelerator, CUDAAccelerator)
    ):
        raise ConfigError(
            f"trainer.sync_batchnorm: PyTorch's SyncBatchNorm runs on CUDA GPUs only, but this run uses "
            f"{trainer.world_size} {type(trainer.accelerator).__name__.removesuffix('Accelerator')} processes; "
            "set trainer.sync_batchnorm=false"
        )


def _write_config(cfg: RunConfig, path: Path) -> None:
    from geomamba import __version__

    if not is_launch_rank_zero():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"# resolved by geomamba {__version__}\n" + yaml.safe_dump(
        config_to_dict(cfg), sort_keys=False, default_flow_style=None
    )
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _resume_path(run_dir: Path, resume: bool | str | Path | None) -> tuple[Path | None, dict | None]:
    """The checkpoint to resume from (checked intact) and its contents; falls back to the newest intact
    one of the run when ``last.ckpt`` is damaged (not for an explicit path)."""
    folder = run_dir / "checkpoints"
    last = folder / "last.ckpt"
    if resume is False:
        return None, None
    if resume is None or resume is True:
        if resume is None and not any(folder.glob("*.ckpt")):
            return None, None
        path, ckpt = find_resume_checkpoint(folder)
        if path is None:
            if resume is True and not last.is_file():
                raise GeomambaError(f"{last}: checkpoint to resume from not found")
            raise CheckpointError(
                f"{folder}: no intact checkpoint to resume from (see the warnings above); use --fresh to "
                "start over"
            )
        how = "found an earlier run; use --fresh to start over" if resume is None else "--resume"
        log.info("resuming from %s (%s)", path, how)
        return path, ckpt
    path = Path(resume)
    if not path.is_file():
        raise GeomambaError(f"{path}: checkpoint to resume from not found")
    ckpt = verify_checkpoint(path, training_state=True)
    log.info("resuming from %s", path)
    return path, ckpt


def _check_resumable(path: Path, ckpt: dict, module: ChangeDetectionModule) -> None:
    """The checkpoint's weights must fit the model; differing config values are listed."""
    diff = state_dict_differences(module.state_dict(), ckpt["state_dict"])
    if diff:
        raise CheckpointError(
            f"{path}: its weights do not fit model {module.cfg.model.name!r} of this config ({diff}); "
            "resume with the config it was trained with, or start over with --fresh or another name"
        )
    old = ckpt["geomamba"]["config"]
    new = config_to_dict(module.cfg)
    if old.get("optim", {}).get("name") != new["optim"]["name"]:
        raise CheckpointError(
            f"{path}: optim.name was {old.get('optim', {}).get('name')!r} and is now "
            f"{new['optim']['name']!r}: the saved optimizer state cannot be resumed (use --fresh)"
        )
    changed = [d for d in config_differences(old, new) if not d.startswith(("output_dir:", "name:"))]
    if changed:
        log.warning("resuming with a config that differs from the checkpoint's: %s", "; ".join(changed))


def _data_info(report: Any, cfg: RunConfig, channels: int) -> dict[str, Any]:
    """What the training images were (``{"dtype": "uint8", "bands": 3}``), saved in checkpoints and checked
    at prediction; the dtype is left out when the task's report does not give it."""
    splits = getattr(report, "splits", None) or {}
    info = splits.get(cfg.data.splits.train) or splits.get("train")
    dtype = getattr(info, "dtype", "") or ""
    return {"dtype": str(dtype), "bands": channels} if dtype else {"bands": channels}


def train(
    cfg: RunConfig, *, resume: bool | str | Path | None = None, callbacks: list[pl.Callback] | None = None
) -> TrainResult:
    """Train ``cfg``: validation pass, fit with checkpoints/logs/figures, then test the best checkpoint.

    Under DDP (``trainer.strategy=ddp``) every process runs this function; files are written by global
    rank 0 only, and every process returns the same scores.

    Args:
        cfg: the run config.
        resume: None = resume from ``<run>/checkpoints/last.ckpt`` if it exists; True = that file must
            exist; a path = that checkpoint; False = start from scratch (``last.ckpt`` is overwritten).
        callbacks: extra Lightning callbacks (monitoring, tests), added after the run's own.
    """
    task = get_task(cfg.task)
    planned = task.run(cfg, resume=resume, callbacks=callbacks)  # e.g. ADCD-Net's two stages
    if planned is not None:
        return planned
    run_dir = Path(cfg.output_dir) / cfg.name
    setup_logging(run_dir / "train.log")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt_path, resume_ckpt = _resume_path(run_dir, resume)
    do_test = cfg.eval.test_after_fit and task.split_exists(cfg, cfg.data.splits.test)
    roles = ("train", "val", "test") if do_test else ("train", "val")
    cfg, report = task.prepare(cfg, roles)
    cfg = parse_config(config_to_dict(cfg))  # the resolved config must pass the schema too
    _write_config(cfg, run_dir / "config.yaml")
    module = task.module_class(config_to_dict(cfg))
    channels = len(cfg.data.mean) if cfg.data.mean else report.splits[cfg.data.splits.train].bands
    _check_model_runs(module, channels)
    module.data_info = _data_info(report, cfg, channels)
    if ckpt_path is not None:
        _check_resumable(ckpt_path, resume_ckpt, module)
        del resume_ckpt
    n_params = sum(p.numel() for p in module.model.parameters())
    log.info("model %s: %.2f M parameters; run folder %s", cfg.model.name, n_params / 1e6, run_dir)
    monitor = f"val/{cfg.eval.monitor}"
    ckpt_dir = run_dir / "checkpoints"
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best-epoch{epoch:03d}-step{step}",
        monitor=monitor,
        mode="max",
        save_top_k=1,
        auto_insert_metric_name=False,
    )
    stopper = GracefulInterrupt(ckpt_dir / "last.ckpt")
    extra_callbacks = list(callbacks or [])
    callbacks = [
        checkpoint,  # best; then last.ckpt, an exact resume point (checkpoint callbacks run last, in order)
        ResumeCheckpoint(ckpt_dir / "last.ckpt", cfg.trainer.save_every_n_steps),
        RunArtifacts(run_dir, monitor=cfg.eval.monitor, positive=cfg.data.class_names[1]),
        PerRankRandomState(cfg.seed),  # before ResumeState, whose restored RNG states win on resume
        ResumeState(),
        CollapseMonitor(cfg.trainer.collapse_patience),
        GPUMemoryMonitor(),
        stopper,
    ]
    if cfg.trainer.skip_nonfinite:
        callbacks.append(NonFiniteGuard(cfg.trainer.max_bad_steps))
    if cfg.trainer.enable_progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, cfg.trainer.log_every_n_steps // 2)))
    if cfg.trainer.early_stopping_patience is not None:
        callbacks.append(
            EarlyStopping(
                monitor, mode="max", patience=cfg.trainer.early_stopping_patience, check_finite=False
            )
        )
    loggers = [
        TensorBoardLogger(run_dir / "logs", name="tensorboard", default_hp_metric=False),
        CSVLogger(run_dir / "logs", name="csv"),
    ]
    trainer = _trainer(cfg, run_dir, callbacks=callbacks + extra_callbacks, loggers=loggers)
    dm = task.datamodule_class(cfg, report)
    with stopper:  # SIGTERM/SIGINT: checkpoint at the next safe point, then TrainingInterrupted
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
        stopper.raise_if_stopped()
        best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
        last = ckpt_dir / "last.ckpt"
        history = list(module.history)  # testing a checkpoint reloads the history it was saved with
        test_scores = None
        if do_test:
            target = best if best is not None and best.is_file() else (last if last.is_file() else None)
            trainer.test(module, datamodule=dm, ckpt_path=target, weights_only=True, verbose=False)
            test_scores = module.test_scores
    best_entry = None
    if history:
        scored = [h for h in history if not math.isnan(h.get(cfg.eval.monitor, math.nan))]
        best_entry = max(scored, key=lambda h: h[cfg.eval.monitor]) if scored else None
    last_path = last if last.is_file() else None
    return TrainResult(run_dir, best, last_path, best_entry, test_scores, cfg.task, cfg.eval.monitor)


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    data_root: str | Path | None = None,
    split: str = "test",
    out_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    trust_checkpoint: bool = False,
) -> dict[str, Any]:
    """Evaluate a checkpoint on a split; writes ``metrics.json`` and error maps to ``out_dir``.

    ``out_dir`` defaults to ``<run>/test_<split>/`` when the checkpoint lies in ``<run>/checkpoints/``.
    """
    checkpoint = Path(checkpoint)
    setup_logging()
    data_over: dict[str, Any] = {"splits": {"train": "train", "val": "val", "test": split}}
    if data_root is not None:
        data_over["root"] = str(data_root)
    over = {**(overrides or {})}
    over["data"] = {**over.get("data", {}), **data_over}
    module = load_module(checkpoint, over, trust=trust_checkpoint)
    cfg = module.cfg
    if out_dir is None:
        base = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
        out_dir = base / f"test_{split}"
    out_dir = Path(out_dir)
    task = get_task(cfg.task)
    _, report = task.prepare(cfg, ("test",))
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=cfg.trainer.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=cfg.trainer.enable_progress_bar,
        enable_model_summary=False,
        callbacks=[RunArtifacts(out_dir, monitor=cfg.eval.monitor, positive=cfg.data.class_names[1])],
        default_root_dir=out_dir,
    )
    trainer.test(module, datamodule=task.datamodule_class(cfg, report), verbose=False)
    return module.test_scores
