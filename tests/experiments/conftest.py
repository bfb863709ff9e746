"""Fixtures of the experiment-runner tests: tiny synthetic data and a finished tiny comparison."""

from __future__ import annotations

from pathlib import Path

import pytest
from _experiment_helpers import TWO_MODELS, write_experiment

from geomamba.data.synthetic import generate_dataset


@pytest.fixture(scope="session")
def exp_dataset(tmp_path_factory) -> Path:
    """Synthetic 32x32 GeoTIFF tiles: 4 train, 2 val, 4 test, each split with changes (read-only)."""
    root = tmp_path_factory.mktemp("expdata") / "ds"
    return generate_dataset(root, splits={"train": 4, "val": 2, "test": 4}, size=32, fmt="tif", seed=13)


@pytest.fixture(scope="session")
def compare_exp(tmp_path_factory, exp_dataset):
    """A finished comparison of two tiny models (tests may re-run parts of it, leaving it finished)."""
    from geomamba.experiments.runner import run_experiment

    config = write_experiment(tmp_path_factory.mktemp("compare"), exp_dataset, models=TWO_MODELS)
    return config, run_experiment(config, "compare")
