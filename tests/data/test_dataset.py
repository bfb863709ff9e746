import numpy as np
import torch

from geomamba.data.datasets import ChangeDetectionDataset, normalise_image
from geomamba.data.io import read_raster
from geomamba.data.layout import discover_split
from geomamba.data.synthetic import generate_dataset, make_scene
from geomamba.data.transforms import BitemporalTransform


def test_synthetic_is_deterministic_and_has_changes(tmp_path):
    s1 = make_scene(np.random.default_rng(3), 64, 4)
    s2 = make_scene(np.random.default_rng(3), 64, 4)
    np.testing.assert_array_equal(s1.a, s2.a)
    assert s1.a.shape == (4, 64, 64) and s1.change.any() and not s1.change.all()
    r1 = generate_dataset(tmp_path / "a", splits={"train": 1}, size=32, seed=5)
    r2 = generate_dataset(tmp_path / "b", splits={"train": 1}, size=32, seed=5)
    for d in ("A", "B", "label"):
        assert (r1 / "train" / d / "train_0000.png").read_bytes() == (
            r2 / "train" / d / "train_0000.png"
        ).read_bytes()


def test_item_contract_and_normalisation(tmp_path):
    root = generate_dataset(tmp_path / "ds", splits={"train": 2}, size=32, fmt="tif", label_values=1)
    samples, _ = discover_split(root, "train")
    mean, std = [100.0, 110.0, 90.0], [30.0, 20.0, 25.0]
    ds = ChangeDetectionDataset(samples, mean=mean, std=std)
    item = ds[1]
    assert item["image"].shape == (2, 3, 32, 32) and item["image"].dtype == torch.float32
    assert item["mask"].dtype == torch.int64 and set(item["mask"].unique().tolist()) <= {0, 1}
    a = read_raster(samples[1].a)
    expected = (a.astype(np.float32) - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[
        :, None, None
    ]
    np.testing.assert_allclose(item["image"][0].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(normalise_image(a, mean=None, std=None), a / 255.0, rtol=1e-6)


def test_augmentation_keeps_dates_and_mask_aligned(tmp_path):
    # A and B identical and the mask equal to (A's first band > 0.5): geometry must stay shared.
    rng = np.random.default_rng(0)
    a = rng.random((40, 40, 3), dtype=np.float32)
    mask = (a[..., 0] > 0.5).astype(np.uint8)
    tf = BitemporalTransform(crop_size=24, date_swap=0.5, brightness=0.0, contrast=0.0)
    for _ in range(10):
        oa, ob, om = tf(a, a.copy(), mask)
        assert oa.shape == (24, 24, 3) and om.shape == (24, 24)
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(om, (oa[..., 0] > 0.5).astype(np.uint8))
    # Photometric jitter is drawn per date; crops of small images are padded with the ignore value.
    tf = BitemporalTransform(
        crop_size=48, brightness=0.3, contrast=0.3, photometric_p=1.0, hflip=0, vflip=0, rotate90=0
    )
    oa, ob, om = tf(a, a.copy(), mask)
    assert oa.shape == (48, 48, 3) and not np.allclose(oa, ob)
    assert (om == 255).sum() == 48 * 48 - 40 * 40
