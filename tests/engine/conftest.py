import pytest

from _engine_helpers import tiny_overrides
from geomamba.data.synthetic import generate_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Synthetic 32x32 GeoTIFF tiles: 4 train, 2 val, 2 test (read-only for tests)."""
    root = tmp_path_factory.mktemp("tiny") / "ds"
    return generate_dataset(root, splits={"train": 4, "val": 2, "test": 2}, size=32, fmt="tif")


@pytest.fixture
def overrides():
    return tiny_overrides
