"""Shared test fixtures and the skip rules of the markers ``gpu`` and ``realdata``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(
    os.environ.get("GEOMAMBA_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_data = pytest.mark.skip(reason=f"real samples not found at {SHARED_DATA}")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "realdata" in item.keywords and not SHARED_DATA.is_dir():
            item.add_marker(skip_data)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def shared_data() -> Path:
    """Path of ``../shared/data`` (tests using it must be marked ``realdata``)."""
    return SHARED_DATA.resolve()
