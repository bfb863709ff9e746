"""Callbacks writing a run's outputs on global rank 0: ``metrics.json``, curves and error maps; GPU memory
logging."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from geomamba.engine.figures import plot_curves, save_error_maps

__all__ = ["GPUMemoryMonitor", "RunArtifacts", "SaveLastOnTrainEnd", "gpu_memory_stats", "write_json"]


def _clean(x: Any) -> Any:
    if isinstance(x, float):
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON atomically (NaN/inf written as null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_clean(data), indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


class RunArtifacts(pl.Callback):
    """After each validation and test: ``metrics.json``, ``curves/{loss,metrics}.png`` and
    ``error_maps/{val,test}/`` (a few samples as red/green error maps) under ``run_dir``.

    ``metrics.json``: ``{"monitor", "best": entry, "last": entry, "history": [entry per validation],
    "val": full scores of the last validation, "test": full scores of the test}`` where an entry holds the
    epoch, step, train loss, learning rate and the flat validation scores.
    """

    def __init__(self, run_dir: str | Path, *, monitor: str, positive: str = "changed") -> None:
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.positive = positive

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.json"

    def _update(self, **values: Any) -> None:
        data = _read_json(self.metrics_path)
        data.update(values)
        write_json(self.metrics_path, data)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        history = list(getattr(pl_module, "history", []))
        if not history:
            return

        def score(h: dict) -> float:
            v = h.get(self.monitor, math.nan)
            return -math.inf if v is None or math.isnan(v) else v

        best = max(history, key=score)
        self._update(
            monitor=self.monitor, best=best, last=history[-1], history=history, val=pl_module.last_val_scores
        )
        plot_curves(history, self.run_dir / "curves", self.positive, getattr(pl_module, "curve_keys", None))
        save = getattr(pl_module, "save_samples", save_error_maps)
        save(
            pl_module.error_samples,
            self.run_dir / "error_maps" / "val",
            f"validation epoch {history[-1]['epoch']}",
        )

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or pl_module.test_scores is None:
            return
        self._update(test=pl_module.test_scores)
        save = getattr(pl_module, "save_samples", save_error_maps)
        save(pl_module.error_samples, self.run_dir / "error_maps" / "test", "test")


class SaveLastOnTrainEnd(pl.Callback):
    """Save ``path`` when training ends after steps that no checkpoint holds yet (e.g. ``max_steps``
    reached in the middle of an epoch), so that a resumed run continues from the true last step."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._saved_step = -1

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        self._saved_step = trainer.global_step

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._saved_step and not trainer.sanity_checking:
            trainer.save_checkpoint(self.path)


def gpu_memory_stats(device: torch.device | str) -> dict[str, float]:
    """GPU memory of a CUDA ``device`` in GiB: ``gpu/mem_allocated_gb`` (now), ``gpu/mem_peak_gb`` (peak
    allocated since the last ``torch.cuda.reset_peak_memory_stats``), ``gpu/mem_reserved_gb`` (held by the
    caching allocator); ``{}`` for other devices."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return {}
    gib = float(2**30)
    return {
        "gpu/mem_allocated_gb": torch.cuda.memory_allocated(device) / gib,
        "gpu/mem_peak_gb": torch.cuda.max_memory_allocated(device) / gib,
        "gpu/mem_reserved_gb": torch.cuda.memory_reserved(device) / gib,
    }


class GPUMemoryMonitor(pl.Callback):
    """Logs ``gpu_memory_stats`` every ``log_every_n_steps`` training batches (TensorBoard and CSV), then
    resets the peak, so ``gpu/mem_peak_gb`` is the peak of each logging interval. Nothing off CUDA."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx
    ) -> None:
        if pl_module.device.type != "cuda" or (batch_idx + 1) % max(1, trainer.log_every_n_steps):
            return
        stats = gpu_memory_stats(pl_module.device)
        for name, value in stats.items():
            pl_module.log(name, value, on_step=True, on_epoch=False, batch_size=1)
        torch.cuda.reset_peak_memory_stats(pl_module.device)
