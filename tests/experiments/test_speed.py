"""The timed loops of the efficiency table (speeds are printed, never asserted against a value)."""

from __future__ import annotations

import pytest
import torch

from _engine_helpers import TinyChangeNet
from geomamba.engine.config import parse_config
from geomamba.experiments.speed import measure_speed, run_device
from geomamba.losses import build_loss


def test_measure_speed_trains_a_copy_and_reports_the_setup():
    model = TinyChangeNet(width=4)
    before = [p.detach().clone() for p in model.parameters()]
    res = measure_speed(
        model, build_loss("ce"), in_channels=3, input_size=16, batch_size=2, warmup=1, iters=2
    )
    assert res.infer_pairs_per_s > 0 and res.train_pairs_per_s > 0
    assert (res.batch_size, res.input_size, res.iters, res.device, res.precision) == (2, 16, 2, "cpu", "32")
    # The training loop stepped the optimiser on the model it was given.
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert res.to_dict()["peak_memory_gb"] is None
    with pytest.raises(ValueError, match="batch_size"):
        measure_speed(model, build_loss("ce"), in_channels=3, batch_size=0)


def test_bf16_autocast_on_cpu():
    res = measure_speed(
        TinyChangeNet(width=4),
        build_loss("ce"),
        in_channels=3,
        input_size=16,
        batch_size=1,
        warmup=0,
        iters=1,
        precision="bf16-mixed",
    )
    assert res.precision == "bf16-mixed" and res.train_pairs_per_s > 0


def test_run_device_follows_the_accelerator():
    assert run_device(parse_config({"trainer": {"accelerator": "cpu"}})) == torch.device("cpu")
    auto = run_device(parse_config({"trainer": {"accelerator": "auto", "devices": [0]}}))
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
