"""Numerical guards of a training run: non-finite losses/gradients and class collapse.

- ``NonFiniteGuard``: a step whose loss or gradients are not finite (NaN/inf) is skipped (the optimizer
  leaves the weights and its state alone, and buffers its forward pass changed, e.g. BatchNorm running
  statistics, are restored) and counted; after ``trainer.max_bad_steps`` such steps in a row
  the run stops with a ``NumericalError`` naming the step, the batch and the likely cause (a bad input
  tile, AMP overflow, or a learning rate that is too high). With the fused optimizers this needs no host
  synchronisation per step (see the class).
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


def _nonfinite(x: Any) -> torch.Tensor | None:
    """A 0-d bool tensor on ``x``'s device: whether a floating tensor of ``x`` holds NaN/inf (no host
    read); None when ``x`` holds no floating tensor."""
    if torch.is_tensor(x):
        return ~torch.isfinite(x).all() if x.is_floating_point() else None
    items = x.values() if isinstance(x, dict) else x if isinstance(x, (list, tuple)) else ()
    flags = [f for f in (_nonfinite(v) for v in items) if f is not None]
    return torch.stack(flags).any() if flags else None


def _grads_nonfinite(params: list[torch.Tensor]) -> torch.Tensor | None:
    """Whether any gradient holds NaN/inf, as a 0-d bool tensor (one fused norm per device, no host read)."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for p in params:
        by_device.setdefault(p.grad.device, []).append(p.grad)
    flags = [
        ~torch.isfinite(torch.stack([n.float() for n in torch._foreach_norm(grads)])).all()
        for grads in by_device.values()
    ]
    if not flags:
        return None
    first = flags[0].device
    return torch.stack([f.to(first, non_blocking=True) for f in flags]).any()


class _Step:
    """What the guard knows about one optimizer step until its flags are read."""

    __slots__ = ("batch", "batch_idx", "epoch", "grad", "input", "loss", "loss_value", "lr", "step")

    def __init__(self, step: int, epoch: int, batch_idx: int, lr: Any) -> None:
        self.step, self.epoch, self.batch_idx, self.lr = step, epoch, batch_idx, lr
        self.batch: list[str] = []
        self.input: list[tuple[list[str], torch.Tensor]] = []  # (sample names, non-finite pixels?)
        self.loss: torch.Tensor | None = None  # non-finite loss? (0-d bool)
        self.loss_value: torch.Tensor | None = None
        self.grad: torch.Tensor | None = None  # non-finite gradient? (0-d bool)


