"""Numerical guards: non-finite steps are skipped (nothing changes) and counted, too many in a row stop the
run with the step and the likely cause; a class never predicted for N validations is reported loudly."""

import logging
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from _engine_helpers import tiny_overrides
from geomamba.data.io import write_raster
from geomamba.engine.config import load_config
from geomamba.engine.guards import CollapseMonitor, NonFiniteGuard, NumericalError
from geomamba.engine.train import train


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class _Net(pl.LightningModule):
    """Linear + BatchNorm; the loss is NaN (or the gradient inf) at the given steps."""

    def __init__(self, nan_steps=(), inf_grad_steps=(), fused=False):
        super().__init__()
        self.fused = fused
        self.lin = nn.Linear(2, 2)
        self.bn = nn.BatchNorm1d(2)
        self.nan_steps, self.inf_grad_steps = set(nan_steps), set(inf_grad_steps)
        self.snapshots = []

    def training_step(self, batch, batch_idx):
        out = self.lin(batch)
        if self.global_step in self.inf_grad_steps:
            out = _InfGrad.apply(out)  # finite loss, infinite gradients
        loss = self.bn(out).pow(2).mean()
        if self.global_step in self.nan_steps:
            loss = loss * float("nan")
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.snapshots.append({k: v.clone() for k, v in self.state_dict().items()})

    def configure_optimizers(self):
        if self.fused:  # takes ``found_inf``: the guard skips on the device
            return torch.optim.AdamW(self.parameters(), lr=0.1, fused=True)
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(model, guard, steps=6):
    data = DataLoader(torch.randn(steps * 4, 2), batch_size=4)
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        callbacks=[guard],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    return trainer


def test_bad_steps_are_skipped_and_counted(caplog):
    model, guard = _Net(nan_steps={1, 2}, inf_grad_steps={4}), NonFiniteGuard(max_bad_steps=3)
    with caplog.at_level(logging.WARNING, logger="geomamba"):
        trainer = _fit(model, guard)
    s = model.snapshots
    assert trainer.global_step == 6
    for bad in (1, 2, 4):  # weights and BatchNorm statistics as after the previous step
        for k in s[bad]:
            assert torch.equal(s[bad][k], s[bad - 1][k]), (bad, k)
    assert not torch.equal(s[3]["lin.weight"], s[2]["lin.weight"])  # good steps do train
    assert (guard.total, guard.consecutive) == (3, 0)
    assert "step 2 (epoch 0): non-finite loss (nan); step skipped (2 in a row, 2 in all)" in caplog.text
    assert "non-finite gradient (first in lin.weight)" in caplog.text


def test_fused_optimizer_skips_on_the_device_and_reads_flags_every_n_steps(caplog):
    model = _Net(nan_steps={1}, inf_grad_steps={4}, fused=True)
    guard = NonFiniteGuard(max_bad_steps=3, read_every=3)
    with caplog.at_level(logging.WARNING, logger="geomamba"):
        trainer = _fit(model, guard)
    s = model.snapshots
    for bad in (1, 4):  # nothing changed at the bad steps, on the device
        for k in s[bad]:
            assert torch.equal(s[bad][k], s[bad - 1][k]), (bad, k)
    assert not torch.equal(s[2]["lin.weight"], s[1]["lin.weight"])
    opt = trainer.optimizers[0]
    assert int(opt.state[model.lin.weight]["step"]) == 4  # 6 steps, 2 skipped
    assert not hasattr(opt, "found_inf")
    assert guard.host_reads == 2 and (guard.total, guard.consecutive) == (2, 0)  # steps 0-2, 3-5
    assert "step 1 (epoch 0): non-finite loss (nan); step skipped (1 in a row, 1 in all)" in caplog.text
    assert "step 4 (epoch 0): non-finite gradient; step skipped" in caplog.text


def test_fused_optimizer_stops_at_the_next_read():
    model, guard = _Net(nan_steps={0, 1, 2, 3, 4}, fused=True), NonFiniteGuard(max_bad_steps=2, read_every=4)
    with pytest.raises(NumericalError, match=r"training stopped at step 1 .* 2 steps in a row"):
        _fit(model, guard)
    assert guard.host_reads == 1  # read after step 3, reporting the streak from its second step


def test_too_many_bad_steps_in_a_row_stop_with_step_and_cause():
    model, guard = _Net(nan_steps={2, 3, 4}), NonFiniteGuard(max_bad_steps=3)
    with pytest.raises(NumericalError) as info:
        _fit(model, guard)
    msg = str(info.value)
    assert msg.startswith(
        "training stopped at step 4 (epoch 0, batch 4): 3 steps in a row had a non-finite loss"
    )
    assert "learning rate is too high (lr 0.1 at this step)" in msg and "trainer.max_bad_steps" in msg
    assert "bad input tile" not in msg and "AMP" not in msg
    with pytest.raises(ValueError, match="max_bad_steps"):
        NonFiniteGuard(0)


def test_nan_input_tile_is_named_as_the_cause(tmp_path):
    root = tmp_path / "nan"
    rng = np.random.default_rng(0)
    for split, names in (("train", ("good_0", "bad_1")), ("val", ("v",))):
        for name in names:
            for d in ("A", "B"):
                img = rng.random((3, 16, 16), dtype=np.float32)
                if name.startswith("bad"):
                    img[:, 4:8, 4:8] = np.nan
                write_raster(root / split / d / f"{name}.tif", img)
            write_raster(root / split / "label" / f"{name}.tif", np.zeros((1, 16, 16), np.uint8))
    over = [
        *tiny_overrides(root, tmp_path / "runs"),
        "data.validate=header",  # a full check would refuse the NaN tile before training
        "data.mean=[0.5, 0.5, 0.5]",
        "data.std=[0.3, 0.3, 0.3]",
        "data.crop_size=null",
        "data.batch_size=1",
        "trainer.max_epochs=4",
        "trainer.max_bad_steps=2",
        "eval.test_after_fit=false",
    ]
    with pytest.raises(NumericalError) as info:
        train(load_config(None, over), resume=False)
    msg = str(info.value)
    assert "2 steps in a row had a non-finite loss" in msg
    assert "Likely cause: a bad input tile: non-finite pixel values in bad_1" in msg


def _scores(predicted_changed: int) -> dict:
    return {
        "predicted": {"unchanged": 1000, "changed": predicted_changed},
        "support": {"unchanged": 900, "changed": 100},
    }


def test_class_collapse_is_reported_after_patience_validations(caplog):
    monitor = CollapseMonitor(patience=3)
    module = SimpleNamespace(last_val_scores=None)
    with caplog.at_level(logging.WARNING, logger="geomamba"):
        for epoch, predicted in enumerate([0, 0, 5, 0, 0, 0, 0, 0, 0]):
            module.last_val_scores = _scores(predicted)
            trainer = SimpleNamespace(sanity_checking=False, current_epoch=epoch, is_global_zero=True)
            monitor.on_validation_end(trainer, module)
    # Streak broken at epoch 2; reported after epochs 3-5 and again after 6-8.
    assert len(monitor.reports) == 2 and monitor.streaks == {"unchanged": 0, "changed": 6}
    report = monitor.reports[0]
    assert (
        "class 'changed' has not been predicted a single time in the last 3 validations (epochs 3-5)"
        in report
    )
    for remedy in ("class_weights", "dice_focal", "ohem", "oversampling", "optim.lr"):
        assert remedy in report
    assert "CLASS COLLAPSE" in caplog.text
    assert monitor.state_dict() == {"streaks": {"unchanged": 0, "changed": 6}}
