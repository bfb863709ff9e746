"""The change-detection LightningModule: any registered model, any loss, metrics from one confusion matrix.

The module is built from a *resolved* config (a plain dict, see ``geomamba.engine.config``), which is
stored in every checkpoint under ``checkpoint["geomamba"]`` together with the package version and the
history of validation scores. Checkpoints hold only plain data and tensors, so they load with
``torch.load(path, weights_only=True)``; ``load_module`` rebuilds a module from one.
"""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn as nn
from lightning.fabric.utilities.warnings import PossibleUserWarning
from timm.optim import param_groups_weight_decay
from torchmetrics import MeanMetric

from geomamba.data.errors import GeomambaError
from geomamba.data.labels import IGNORE_INDEX
from geomamba.engine.acceleration import (
    CompiledModel,
    apply_channels_last,
    apply_fast_norm,
    build_optimizer,
    clips_under_amp,
)
from geomamba.engine.config import ConfigError, RunConfig, config_to_dict, parse_config
from geomamba.engine.inference import make_predict_fn, sliding_window_probs
from geomamba.layers.plugin_places import PluginError
from geomamba.losses import build_loss
from geomamba.losses._common import validate_labels
from geomamba.metrics.confusion import (
    ConfusionMatrix,
    flatten_scores,
    format_table,
    scores_from_confusion,
    warn_collapsed_classes,
)
from geomamba.models import create_model, get_model_entry

__all__ = ["ChangeDetectionModule", "build_loss_from_config", "build_model", "load_module"]

log = logging.getLogger("geomamba.engine")

# Validation/test scores are logged with sync_dist=False on purpose: they come from the confusion matrix
# already summed over the DDP ranks, so every rank logs the same global value. Silence Lightning's advice
# to sync them (for these keys only).
warnings.filterwarnings(
    "ignore", message=r"It is recommended to use `self\.log\('(val|test)/", category=PossibleUserWarning
)


def build_model(cfg: RunConfig) -> nn.Module:
    """Create ``cfg.model.name`` with ``cfg.model.options``; unknown names/options raise ``ConfigError``."""
    try:
        entry = get_model_entry(cfg.model.name)
    except KeyError as exc:
        raise ConfigError(f"model.name: {exc.args[0]}") from None
    params = inspect.signature(entry.factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_any:
        unknown = sorted(set(cfg.model.options) - set(params))
        if unknown:
            valid = ", ".join(n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL)
            raise ConfigError(
                f"model.options.{unknown[0]}: not an option of model {cfg.model.name!r}; valid options: {valid}"
            )
    try:
        return create_model(cfg.model.name, **cfg.model.options)
    except PluginError as exc:  # unknown plug-in name or place: the message lists the valid ones
        raise ConfigError(f"model.options of {cfg.model.name!r}: {exc}") from exc
    except TypeError as exc:
        if "argument" in str(exc):
            raise ConfigError(f"model.options of {cfg.model.name!r}: {exc}") from exc
        raise


def build_loss_from_config(cfg: RunConfig) -> nn.Module:
    """``geomamba.losses.build_loss(cfg.loss)``; bad specs raise ``ConfigError`` naming ``loss``."""
    try:
        return build_loss(cfg.loss)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"loss: {exc}") from exc