class NonFiniteGuard(pl.Callback):
    """Skip and count training steps with a non-finite loss or gradient; stop after too many in a row.

    The checks run on the device. With an optimizer that takes a ``found_inf`` flag (the fused AdamW/SGD
    kernels, ``optim.fused`` on a GPU) the skip happens on the device as well and the flags are read on the
    host only every ``read_every`` optimizer steps (default ``trainer.log_every_n_steps``), at epoch ends and
    at checkpoints: the training step stays free of host synchronisation, and a run stops at most
    ``read_every`` steps after the bad streak reached ``max_bad_steps``. With other optimizers the flags are
    read once per optimizer step (one host read) and the gradients of a bad step are dropped.

    Args:
        max_bad_steps: consecutive bad steps after which training stops (None: never stop, only skip).
        read_every: optimizer steps between host reads when the skip is on the device (None: the
            trainer's ``log_every_n_steps``).
    """

    def __init__(self, max_bad_steps: int | None = 10, *, read_every: int | None = None) -> None:
        if max_bad_steps is not None and max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be >= 1 or None, got {max_bad_steps}")
        if read_every is not None and read_every < 1:
            raise ValueError(f"read_every must be >= 1 or None, got {read_every}")
        self.max_bad_steps = max_bad_steps
        self.read_every = read_every
        self.consecutive = 0
        self.total = 0
        self.host_reads = 0  # how many times flags were read on the host
        self._bad_inputs: list[str] = []  # samples with non-finite pixels in the current streak
        self._current: _Step | None = None
        self._pending: list[_Step] = []  # steps made, flags not read yet (device skip only)
        self._buffers: dict[str, torch.Tensor] = {}
        self._total_dev: torch.Tensor | None = None  # skipped steps, on the device (for logging)
        self._deferred: NumericalError | None = None

    @property
    def state_key(self) -> str:
        return "geomamba.NonFiniteGuard"

    def state_dict(self) -> dict[str, Any]:
        self._read(raise_error=False)  # a checkpoint holds the counters of every step it holds
        return {"consecutive": self.consecutive, "total": self.total}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.consecutive = int(state_dict.get("consecutive", 0))
        self.total = int(state_dict.get("total", 0))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx):
        if self._current is None:  # first micro-batch of an optimizer step
            self._buffers = {n: b.detach().clone() for n, b in pl_module.named_buffers()}
            lr = trainer.optimizers[0].param_groups[0].get("lr", float("nan")) if trainer.optimizers else 0.0
            self._current = _Step(trainer.global_step, trainer.current_epoch, batch_idx, lr)
        cur = self._current
        names = _names(batch)
        cur.batch.extend(names)
        cur.batch_idx = batch_idx
        flag = _nonfinite(batch.get("image") if isinstance(batch, dict) else batch)
        if flag is not None:
            cur.input.append((names or [f"batch {batch_idx}"], flag))

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor):
        if self._current is None:
            return
        loss = loss.detach()
        flag = ~torch.isfinite(loss).all()
        cur = self._current
        if cur.loss is None:
            cur.loss, cur.loss_value = flag, loss.float().reshape(-1)[0]
        else:  # gradient accumulation: the first non-finite loss of the step is reported
            cur.loss_value = torch.where(cur.loss, cur.loss_value, loss.float().reshape(-1)[0])
            cur.loss = cur.loss | flag

    @staticmethod
    def _device_skip(optimizer: Any) -> bool:
        return bool(getattr(optimizer, "_step_supports_amp_scaling", False))

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        cur, self._current = self._current, None
        if cur is None:
            return
        optimizer = getattr(optimizer, "optimizer", optimizer)  # a LightningOptimizer wraps it
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        cur.grad = _grads_nonfinite(params)
        flags = [f for f in (cur.loss, cur.grad) if f is not None]
        if not flags:
            return
        bad = torch.stack(flags).any()
        if self._device_skip(optimizer):
            # The fused kernels skip the update (and the step count) where ``found_inf`` is 1.
            optimizer.found_inf = bad.float()
            with torch.no_grad():  # undo what the forward passes changed (BatchNorm running statistics)
                for n, b in pl_module.named_buffers():
                    saved = self._buffers.get(n)
                    if saved is not None and b.shape == saved.shape:
                        b.copy_(torch.where(bad, saved, b))
            self._total_dev = bad.long() if self._total_dev is None else self._total_dev + bad.long()
            pl_module.log("train/skipped_steps", self._total_dev.float(), on_step=True, on_epoch=False)
            self._pending.append(cur)
            every = self.read_every or max(1, trainer.log_every_n_steps)
            if len(self._pending) >= every:
                self._read()
            return
        self._pending.append(cur)
        if self._read(trainer=trainer, optimizer=optimizer, pl_module=pl_module, params=params):
            for p in params:
                p.grad = None  # the optimizer skips parameters without gradients: nothing changes
            with torch.no_grad():
                for n, b in pl_module.named_buffers():
                    if n in self._buffers and b.shape == self._buffers[n].shape:
                        b.copy_(self._buffers[n])
            pl_module.log("train/skipped_steps", float(self.total), on_step=True, on_epoch=False)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx
    ):
        for opt in trainer.optimizers:  # found_inf must not outlive its step
            if hasattr(opt, "found_inf"):
                del opt.found_inf

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._read()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._read()

    def _read(
        self,
        *,
        raise_error: bool = True,
        trainer: pl.Trainer | None = None,
        optimizer: Any = None,
        pl_module: pl.LightningModule | None = None,
        params: list[torch.Tensor] | None = None,
    ) -> bool:
        """Read the flags of the pending steps (one host read), update the counters, warn for each bad step
        and raise ``NumericalError`` once a streak reaches ``max_bad_steps``. Returns whether the last
        pending step was bad."""
        if raise_error and self._deferred is not None:
            error, self._deferred = self._deferred, None
            raise error
        if not self._pending:
            return False
        steps, self._pending = self._pending, []
        row = []
        for st in steps:
            row += [
                st.loss if st.loss is not None else torch.zeros((), dtype=torch.bool),
                st.grad if st.grad is not None else torch.zeros((), dtype=torch.bool),
                st.loss_value if st.loss_value is not None else torch.zeros(()),
            ]
            row += [f for _, f in st.input]
        device = next((t.device for t in row if t.device.type != "cpu"), torch.device("cpu"))
        values = torch.stack([t.to(device).float() for t in row]).tolist()  # the one host read
        self.host_reads += 1
        i, bad = 0, False
        for st in steps:
            loss_bad, grad_bad, loss_value = bool(values[i]), bool(values[i + 1]), values[i + 2]
            inputs = values[i + 3 : i + 3 + len(st.input)]
            i += 3 + len(st.input)
            for (names, _), flagged in zip(st.input, inputs):
                if flagged:
                    self._bad_inputs.extend(n for n in names if n not in self._bad_inputs)
            bad = loss_bad or grad_bad
            if not bad:
                self.consecutive = 0
                self._bad_inputs = []
                continue
            self.consecutive += 1
            self.total += 1
            if loss_bad:
                what = f"non-finite loss ({loss_value})"
            else:
                where = self._first_bad_param(pl_module, params) if params else None
                what = f"non-finite gradient (first in {where})" if where else "non-finite gradient"
            batch = f" in batch {', '.join(st.batch)}" if st.batch else ""
            log.warning(
                "step %d (epoch %d): %s%s; step skipped (%d in a row, %d in all)",
                st.step,
                st.epoch,
                what,
                batch,
                self.consecutive,
                self.total,
            )
            if self.max_bad_steps is not None and self.consecutive >= self.max_bad_steps:
                error = NumericalError(
                    f"training stopped at step {st.step} (epoch {st.epoch}, batch {st.batch_idx}{batch}): "
                    f"{self.consecutive} steps in a row had a {what}, {self.total} skipped in all. "
                    f"Likely cause: {self._cause(trainer, st.lr)} "
                    "(trainer.max_bad_steps sets how many bad steps in a row are tolerated)"
                )
                if raise_error:
                    raise error
                self._deferred = error  # read for a checkpoint: raised at the next read
        return bad

    @staticmethod
    def _first_bad_param(pl_module: pl.LightningModule | None, params: list[torch.Tensor]) -> str | None:
        names = {id(p): n for n, p in pl_module.named_parameters()} if pl_module is not None else {}
        return next((names.get(id(p), "?") for p in params if not bool(torch.isfinite(p.grad).all())), None)

    def _cause(self, trainer: pl.Trainer | None, lr: Any) -> str:
        causes = []
        if self._bad_inputs:
            causes.append(
                f"a bad input tile: non-finite pixel values in {', '.join(self._bad_inputs[:8])} "
                "(fix or remove these files; data.validate=full checks every file before training)"
            )
        precision = str(trainer.precision) if trainer is not None else ""
        if "16" in precision and "bf16" not in precision:
            causes.append(
                f"AMP overflow (trainer.precision={precision}): use bf16-mixed or 32, or a lower learning rate"
            )
        causes.append(
            f"the learning rate is too high (lr {float(lr):g} at this step): lower optim.lr, add warm-up "
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
        if trainer.sanity_checking or not scores or "predicted" not in scores or "support" not in scores:
            return  # no per-class prediction counts (e.g. the self-supervised stage of classification)
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
