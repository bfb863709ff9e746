"""Random-window reads (``crop_size``) and the in-memory cache of the change-detection dataset."""

import numpy as np
import pytest
import torch

from geomamba.data.datasets import ChangeDetectionDataset
from geomamba.data.errors import DataError
from geomamba.data.io import read_raster, write_raster
from geomamba.data.layout import discover_split
from geomamba.data.synthetic import generate_dataset
from geomamba.data.transforms import BitemporalTransform

MEAN, STD = [100.0, 110.0, 90.0], [30.0, 20.0, 25.0]


def _normalised(path) -> np.ndarray:
    a = read_raster(path).astype(np.float32)
    return (a - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[:, None, None]


@pytest.mark.parametrize("fmt", ["tif", "png"])
def test_a_window_is_a_crop_of_the_whole_pair(tmp_path, fmt):
    root = generate_dataset(tmp_path / "ds", splits={"train": 2}, size=48, fmt=fmt)
    samples, _ = discover_split(root, "train")
    ds = ChangeDetectionDataset(samples, mean=MEAN, std=STD, crop_size=16, repeats=3)
    whole = ChangeDetectionDataset(samples, mean=MEAN, std=STD)
    offsets = set()
    for i in range(len(ds)):
        item, full = ds[i], whole[i % 2]
        assert item["image"].shape == (2, 3, 16, 16) and item["mask"].shape == (16, 16)
        # locate the window in the whole image through date A, then check B and the mask there
        img = full["image"][0, 0].numpy()
        hits = [
            (r, c)
            for r in range(33)
            for c in range(33)
            if np.allclose(img[r : r + 16, c : c + 16], item["image"][0, 0].numpy(), atol=1e-6)
        ]
        assert hits, f"item {i} is not a window of its image"
        r, c = hits[0]
        offsets.add((r, c))
        torch.testing.assert_close(item["image"], full["image"][..., r : r + 16, c : c + 16])
        torch.testing.assert_close(item["mask"], full["mask"][r : r + 16, c : c + 16])
    assert len(offsets) > 1  # random windows


def test_cache_gives_the_same_items_and_reads_once(tmp_path, monkeypatch):
    root = generate_dataset(tmp_path / "ds", splits={"train": 3}, size=40, fmt="tif")
    samples, _ = discover_split(root, "train")
    tf = BitemporalTransform(crop_size=24, brightness=0.2, contrast=0.2, photometric_p=1.0)
    disk = ChangeDetectionDataset(samples, mean=MEAN, std=STD, transform=tf, crop_size=24, repeats=2)
    cached = ChangeDetectionDataset(
        samples, mean=MEAN, std=STD, transform=tf, crop_size=24, repeats=2, cache=True
    )
    assert cached.cache is not None and len(cached.cache) == 3

    def no_reads(*args, **kwargs):
        raise AssertionError("a cached dataset read a file")

    monkeypatch.setattr("geomamba.data.datasets.change.read_raster", no_reads)
    monkeypatch.setattr("geomamba.data.datasets.change.raster_info", no_reads)
    for i in range(len(cached)):
        torch.manual_seed(i)
        c = cached[i]
        monkeypatch.undo()
        torch.manual_seed(i)
        d = disk[i]
        monkeypatch.setattr("geomamba.data.datasets.change.read_raster", no_reads)
        monkeypatch.setattr("geomamba.data.datasets.change.raster_info", no_reads)
        torch.testing.assert_close(c["image"], d["image"])
        assert torch.equal(c["mask"], d["mask"]) and c["name"] == d["name"]


def test_small_images_are_read_whole_and_padded(tmp_path):
    root = generate_dataset(tmp_path / "ds", splits={"train": 1}, size=32, fmt="tif")
    samples, _ = discover_split(root, "train")
    ds = ChangeDetectionDataset(
        samples, mean=MEAN, std=STD, crop_size=40, transform=BitemporalTransform(crop_size=40)
    )
    item = ds[0]
    assert item["image"].shape == (2, 3, 40, 40)
    assert (item["mask"] == 255).sum() == 40 * 40 - 32 * 32  # padding is ignored


def test_windows_of_dates_of_different_sizes_are_refused(tmp_path):
    root = generate_dataset(tmp_path / "ds", splits={"train": 1}, size=32, fmt="tif")
    samples, _ = discover_split(root, "train")
    write_raster(samples[0].b, np.zeros((3, 40, 40), np.uint8))
    ds = ChangeDetectionDataset(samples, mean=MEAN, std=STD, crop_size=16)
    with pytest.raises(DataError, match="differs from"):
        ds[0]
    with pytest.raises(DataError, match="crop_size"):
        ChangeDetectionDataset(samples, crop_size=0)
