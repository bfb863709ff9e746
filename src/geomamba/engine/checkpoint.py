"""Crash-safe checkpoints: atomic writes, integrity checks, safe loading and resume with fallback.

- Writing (``atomic_save``, and ``AtomicCheckpointIO`` for Lightning): the checkpoint is written to a hidden
  temporary file next to the target, flushed to disk (fsync), its zip records checked against their CRC32,
  and only then renamed over the target (an atomic operation), so a process killed at any moment leaves
  either the old or the new file, never a partial one. ``last.ckpt`` keeps its predecessor as
  ``last.prev.ckpt`` (a hard link, no copy).
- Reading (``verify_checkpoint``, ``load_checkpoint``): ``torch.load`` does not check the CRC of tensor data,
  so a flipped bit or a truncated file are detected first with the zip records' CRC32; then the file is
  loaded with ``torch.load(weights_only=True)`` (a pickle can run code). Loading a file that needs more is
  opt-in (``trust=True``) and warns. Every failure raises ``CheckpointError`` naming the file.
- Signals (``GracefulInterrupt``): SIGTERM/SIGINT while training save ``last.ckpt`` at the next exact resume
  point and stop with ``TrainingInterrupted`` (exit status 143/130).
- Resume points (``ResumeCheckpoint``): ``last.ckpt`` after every validation, every
  ``trainer.save_every_n_steps`` optimizer steps and when training ends, each an exact resume point.
- Resuming (``find_resume_checkpoint``): the newest intact checkpoint among ``last.ckpt``,
  ``last.prev.ckpt`` and the others of the folder, with a warning naming each damaged one skipped.
- Comparing (``state_dict_differences``, ``config_differences``): which weight keys are missing,
  unexpected or of another shape, and which config values differ.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import threading
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint

from geomamba.data.errors import GeomambaError
from geomamba.data.io import remove_stale_temps, temp_path
from geomamba.engine.interrupt import SIGNALS, TrainingInterrupted

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "GracefulInterrupt",
    "ResumeCheckpoint",
    "atomic_save",
    "config_differences",
    "find_resume_checkpoint",
    "is_resume_point",
    "load_checkpoint",
    "previous_path",
    "state_dict_differences",
    "verify_checkpoint",
]

log = logging.getLogger("geomamba.engine")


class CheckpointError(GeomambaError):
    """A checkpoint is missing, truncated, corrupt, unsafe to load or does not fit the model."""


def previous_path(path: str | Path) -> Path:
    """Where the predecessor of ``path`` is kept (``last.ckpt`` -> ``last.prev.ckpt``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_zip(path: Path) -> None:
    """Raise ``CheckpointError`` unless ``path`` is a zip archive whose records all match their CRC32."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except zipfile.BadZipFile:
        raise CheckpointError(
            f"{path}: unreadable or corrupt checkpoint (truncated, or not a zip-format torch file)"
        ) from None
    except (OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    if bad is not None:
        raise CheckpointError(
            f"{path}: unreadable or corrupt checkpoint (record {bad!r} fails its CRC check)"
        )


def atomic_save(obj: Any, path: str | Path, *, keep_previous: bool = False) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temporary file, fsync, CRC check, rename).

    Args:
        obj: what to save (for ``weights_only`` loading: tensors and plain Python data only).
        path: target file; its folder is created.
        keep_previous: keep the file being replaced as ``previous_path(path)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = temp_path(path, keep_suffix=False)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        _check_zip(tmp)
        if keep_previous and path.is_file():
            prev = previous_path(path)
            link = temp_path(prev, keep_suffix=False)
            link.unlink(missing_ok=True)
            try:
                os.link(path, link)
            except OSError:  # no hard links on this file system
                shutil.copy2(path, link)
            os.replace(link, prev)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _torch_load(path: Path, map_location: Any, weights_only: bool) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as exc:
        text = str(exc)
        if weights_only and ("Weights only load failed" in text or "weights_only" in text):
            culprit = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            what = f" ({culprit.group(1)})" if culprit else ""
            raise CheckpointError(
                f"{path}: holds Python objects{what} that a safe weights-only load refuses; if you trust the "
                "file's origin, load it with trust=True (CLI: --trust-checkpoint), which can run its code"
            ) from None
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise CheckpointError(f"{path}: unreadable or corrupt checkpoint ({first})") from None


def load_checkpoint(path: str | Path, *, map_location: Any = "cpu", trust: bool = False) -> dict[str, Any]:
    """Check and load a checkpoint file.

    Args:
        path: the file.
        map_location: as for ``torch.load``.
        trust: allow arbitrary pickled objects (``weights_only=False``, which can run code; warns).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty checkpoint file (0 bytes)")
    _check_zip(path)
    if trust:
        warnings.warn(
            f"{path}: loading with weights_only=False (trusted): the file can run arbitrary code",
            stacklevel=2,
        )
    obj = _torch_load(path, map_location, weights_only=not trust)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(obj).__name__}, expected a dict)")
    return obj


