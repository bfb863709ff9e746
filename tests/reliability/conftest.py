"""Fixtures of the reliability tests: a tiny GeoTIFF dataset and run overrides of tiny, fast runs."""

from __future__ import annotations

import pytest
from _reliability_helpers import DROPOUT_MODEL  # registers the model

from _engine_helpers import tiny_overrides
from geomamba.data.synthetic import generate_dataset


@pytest.fixture(scope="session")
def rel_dataset(tmp_path_factory):
    """Synthetic 32x32 GeoTIFF tiles: 6 train (3 steps of 2 per epoch), 2 val, 2 test (read-only)."""
    root = tmp_path_factory.mktemp("reliability") / "ds"
    return generate_dataset(root, splits={"train": 6, "val": 2, "test": 2}, size=32, fmt="tif")


def run_overrides(root, out, name: str = "run", *extra: str) -> list[str]:
    """A 3-epoch run with random crops, dropout and the plateau schedule: every source of randomness."""
    return [
        *tiny_overrides(root, out, name),
        f"model.name={DROPOUT_MODEL}",
        "data.crop_size=16",
        "trainer.max_epochs=3",
        "trainer.deterministic=true",
        "scheduler.name=plateau",
        "scheduler.patience=0",
        *extra,
    ]


@pytest.fixture(scope="session")
def rel_overrides():
    return run_overrides


@pytest.fixture(scope="session")
def short_run(tmp_path_factory, rel_dataset):
    """A finished 2-epoch run (read-only: copy its folder before changing anything)."""
    from geomamba.engine.config import load_config
    from geomamba.engine.train import train

    out = tmp_path_factory.mktemp("short")
    overrides = run_overrides(rel_dataset, out, "short", "trainer.max_epochs=2", "eval.test_after_fit=false")
    return train(load_config(None, overrides), resume=False)
