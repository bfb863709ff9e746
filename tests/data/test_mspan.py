"""MS + PAN data: reading GeoTIFF and .npy, checks with named files, patch geometry, the pixel split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geomamba.data.mspan import (
    MSPanPatchDataset,
    all_pixels,
    load_mspan,
    make_synthetic_mspan,
    normalise_bands,
    split_pixels,
    write_mspan,
)


@pytest.fixture(scope="module")
def scene():
    return make_synthetic_mspan(16, ratio=4, bands=4, num_classes=3, labelled_fraction=0.5, seed=1)


def test_synthetic_scene(scene):
    assert scene.ms.shape == (4, 16, 16) and scene.pan.shape == (1, 64, 64)
    assert scene.ms.dtype == np.float32 and scene.labels.dtype == np.int64
    assert set(np.unique(scene.labels)) <= {0, 1, 2, 3} and scene.num_classes == 3
    assert 0 < (scene.labels > 0).mean() < 0.7
    # classes differ in their spectra: the per-class MS means are distinct
    means = [scene.ms[:, scene.labels == c].mean(axis=1) for c in (1, 2, 3)]
    assert min(np.abs(a - b).max() for i, a in enumerate(means) for b in means[i + 1 :]) > 0.01
    again = make_synthetic_mspan(16, ratio=4, bands=4, num_classes=3, labelled_fraction=0.5, seed=1)
    assert np.array_equal(again.pan, scene.pan) and np.array_equal(again.labels, scene.labels)


@pytest.mark.parametrize("fmt", ["tif", "npy"])
def test_write_and_load_round_trip(tmp_path, scene, fmt):
    paths = write_mspan(tmp_path, scene, fmt=fmt)
    loaded = load_mspan(paths["ms"], paths["pan"], paths["labels"], normalise="none")
    np.testing.assert_allclose(loaded.ms, scene.ms)
    np.testing.assert_allclose(loaded.pan, scene.pan)
    assert np.array_equal(loaded.labels, scene.labels) and loaded.ratio == 4
    if fmt == "tif":
        assert loaded.crs is not None and loaded.transform.a == 0.5
        assert loaded.ms_transform.a == 2.0 and loaded.ms_transform.c == loaded.transform.c
    else:
        assert loaded.transform is None and loaded.ms_transform is None
    inferred = load_mspan(paths["ms"], paths["pan"], ratio=None)
    assert inferred.ratio == 4 and inferred.labels is None
    assert abs(float(inferred.ms.mean())) < 1e-4  # z-score by default


def test_bad_files_are_named(tmp_path, scene):
    paths = write_mspan(tmp_path, scene, fmt="npy")
    with pytest.raises(ValueError, match=r"with ratio 2 the PAN must be 32x32"):
        load_mspan(paths["ms"], paths["pan"], ratio=2)
    np.save(tmp_path / "pan3.npy", np.zeros((3, 64, 64), np.float32))
    with pytest.raises(ValueError, match=r"pan3.npy has 3 bands"):
        load_mspan(paths["ms"], tmp_path / "pan3.npy")
    np.save(tmp_path / "odd.npy", np.zeros((1, 64, 60), np.float32))
    with pytest.raises(ValueError, match=r"cannot infer the PAN/MS ratio.*odd.npy"):
        load_mspan(paths["ms"], tmp_path / "odd.npy", ratio=None)
    np.save(tmp_path / "lab_big.npy", np.zeros((64, 64), np.int64))
    with pytest.raises(ValueError, match=r"lab_big.npy is 64x64 but the MS grid is 16x16"):
        load_mspan(paths["ms"], paths["pan"], tmp_path / "lab_big.npy")
    np.save(tmp_path / "lab_neg.npy", -np.ones((16, 16), np.int64))
    with pytest.raises(ValueError, match=r"lab_neg.npy holds negative"):
        load_mspan(paths["ms"], paths["pan"], tmp_path / "lab_neg.npy")
    np.save(tmp_path / "lab_frac.npy", np.full((16, 16), 0.5, np.float32))
    with pytest.raises(ValueError, match=r"lab_frac.npy holds non-integer"):
        load_mspan(paths["ms"], paths["pan"], tmp_path / "lab_frac.npy")
    nan_ms = scene.ms.copy()
    nan_ms[0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan_ms)
    with pytest.raises(ValueError, match=r"nan.npy holds NaN"):
        load_mspan(tmp_path / "nan.npy", paths["pan"])
    with pytest.raises(FileNotFoundError, match=r"MS file not found: .*missing.tif"):
        load_mspan(tmp_path / "missing.tif", paths["pan"])
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(ValueError, match=r"junk.tif cannot be read"):
        load_mspan(tmp_path / "junk.tif", paths["pan"])


def test_split_by_pixel_is_stratified_and_reproducible(scene):
    train, test = split_pixels(scene.labels, train_fraction=0.2, seed=3)
    labelled = {tuple(p) for p in scene.labelled_pixels()}
    tr, te = {tuple(p) for p in train}, {tuple(p) for p in test}
    assert tr.isdisjoint(te) and tr | te == labelled
    for c in (1, 2, 3):
        n = int((scene.labels == c).sum())
        got = int((scene.labels[train[:, 0], train[:, 1]] == c).sum())
        assert got == min(max(1, round(0.2 * n)), n - 1)
    again, _ = split_pixels(scene.labels, train_fraction=0.2, seed=3)
    other, _ = split_pixels(scene.labels, train_fraction=0.2, seed=4)
    assert np.array_equal(train, again) and not np.array_equal(train, other)
    fixed, _ = split_pixels(scene.labels, per_class=2, seed=0)
    assert len(fixed) == 6
    with pytest.raises(ValueError, match="train_fraction"):
        split_pixels(scene.labels, train_fraction=0.0)


def test_patch_pairs_are_centred_and_aligned():
    # MS value = row*100 + col; PAN value = the MS pixel it lies in, so alignment is checkable
    h, w, r, s = 6, 7, 4, 4
    ms = (np.arange(h)[:, None] * 100 + np.arange(w)[None]).astype(np.float32)[None]
    pan = np.repeat(np.repeat(ms, r, axis=1), r, axis=2)
    labels = np.ones((h, w), np.int64)
    labels[0, 0] = 0
    from geomamba.data.mspan import MSPanScene

    scene = MSPanScene(ms=ms, pan=pan, labels=labels, ratio=r)
    ds = MSPanPatchDataset(scene, [[3, 2], [5, 6]], patch_size=s)
    item = ds[0]
    assert item["ms"].shape == (1, s, s) and item["pan"].shape == (1, r * s, r * s)
    assert item["ms"][0, s // 2, s // 2] == 302 and item["label"] == 0 and item["pixel"].tolist() == [3, 2]
    # the PAN patch covers exactly the ground of the MS patch
    torch.testing.assert_close(item["pan"][0, ::r, ::r], item["ms"][0])
    edge = ds[1]  # bottom-right corner: mirror padding keeps full-size patches
    assert edge["ms"].shape == (1, s, s) and edge["ms"][0, s // 2, s // 2] == 506
    torch.testing.assert_close(edge["pan"][0, ::r, ::r], edge["ms"][0])
    with pytest.raises(ValueError, match=r"\[\[0, 0\]\] are unlabelled"):
        MSPanPatchDataset(scene, [[0, 0]], patch_size=s)
    with pytest.raises(ValueError, match="outside the 6x7 MS grid"):
        MSPanPatchDataset(scene, [[6, 0]], patch_size=s)
    every = MSPanPatchDataset(scene, all_pixels(scene.shape), patch_size=3, with_labels=False)
    assert len(every) == h * w and "label" not in every[0] and every[0]["ms"].shape == (1, 3, 3)


def test_normalise_bands():
    a = np.stack([np.arange(12.0).reshape(3, 4), np.full((3, 4), 7.0)])
    z = normalise_bands(a, "zscore")
    assert abs(z[0].mean()) < 1e-6 and abs(z[0].std() - 1) < 1e-5 and (z[1] == 0).all()
    m = normalise_bands(a, "minmax")
    assert m[0].min() == 0 and m[0].max() == 1 and (m[1] == 0).all()
    with pytest.raises(ValueError, match="normalise must be"):
        normalise_bands(a, "l2")


def test_disagreeing_georeferences_warn(tmp_path, scene):
    import rasterio
    from rasterio.transform import Affine

    paths = write_mspan(tmp_path, scene)
    with rasterio.open(paths["ms"], "r+") as dst:
        dst.transform = Affine(3.0, 0.0, 500000.0, 0.0, -3.0, 4000000.0)  # 3 m instead of 4 x 0.5 m
    with pytest.warns(UserWarning, match="georeferences of MS .* and PAN .* do not agree"):
        load_mspan(paths["ms"], paths["pan"])