def verify_checkpoint(path: str | Path, *, training_state: bool = False) -> dict[str, Any]:
    """Load ``path`` safely and check it is a geomamba checkpoint (``training_state``: one a run can resume
    from, with optimizer and loop states); returns its contents or raises ``CheckpointError``."""
    ckpt = load_checkpoint(path)
    meta = ckpt.get("geomamba")
    if not isinstance(meta, dict) or "config" not in meta or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a geomamba checkpoint (no 'geomamba' config or 'state_dict')")
    if training_state:
        missing = [k for k in ("optimizer_states", "loops", "global_step") if k not in ckpt]
        if missing:
            raise CheckpointError(
                f"{path}: holds weights only (no {', '.join(missing)}); it cannot resume a run"
            )
    return ckpt


def _step_of(path: Path) -> int:
    m = re.search(r"step[=_-]?(\d+)", path.stem)
    return int(m.group(1)) if m else -1


def find_resume_checkpoint(folder: str | Path) -> tuple[Path | None, dict[str, Any] | None]:
    """The newest intact checkpoint of a run's ``checkpoints/`` folder, and its contents.

    Tried in order: ``last.ckpt``, ``last.prev.ckpt``, then the other ``*.ckpt`` by decreasing step in their
    name. Damaged files are skipped with a warning naming them; ``(None, None)`` when none is usable.
    """
    folder = Path(folder)
    last = folder / "last.ckpt"
    order = [last, previous_path(last)]
    if folder.is_dir():
        others = [p for p in folder.glob("*.ckpt") if p not in order and not p.name.startswith(".")]
        order += sorted(others, key=lambda p: (_step_of(p), p.name), reverse=True)
    for i, cand in enumerate(order):
        if not cand.is_file():
            continue
        try:
            ckpt = verify_checkpoint(cand, training_state=True)
        except CheckpointError as exc:
            log.warning("%s; trying an older checkpoint", exc)
            continue
        if i > 0 or cand != last:
            log.warning("resuming from %s, the newest intact checkpoint", cand)
        return cand, ckpt
    return None, None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO``: atomic saves (``atomic_save``; ``last*.ckpt`` keep a ``.prev``) and
    checked loads (``CheckpointError`` naming a truncated or corrupt file)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_save(checkpoint, path, keep_previous=Path(path).name.startswith("last"))

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint not found")
        _check_zip(path)
        return _torch_load(
            path,
            map_location if map_location is not None else "cpu",
            weights_only=True if weights_only is None else weights_only,
        )


def is_resume_point(trainer: pl.Trainer, batch_idx: int) -> bool:
    """Whether a checkpoint saved in ``on_train_batch_end`` of ``batch_idx`` resumes exactly: not while
    gradients are accumulated, and not when a validation runs right after this batch (Lightning would
    resume past it)."""
    loop = trainer.fit_loop.epoch_loop
    last = loop.batch_progress.is_last_batch
    if (batch_idx + 1) % trainer.accumulate_grad_batches and not last:
        return False
    try:
        return not loop._should_check_val_fx(trainer.fit_loop._data_fetcher)
    except (AttributeError, TypeError):  # another Lightning version: assume a validation at epoch end
        return not last


