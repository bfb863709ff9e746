"""Segmentation data: layout templates and name suffixes, the validation pass, on-the-fly windows of large
tiles, evaluation tiles, synthetic scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geomamba.data.datasets import SegmentationDataset
from geomamba.data.errors import DataError
from geomamba.data.io import read_raster, write_raster
from geomamba.data.seg_labels import ISPRS_IGNORE_COLOURS, ISPRS_PALETTE, SegmentationLabels
from geomamba.data.segmentation import (
    SegmentationLayout,
    discover_segmentation_split,
    validate_segmentation_dataset,
)
from geomamba.data.synthetic_segmentation import generate_segmentation_dataset, make_segmentation_scene
from geomamba.data.transforms import SegmentationTransform

IDS6 = SegmentationLabels(6)
ISPRS = SegmentationLabels(6, "rgb", ISPRS_PALETTE, ISPRS_IGNORE_COLOURS)
POTSDAM = SegmentationLayout(
    image_dir="RGB/{split}",
    label_dir="Label/{split}",
    eval_label_dir="Label_noBoundary/{split}",
    image_suffix="_RGB",
    label_suffix="_label",
    eval_label_suffix="_label_noBoundary",
)


def _isprs_tile(root, split, name, ids, eroded=False):
    palette = np.array(ISPRS_PALETTE, np.uint8)
    rgb = palette[ids].transpose(2, 0, 1)
    image = np.stack([ids * 40, ids * 20, 255 - ids * 40]).astype(np.uint8)
    write_raster(root / "RGB" / split / f"{name}_RGB.tif", image)
    write_raster(root / "Label" / split / f"{name}_label.tif", np.ascontiguousarray(rgb))
    if eroded:
        ero = rgb.copy()
        ero[:, 0] = 0  # a black (ignored) boundary row
        write_raster(root / "Label_noBoundary" / split / f"{name}_label_noBoundary.tif", ero)


def test_isprs_layout_suffixes_eroded_labels_and_validation(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 6, (40, 48)).astype(np.uint8)
    _isprs_tile(tmp_path, "train", "top_potsdam_2_10", ids)
    _isprs_tile(tmp_path, "val", "top_potsdam_2_11", ids, eroded=True)
    samples, problems = discover_segmentation_split(tmp_path, "train", layout=POTSDAM)
    assert not problems and [s.name for s in samples] == ["top_potsdam_2_10"]
    assert samples[0].label.name == "top_potsdam_2_10_label.tif"
    val, _ = discover_segmentation_split(tmp_path, "val", layout=POTSDAM, evaluation=True)
    assert val[0].label.name == "top_potsdam_2_11_label_noBoundary.tif"
    report = validate_segmentation_dataset(
        tmp_path,
        {"train": "train", "val": "val"},
        labels=ISPRS,
        layout=POTSDAM,
        stats_role="train",
        progress=False,
    )
    assert report.splits["train"].class_pixels.tolist() == np.bincount(ids.ravel(), minlength=6).tolist()
    assert report.splits["val"].ignored_pixels == 48  # the black row of the eroded label
    assert report.splits["train"].sizes == {(40, 48)} and report.splits["train"].bands == 3
    np.testing.assert_allclose(report.stats.mean[0], (ids * 40.0).mean(), rtol=1e-6)
    with pytest.raises(DataError, match=r"no split 'test': image folder .*RGB/test not found"):
        discover_segmentation_split(tmp_path, "test", layout=POTSDAM)


def test_validation_lists_every_bad_file(tmp_path):
    ids = np.zeros((32, 32), np.uint8)
    _isprs_tile(tmp_path, "train", "a", ids)
    _isprs_tile(tmp_path, "train", "b", ids)
    _isprs_tile(tmp_path, "train", "c", ids)
    (tmp_path / "Label" / "train" / "b_label.tif").unlink()
    bad = np.full((3, 32, 32), 255, np.uint8)
    bad[:, 5, 7] = (1, 2, 3)
    write_raster(tmp_path / "Label" / "train" / "a_label.tif", bad)
    write_raster(tmp_path / "RGB" / "train" / "c_RGB.tif", np.zeros((3, 16, 32), np.uint8))
    with pytest.raises(DataError) as info:
        validate_segmentation_dataset(
            tmp_path, {"train": "train"}, labels=ISPRS, layout=POTSDAM, progress=False
        )
    msg = str(info.value)
    assert "3 problem(s)" in msg
    assert "b.*: missing label of" in msg and "b_RGB.tif" in msg
    assert "a_label.tif: unknown label colour(s) (1, 2, 3) x 1 px (first at row 5, col 7)" in msg
    assert "c_label.tif: label size 32x32 differs from" in msg


def test_one_split_root_and_list_files(tmp_path):
    write_raster(tmp_path / "images" / "x.png", np.zeros((3, 8, 8), np.uint8))
    write_raster(tmp_path / "labels" / "x.png", np.zeros((8, 8), np.uint8))
    write_raster(tmp_path / "images" / "y.png", np.zeros((3, 8, 8), np.uint8))
    write_raster(tmp_path / "labels" / "y.png", np.zeros((8, 8), np.uint8))
    layout = SegmentationLayout()
    assert layout.has_split(tmp_path, "val")
    samples, problems = discover_segmentation_split(tmp_path, "val", layout=layout)
    assert not problems and [s.name for s in samples] == ["x", "y"]
    (tmp_path / "val.txt").write_text("y\nz\n")
    samples, problems = discover_segmentation_split(tmp_path, "val", layout=layout)
    assert [s.name for s in samples] == ["y"] and "missing image ('z' listed in" in problems[0]


def test_training_items_read_random_windows_of_large_tiles(tmp_path, monkeypatch):
    h, w = 300, 260
    image = (np.arange(h * w, dtype=np.uint16).reshape(h, w) % 65521)[None].repeat(3, 0)
    ids = (np.arange(w)[None, :] // 50).repeat(h, 0).astype(np.uint8)  # classes 0..5 by column
    write_raster(tmp_path / "img.tif", image)
    write_raster(tmp_path / "lab.tif", ids)
    from geomamba.data.segmentation import SegmentationSample

    sample = SegmentationSample("tile", tmp_path / "img.tif", tmp_path / "lab.tif")
    windows = []
    import geomamba.data.datasets.segmentation as mod

    real = mod.read_raster

    def spy(path, window=None, **kw):
        windows.append(window)
        return real(path, window, **kw)

    monkeypatch.setattr(mod, "read_raster", spy)
    ds = SegmentationDataset([sample], labels=IDS6, crop_size=64, repeats=5)
    assert len(ds) == 5
    for i in range(5):
        item = ds[i]
        x, mask = item["image"], item["mask"]
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and mask.shape == (64, 64)
        r, c, hh, ww = windows[2 * i]
        assert (hh, ww) == (64, 64) and windows[2 * i + 1] == windows[2 * i]  # image and label windows
        np.testing.assert_allclose(x[0].numpy() * 65535, image[0, r : r + 64, c : c + 64], atol=0.5)
        np.testing.assert_array_equal(mask.numpy(), ids[r : r + 64, c : c + 64])
    # Evaluation tiles: a grid covering the image, the last row/column narrower.
    ev = SegmentationDataset([sample], labels=IDS6, tile=128, mean=[0.0] * 3, std=[1.0] * 3)
    assert len(ev) == 3 * 3
    last = ev[8]
    assert last["name"] == "tile_r256_c256" and last["image"].shape == (3, 44, 4)
    np.testing.assert_array_equal(last["mask"].numpy(), ids[256:, 256:])
    np.testing.assert_array_equal(last["image"][0].numpy(), image[0, 256:, 256:])


def test_transform_pads_small_images_and_keeps_image_and_mask_aligned():
    torch.manual_seed(0)
    t = SegmentationTransform(crop_size=32, hflip=1.0, vflip=0.0, rotate90=0.0, photometric_p=0.0)
    image = np.zeros((20, 24, 3), np.float32)
    image[:, :12] = 1.0
    mask = np.zeros((20, 24), np.uint8)
    mask[:, :12] = 3
    img, m = t(image, mask)
    assert img.shape == (32, 32, 3) and m.shape == (32, 32)
    assert (m == 255).sum() == 32 * 32 - 20 * 24  # padding is ignored
    np.testing.assert_array_equal(img[..., 0] == 1.0, m == 3)


def test_synthetic_segmentation_dataset(tmp_path):
    img, ids = make_segmentation_scene(np.random.default_rng(0), 64, bands=4)
    assert img.shape == (4, 64, 64) and 0 <= img.min() and img.max() <= 1
    assert set(np.unique(ids)) <= set(range(6)) and len(np.unique(ids)) >= 4
    root = generate_segmentation_dataset(tmp_path / "rgb", splits={"train": 2}, size=32, labels="rgb")
    label = read_raster(root / "train" / "labels" / "train_0000.png")
    assert label.shape == (3, 32, 32)
    ids_root = generate_segmentation_dataset(tmp_path / "ids", splits={"train": 2}, size=32)
    np.testing.assert_array_equal(
        ISPRS.apply(label), IDS6.apply(read_raster(ids_root / "train" / "labels" / "train_0000.png"))
    )
    loveda = generate_segmentation_dataset(
        tmp_path / "l", splits={"train": 1}, size=32, reduce_zero_label=True
    )
    assert read_raster(loveda / "train" / "labels" / "train_0000.png").min() >= 1
