"""Numerical guards of a training run: non-finite losses/gradients and class collapse.

- ``NonFiniteGuard``: a step whose loss or gradients are not finite (NaN/inf) is skipped (its gradients are
  dropped before the optimizer sees them, and buffers its forward pass changed, e.g. BatchNorm running
  statistics, are restored) and counted; after ``trainer.max_bad_steps`` such steps in a row
  the run stops with a ``NumericalError`` naming the step, the batch and the likely cause (a bad input
  tile, AMP overflow, or a learning rate that is too high).
- ``CollapseMonitor``: a class present in the validation labels but never predicted for
  ``trainer.collapse_patience`` validations in a row is reported loudly, with the remedies.

Both keep their counters in checkpoints, so a resumed run continues them.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch

from geomamba.data.errors import GeomambaError
from geomamba.metrics.confusion import find_collapsed_classes

__all__ = ["CollapseMonitor", "NonFiniteGuard", "NumericalError"]

log = logging.getLogger("geomamba.engine")


class NumericalError(GeomambaError):
    """Training produced non-finite values too many steps in a row."""


def _names(batch: Any) -> list[str]:
    if isinstance(batch, dict) and isinstance(batch.get("name"), (list, tuple)):
        return [str(n) for n in batch["name"]]
    return []


def _finite(x: Any) -> bool:
    if torch.is_tensor(x) and x.is_floating_point():
        return bool(torch.isfinite(x).all())
    if isinstance(x, dict):
        return all(_finite(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return all(_finite(v) for v in x)
    return True


class NonFiniteGuard(pl.Callback):
    """Skip and count training steps with a non-finite loss or gradient; stop after too many in a row.

    Args:
        max_bad_steps: consecutive bad steps after which training stops (None: never stop, only skip).
    """

    def __init__(self, max_bad_steps: int | None = 10) -> None:
        if max_bad_steps is not None and max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be >= 1 or None, got {max_bad_steps}")
        self.max_bad_steps = max_bad_steps
        self.consecutive = 0
        self.total = 0
        self._loss_value: float | None = None  # a non-finite loss of the current step
        self._batch: list[str] = []
        self._bad_inputs: list[str] = []  # samples with non-finite pixels in the current streak
        self._batch_idx = 0
        self._buffers: dict[str, torch.Tensor] = {}

    @property
    def state_key(self) -> str:
        return "geomamba.NonFiniteGuard"

    def state_dict(self) -> dict[str, Any]:
        return {"consecutive": self.consecutive, "total": self.total}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.consecutive = int(state_dict.get("consecutive", 0))
        self.total = int(state_dict.get("total", 0))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx):
        self._batch, self._batch_idx = _names(batch), batch_idx
        if batch_idx % trainer.accumulate_grad_batches == 0:  # first micro-batch of an optimizer step
            self._buffers = {n: b.detach().clone() for n, b in pl_module.named_buffers()}
        image = batch.get("image") if isinstance(batch, dict) else batch
        if not _finite(image):
            names = self._batch or [f"batch {batch_idx}"]
            self._bad_inputs.extend(n for n in names if n not in self._bad_inputs)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor):
        if not bool(torch.isfinite(loss.detach()).all()):
            self._loss_value = float(loss.detach().float().reshape(-1)[0])

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        grads_ok = bool(torch.stack([torch.isfinite(p.grad).all() for p in params]).all()) if params else True
        if grads_ok and self._loss_value is None:
            self.consecutive = 0
            self._bad_inputs = []
            return
        bad_param = None
        if not grads_ok:
            names = {id(p): n for n, p in pl_module.named_parameters()}
            bad_param = next(
                (names.get(id(p), "?") for p in params if not bool(torch.isfinite(p.grad).all())), None
            )
        for p in params:
            p.grad = None  # the optimizer skips parameters without gradients: nothing changes this step
        with torch.no_grad():  # undo what the forward passes changed (BatchNorm running statistics)
            for n, b in pl_module.named_buffers():
                if n in self._buffers and b.shape == self._buffers[n].shape:
                    b.copy_(self._buffers[n])
        self.consecutive += 1
        self.total += 1
        what = (
            f"non-finite loss ({self._loss_value})"
            if self._loss_value is not None
            else f"non-finite gradient (first in {bad_param})"
        )
        self._loss_value = None
        step, epoch = trainer.global_step, trainer.current_epoch
        batch = f" in batch {', '.join(self._batch)}" if self._batch else ""
        log.warning(
            "step %d (epoch %d): %s%s; step skipped (%d in a row, %d in all)",
            step,
            epoch,
            what,
            batch,
            self.consecutive,
            self.total,
        )
        pl_module.log("train/skipped_steps", float(self.total), on_step=True, on_epoch=False)
        if self.max_bad_steps is not None and self.consecutive >= self.max_bad_steps:
            raise NumericalError(
                f"training stopped at step {step} (epoch {epoch}, batch {self._batch_idx}{batch}): "
                f"{self.consecutive} steps in a row had a {what}, {self.total} skipped in all. "
                f"Likely cause: {self._cause(trainer, optimizer)} "
                "(trainer.max_bad_steps sets how many bad steps in a row are tolerated)"
            )

    def _cause(self, trainer: pl.Trainer, optimizer) -> str:
        lr = optimizer.param_groups[0].get("lr")
        causes = []
        if self._bad_inputs:
            causes.append(
                f"a bad input tile: non-finite pixel values in {', '.join(self._bad_inputs[:8])} "
                "(fix or remove these files; data.validate=full checks every file before training)"
            )
        precision = str(trainer.precision)
        if "16" in precision and "bf16" not in precision:
            causes.append(
                f"AMP overflow (trainer.precision={precision}): use bf16-mixed or 32, or a lower learning rate"
            )
        causes.append(
            f"the learning rate is too high (lr {lr:g} at this step): lower optim.lr, add warm-up "
            "(scheduler.warmup_epochs) or clip gradients (trainer.gradient_clip_val=1.0)"
        )
        return "; or ".join(causes)


class CollapseMonitor(pl.Callback):
    """Loud report when a class goes unpredicted for ``patience`` validations in a row.

    Reads ``pl_module.last_val_scores`` (the scores of ``geomamba.metrics.scores_from_confusion``) after each
    validation; the report repeats every ``patience`` validations while the collapse lasts.

    Args:
        patience: validations in a row (>= 1).
    """

    def __init__(self, patience: int = 3) -> None:
        if patience < 1:
            raise ValueError(f"collapse patience must be >= 1, got {patience}")
        self.patience = patience
        self.streaks: dict[str, int] = {}
        self.reports: list[str] = []

    @property
    def state_key(self) -> str:
        return "geomamba.CollapseMonitor"

    def state_dict(self) -> dict[str, Any]:
        return {"streaks": dict(self.streaks)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.streaks = dict(state_dict.get("streaks", {}))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        scores = getattr(pl_module, "last_val_scores", None)
        if trainer.sanity_checking or not scores:
            return
        collapsed = set(find_collapsed_classes(scores))
        for name in scores["predicted"]:
            self.streaks[name] = self.streaks.get(name, 0) + 1 if name in collapsed else 0
        for name, n in self.streaks.items():
            if n >= self.patience and n % self.patience == 0 and trainer.is_global_zero:
                self.reports.append(self._report(name, n, trainer, scores))
                log.warning("%s", self.reports[-1])

    def _report(self, name: str, n: int, trainer: pl.Trainer, scores: dict) -> str:
        bar = "#" * 100
        return (
            f"\n{bar}\n## CLASS COLLAPSE: class {name!r} has not been predicted a single time in the last {n} "
            f"validations (epochs {trainer.current_epoch - n + 1}-{trainer.current_epoch}), although the "
            f"validation labels hold {scores['support'][name]} pixels of it.\n"
            "## The model predicts the other class(es) everywhere. Remedies (config overrides):\n"
            "##  - class weights:        loss='{name: ce, class_weights: [1, 10]}'\n"
            "##  - focal and/or Dice:    loss=dice_focal   or   loss='{name: focal, gamma: 2, class_weights: [1, 5]}'\n"
            "##  - hard-pixel mining:     loss='{name: ohem, thresh: 0.7}'\n"
            f"##  - oversampling:         show tiles that contain {name!r} more often (more random crops "
            "per tile, data.crops_per_image, or a train split holding more such tiles)\n"
            "##  - a lower learning rate (optim.lr) or warm-up (scheduler.warmup_epochs)\n"
            f"## (reported after trainer.collapse_patience={self.patience} validations in a row)\n{bar}"
        )