class ResumeCheckpoint(Checkpoint):
    """Keeps ``path`` (the run's ``last.ckpt``) an exact resume point.

    Saved after every validation, right after the best-checkpoint callback (``trainer.checkpoint_callback``)
    has updated its state (checkpoint callbacks run last and in order): at the end of the validation, or at
    the end of the training epoch when that callback saves there (a validation at the epoch's end); also
    every ``every_n_steps`` optimizer steps, and at the end of training when steps were made since the last
    save. A step save is skipped when a validation runs
    right after that batch (Lightning resumes such a checkpoint past the validation; the validation's own
    save follows) and while gradients are being accumulated.

    Args:
        path: the checkpoint file.
        every_n_steps: optimizer steps between saves (None: only at validations and the end).
    """

    def __init__(self, path: str | Path, every_n_steps: int | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1 or None, got {every_n_steps}")
        self.path = Path(path)
        self.every_n_steps = every_n_steps
        self._saved_step = -1

    @property
    def state_key(self) -> str:
        return "geomamba.ResumeCheckpoint"

    def _save(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(self.path)
        self._saved_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx
    ):
        n = self.every_n_steps
        step = trainer.global_step
        if n is None or step == 0 or step % n or step == self._saved_step:
            return
        if is_resume_point(trainer, batch_idx):
            self._save(trainer)

    def _at_epoch_end(self, trainer: pl.Trainer) -> bool:
        """Whether the best-checkpoint callback saves at the end of the training epoch (after a validation
        at the epoch's end) rather than at the end of validation; this callback saves right after it."""
        mc = trainer.checkpoint_callback
        fn = getattr(mc, "_should_save_on_train_epoch_end", None)
        return bool(fn(trainer)) if mc is not self and callable(fn) else False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit" and not self._at_epoch_end(trainer):
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._at_epoch_end(trainer) and trainer.global_step != self._saved_step:
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._saved_step:
            self._save(trainer)


class GracefulInterrupt(pl.Callback):
    """SIGTERM/SIGINT during training: finish the current step, save ``path``, raise ``TrainingInterrupted``.

    A first signal while training lets the current step finish, saves ``path`` (an exact resume point) and
    raises. When a validation follows that step, or the signal arrives during a validation, the stop waits
    for the validation's end (``ResumeCheckpoint`` saves there); under gradient accumulation it waits for the
    optimizer step. A second signal, or one outside the training loop (sanity check, testing), raises at
    once: the last checkpoint written stays intact.

    Use as a callback of the trainer and as a context manager around ``fit``/``test``
    (``with stopper: trainer.fit(...)``), then call ``raise_if_stopped()``.

    Args:
        path: where to save the resume checkpoint (the run's ``last.ckpt``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.signum: int | None = None
        self._training = False
        self._saved_step = -1
        self._trainer: pl.Trainer | None = None
        self._previous: dict[int, Any] = {}

    # ------------------------------------------------------------------ signal handlers
    def _handler(self, signum: int, frame: FrameType | None) -> None:
        trainer = self._trainer
        step = trainer.global_step if trainer is not None else None
        if self.signum is not None or not self._training:
            self.signum = signum
            saved = self.path if self.path.is_file() and self._saved_step >= 0 else None
            raise TrainingInterrupted(signum, step=step, checkpoint=saved)
        self.signum = signum
        launcher = trainer.strategy.launcher if trainer is not None else None
        if launcher is not None and hasattr(launcher, "kill"):
            launcher.kill(signum)  # forward to the processes Lightning launched
        log.warning(
            "received %s: stopping after the current training step with a checkpoint "
            "(send it again to stop at once)",
            signal.Signals(signum).name,
        )

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s in SIGNALS:
            previous = signal.signal(s, self._handler)
            self._previous.setdefault(s, previous)

    def __enter__(self) -> GracefulInterrupt:
        self.signum = None
        self._install()
        return self

    def __exit__(self, *exc: object) -> None:
        self._training = False
        if threading.current_thread() is threading.main_thread():
            for s, handler in self._previous.items():
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def raise_if_stopped(self) -> None:
        """Raise ``TrainingInterrupted`` if a signal arrived (e.g. during the last validation)."""
        if self.signum is not None:
            step = self._trainer.global_step if self._trainer is not None else None
            raise TrainingInterrupted(
                self.signum, step=step, checkpoint=self.path if self.path.is_file() else None
            )

    # ------------------------------------------------------------------ callback hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trainer = trainer
        self._training = True
        # Lightning installed its own SIGTERM handler (which aborts validation): ours takes over.
        self._install()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._training = False

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        self._saved_step = trainer.global_step

    def _stop_requested(self, trainer: pl.Trainer) -> bool:
        flag = self.signum is not None
        if trainer.world_size > 1:  # every rank stops at the same step
            flag = trainer.strategy.reduce_boolean_decision(flag, all=False)
            if flag and self.signum is None:
                self.signum = signal.SIGTERM
        return flag

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx):
        # A signal during validation: the validation's checkpoint is the resume point.
        if self._stop_requested(trainer) and self._saved_step == trainer.global_step:
            raise TrainingInterrupted(self.signum, step=trainer.global_step, checkpoint=self.path)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx
    ):
        if not self._stop_requested(trainer) or not is_resume_point(trainer, batch_idx):
            return  # gradients being accumulated, or a validation follows (it saves; we stop after it)
        trainer.save_checkpoint(self.path)
        raise TrainingInterrupted(self.signum, step=trainer.global_step, checkpoint=self.path)


# --------------------------------------------------------------------------------------------------
# Differences between what a checkpoint holds and what is expected.


def _some(xs: list[str], n: int = 4) -> str:
    return ", ".join(xs[:n]) + (f" (+{len(xs) - n} more)" if len(xs) > n else "")


def state_dict_differences(expected: Mapping[str, Any], found: Mapping[str, Any]) -> str | None:
    """``None`` when ``found`` has exactly the keys and shapes of ``expected``, else a one-line summary:
    ``missing: k1, k2; unexpected: k3; shape: k4 (2, 3) in the file vs (4, 3)``."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} {tuple(found[k].shape)} in the file vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and hasattr(v, "shape") and hasattr(found[k], "shape") and found[k].shape != v.shape
    ]
    parts = [
        f"{name}: {_some(keys)}"
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if keys
    ]
    return "; ".join(parts) if parts else None


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``["optim.lr: 0.001 -> 0.002", ...]`` for every leaf value that differs between two config dicts."""
    out = []
    for key in dict.fromkeys([*old, *new]):
        full = f"{prefix}{key}"
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(config_differences(a, b, full + "."))
        elif a != b:
            out.append(f"{full}: {a!r} -> {b!r}")
    return out