def _synced_mean(metric: MeanMetric) -> torch.Tensor:
    """The mean over all DDP ranks (NaN when no rank recorded a value). Every rank must call this,
    also one without updates: ``compute`` synchronises the ranks."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*was called before the ``update`` method")
        return metric.compute()


def _lr_lambda(name: str, total: int, warmup: int, start: float, power: float, floor: float):
    def fn(step: int) -> float:
        if step < warmup:
            return start + (1 - start) * step / max(1, warmup)
        if name == "none":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if name == "poly":
            decay = (1 - progress) ** power
        else:  # cosine
            decay = 0.5 * (1 + math.cos(math.pi * progress))
        return floor + (1 - floor) * decay

    return fn


class ChangeDetectionModule(pl.LightningModule):
    """Training, validation and test of a bitemporal change-detection model.

    Batches: ``{"image": (B, 2, C, H, W), "mask": (B, H, W) int64, "name": [str]}``.
    Logged: ``train/loss`` (+ loss components), ``lr``, ``val/loss`` and ``val/<score>`` for every score
    of ``geomamba.metrics.flatten_scores`` (e.g. ``val/F1_changed``), the same under ``test/``.

    The training step has no host synchronisation: the label check of the loss (``loss.validate``) runs
    on the first training batch of each epoch and on every evaluation batch instead of every step, and
    logged values stay tensors. ``trainer.compile`` compiles the model's forward at its first use
    (``CompiledModel``), ``trainer.channels_last`` converts its weights (``apply_channels_last``), ``trainer.fast_norm``
    runs its LayerNorms in the autocast dtype (``apply_fast_norm``).

    Args:
        config: a resolved run config as a plain dict (``config_to_dict(RunConfig)``).
    """

    task = "change"  # the ``task`` of geomamba.engine.tasks, stored in checkpoints

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = parse_config(config)
        self.save_hyperparameters({"config": config_to_dict(self.cfg)})
        self.model = build_model(self.cfg)
        if self.cfg.trainer.channels_last:
            apply_channels_last(self.model)
        apply_fast_norm(self.model, self.cfg.trainer.fast_norm)
        self.loss_fn = self.make_loss()
        # The label check costs a host sync per call: done once per epoch and in evaluation instead.
        self._check_labels = bool(getattr(self.loss_fn, "validate", False))
        if self._check_labels:
            self.loss_fn.validate = False
        self._compiled: CompiledModel | None = None
        self.class_names = list(self.cfg.data.class_names)
        k = len(self.class_names)
        self.val_confusion = ConfusionMatrix(k, IGNORE_INDEX)
        self.test_confusion = ConfusionMatrix(k, IGNORE_INDEX)
        self.val_loss = MeanMetric()
        self.train_loss = MeanMetric(nan_strategy="disable")  # no NaN check (a host sync) per step
        self.history: list[dict[str, float]] = []
        self.last_val_scores: dict | None = None
        self.test_scores: dict | None = None
        self.error_samples: list[dict[str, Any]] = []
        self._predict = make_predict_fn(self.run_model, tta=self.cfg.eval.tta)  # type: ignore[arg-type]
        self._warmup_steps = 0
        # What the training images were ({"dtype": "uint8", "bands": 3}); set by ``train``, saved in
        # checkpoints, checked by prediction (the normalisation statistics are in those units).
        self.data_info: dict[str, Any] = {}

    def make_loss(self) -> nn.Module:
        """The training loss of ``self.cfg`` (tasks with their own losses override this)."""
        return build_loss_from_config(self.cfg)

    # ------------------------------------------------------------------ forward and prediction
    def forward(self, x: torch.Tensor) -> torch.Tensor | dict:
        return self.model(x)

    def run_model(self, x: torch.Tensor) -> torch.Tensor | dict:
        """The model's forward, compiled at the first call when ``trainer.compile`` is set."""
        t = self.cfg.trainer
        if not t.compile:
            return self.model(x)
        if self._compiled is None:
            self._compiled = CompiledModel(
                self.model, mode=t.compile_mode, backend=t.compile_backend, inductor=t.compile_inductor
            )
        return self._compiled(x)

    def _validate_labels(self, mask: torch.Tensor) -> None:
        if self._check_labels:
            validate_labels(mask, len(self.class_names), self.loss_fn.ignore_index, "labels")

    def example_input(self, channels: int, size: int) -> torch.Tensor:
        """A zero input batch of one sample, ``(1, 2, channels, size, size)``."""
        return torch.zeros(1, 2, channels, size, size)

    def predict_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, K, H, W)`` by the configured sliding window (and TTA)."""
        e = self.cfg.eval
        return sliding_window_probs(
            self._predict,
            x,
            window=e.window,
            overlap=e.overlap,
            pad_multiple=e.pad_multiple,
            window_batch=e.window_batch,
        )

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if batch_idx == 0:
            self._validate_labels(batch["mask"])
        out = self.run_model(batch["image"])
        loss = self.loss_fn(out, batch["mask"])
        bs = batch["image"].shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=bs)
        for name, value in getattr(self.loss_fn, "last_components", {}).items():
            self.log(f"train/loss_{name}", value, on_step=True, on_epoch=False, batch_size=bs)
        # a CPU tensor: a Python float would be copied to the GPU (a synchronising copy) at every step
        lr = torch.tensor(float(self.optimizers().param_groups[0]["lr"]))
        self.log("lr", lr, on_step=True, on_epoch=False, batch_size=bs)
        self.train_loss.update(loss.detach())
        return loss

    # ------------------------------------------------------------------ evaluation
    def _scores(self, cm: torch.Tensor) -> dict:
        """The scores of a validation/test confusion matrix (subclasses add their own)."""
        return scores_from_confusion(cm, self.class_names)

    def _eval_step(self, batch: dict, confusion, keep_samples: bool) -> torch.Tensor:
        """Predict a batch, update ``confusion`` and the loss; returns the predicted class ids ``(B, H, W)``."""
        if "mask" not in batch:
            raise GeomambaError("evaluation needs labels, but the split has no label folder")
        self._validate_labels(batch["mask"])
        probs = self.predict_probs(batch["image"])
        preds = probs.argmax(1)
        confusion.update(preds, batch["mask"])
        loss = self.loss_fn(torch.log(probs.clamp_min(1e-8)), batch["mask"])
        if torch.isfinite(loss):
            self.val_loss.update(loss.detach())
        n = self.cfg.eval.num_error_maps
        if keep_samples and self.trainer.is_global_zero and len(self.error_samples) < n:
            for i in range(min(n - len(self.error_samples), preds.shape[0])):
                self.error_samples.append(
                    {
                        "name": batch["name"][i],
                        "image": batch["image"][i].detach().float().cpu(),
                        "mask": batch["mask"][i].cpu(),
                        "pred": preds[i].cpu(),
                    }
                )
        return preds

    def on_validation_epoch_start(self) -> None:
        self.error_samples = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.val_confusion, keep_samples=True)

    def on_validation_epoch_end(self) -> None:
        cm = self.val_confusion.compute()
        self.val_confusion.reset()
        val_loss = _synced_mean(self.val_loss)
        self.val_loss.reset()
        if self.trainer.sanity_checking:
            return
        scores = self._scores(cm)
        scores["confusion"] = cm.long().tolist()
        self.last_val_scores = scores
        flat = flatten_scores(scores, "val/")
        flat["val/loss"] = float(val_loss)
        self.log_dict(flat, sync_dist=False)
        train_loss = _synced_mean(self.train_loss)
        self.train_loss.reset()
        entry = {
            "epoch": int(self.current_epoch),
            "step": int(self.global_step),
            "train_loss": float(train_loss),
            "lr": float(self.optimizers().param_groups[0]["lr"]) if self.trainer.optimizers else math.nan,
            **{k.removeprefix("val/"): v for k, v in flat.items()},
        }
        self.history.append(entry)
        if self.trainer.is_global_zero:
            where = f"validation epoch {self.current_epoch} (step {self.global_step})"
            log.info("%s", format_table(scores, where))
            warn_collapsed_classes(scores, where)

    def on_test_epoch_start(self) -> None:
        self.error_samples = []

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.test_confusion, keep_samples=True)

    def on_test_epoch_end(self) -> None:
        cm = self.test_confusion.compute()
        self.test_confusion.reset()
        self.val_loss.reset()
        scores = self._scores(cm)
        scores["confusion"] = cm.long().tolist()
        self.test_scores = scores
        self.log_dict(flatten_scores(scores, "test/"), sync_dist=False)
        if self.trainer.is_global_zero:
            log.info("%s", format_table(scores, "test"))
            warn_collapsed_classes(scores, "test")

    # ------------------------------------------------------------------ optimisation
    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip here when the optimiser is fused (``bf16-mixed`` or fp32: no GradScaler, the gradients are
        final); Lightning's mixed-precision plugin refuses to clip for any fused optimiser. Otherwise
        Lightning clips (``trainer.gradient_clip_val`` / ``gradient_clip_algorithm``)."""
        if gradient_clip_val and optimizer.defaults.get("fused"):
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            if str(gradient_clip_algorithm or "norm").lower() == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        o, s = self.cfg.optim, self.cfg.scheduler
        groups = param_groups_weight_decay(self.model, o.weight_decay)
        opt = build_optimizer(groups, o, self.device, amp_clipping=clips_under_amp(self.cfg.trainer))
        total = int(self.trainer.estimated_stepping_batches)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        per_epoch = max(1, total // epochs) if self.trainer.max_steps == -1 else None
        if per_epoch is None:
            nb = self.trainer.num_training_batches
            acc = self.trainer.accumulate_grad_batches
            per_epoch = max(1, math.ceil(nb / acc)) if math.isfinite(nb) else max(1, total)
        self._warmup_steps = round(s.warmup_epochs * per_epoch)
        if s.name == "plateau":
            monitor = f"val/{self.cfg.eval.monitor}"
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="max", factor=s.factor, patience=s.patience, min_lr=s.min_lr
            )
            sched = {"scheduler": plateau, "monitor": monitor, "interval": "epoch", "strict": False}
            sched["frequency"] = self.trainer.check_val_every_n_epoch or 1
            return {"optimizer": opt, "lr_scheduler": sched}
        floor = s.min_lr / o.lr
        fn = _lr_lambda(s.name, total, self._warmup_steps, s.warmup_start_factor, s.power, floor)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        # Linear warm-up for the plateau schedule (the step schedules include it in their lambda).
        s = self.cfg.scheduler
        if s.name == "plateau" and self.global_step < self._warmup_steps:
            f = s.warmup_start_factor + (1 - s.warmup_start_factor) * self.global_step / self._warmup_steps
            for g in optimizer.param_groups:
                g["lr"] = self.cfg.optim.lr * f
        elif s.name == "plateau" and self._warmup_steps and self.global_step == self._warmup_steps:
            for g in optimizer.param_groups:
                g["lr"] = self.cfg.optim.lr
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        from geomamba import __version__

        checkpoint["geomamba"] = {
            "version": __version__,
            "task": self.task,
            "config": config_to_dict(self.cfg),
            "history": list(self.history),
            "data": dict(self.data_info),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = list(checkpoint.get("geomamba", {}).get("history", []))
        self.data_info = dict(checkpoint.get("geomamba", {}).get("data", {}))


def load_module(
    path: str | Path,
    overrides: dict[str, Any] | None = None,
    map_location: str = "cpu",
    *,
    trust: bool = False,
) -> ChangeDetectionModule:
    """Rebuild the module of a checkpoint (the class of its ``task``), loaded with ``weights_only=True``.

    Args:
        path: a ``.ckpt`` written by ``geomamba train``.
        overrides: nested config values to change (e.g. ``{"data": {"root": ...}, "eval": {...}}``).
        trust: allow pickled Python objects beyond plain data (can run code; warns). Not needed for
            geomamba checkpoints.

    Truncated or corrupt files, and weights that do not fit the model of the stored config, raise
    ``CheckpointError`` (a ``GeomambaError``) naming the file and the differing keys.
    """
    from geomamba.engine.checkpoint import CheckpointError, load_checkpoint, state_dict_differences

    path = Path(path)
    ckpt = load_checkpoint(path, map_location=map_location, trust=trust)
    meta = ckpt.get("geomamba")
    if not isinstance(meta, dict) or "config" not in meta or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a geomamba checkpoint (no 'geomamba' config or 'state_dict')")
    config = meta["config"]
    for section, values in (overrides or {}).items():
        if isinstance(values, dict):
            config[section] = {**config.get(section, {}), **values}
        else:
            config[section] = values
    from geomamba.engine.tasks import get_task

    task = config.get("task", meta.get("task", "change"))
    try:
        module = get_task(task).module_class(config)
    except KeyError as exc:
        raise GeomambaError(f"{path}: {exc.args[0]}") from None
    diff = state_dict_differences(module.state_dict(), ckpt["state_dict"])
    if diff:
        raise CheckpointError(f"{path}: weights do not match model {module.cfg.model.name!r}; {diff}")
    module.load_state_dict(ckpt["state_dict"])
    module.history = list(meta.get("history", []))
    module.data_info = dict(meta.get("data", {}))
    module.eval()
    return module
