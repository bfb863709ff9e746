import shutil

import numpy as np
import pytest

from geomamba.data.errors import DataError
from geomamba.data.io import write_raster
from geomamba.data.labels import LabelMapping
from geomamba.data.layout import discover_split, resolve_split_dir
from geomamba.data.synthetic import generate_dataset
from geomamba.data.validate import validate_dataset


@pytest.fixture
def root(tmp_path):
    return generate_dataset(tmp_path / "ds", splits={"train": 3, "val": 1}, size=32)


def test_valid_dataset_report_and_stats(root):
    rep = validate_dataset(root, ["train", "val"], stats_split="train", progress=False)
    train = rep.splits["train"]
    assert [s.name for s in train.samples] == ["train_0000", "train_0001", "train_0002"]
    assert (train.bands, train.dtype, train.sizes) == (3, "uint8", {(32, 32)})
    assert 0 <= train.changed_fraction < 1
    # Statistics over both dates equal numpy's over the same pixels.
    from geomamba.data.io import read_raster

    pix = np.concatenate(
        [read_raster(p).reshape(3, -1) for s in train.samples for p in (s.a, s.b)], 1
    ).astype(np.float64)
    np.testing.assert_allclose(rep.stats.mean, pix.mean(1), rtol=1e-9)
    np.testing.assert_allclose(rep.stats.std, pix.std(1), rtol=1e-6)


def test_flat_root_is_one_split_and_list_files(root, tmp_path):
    flat = root / "train"
    assert resolve_split_dir(flat, "anything") == flat
    (root / "list").mkdir()
    (root / "list" / "train.txt").write_text("# subset\ntrain_0002.png\ntrain_0000\n")
    samples, problems = discover_split(root, "train")
    assert [s.name for s in samples] == ["train_0002", "train_0000"] and problems == []


def _expect(root, *fragments, splits=("train",), **kw):
    with pytest.raises(DataError) as info:
        validate_dataset(root, splits, progress=False, **kw)
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in:\n{msg}"
    return msg


def test_missing_partner_file(root):
    (root / "train" / "B" / "train_0001.png").unlink()
    _expect(root, str(root / "train" / "B" / "train_0001") + ".*: missing partner file")


def test_size_and_band_mismatches(root):
    t = root / "train"
    write_raster(t / "B" / "train_0000.png", np.zeros((3, 16, 32), np.uint8))
    write_raster(t / "B" / "train_0001.png", np.zeros((1, 32, 32), np.uint8))
    write_raster(t / "label" / "train_0002.png", np.zeros((1, 32, 30), np.uint8))
    msg = _expect(
        root,
        f"{t / 'B' / 'train_0000.png'}: size 16x32 differs from",
        f"{t / 'B' / 'train_0001.png'}: 1 band(s) but",
        f"{t / 'label' / 'train_0002.png'}: label size 32x30 differs",
    )
    assert msg.startswith("3 problem(s) in dataset")


def test_label_values_truncated_file_and_nan(root, tmp_path):
    t = root / "train"
    write_raster(t / "label" / "train_0000.png", np.full((1, 32, 32), 128, np.uint8))
    data = (t / "A" / "train_0001.png").read_bytes()
    (t / "A" / "train_0001.png").write_bytes(data[: len(data) // 2])
    (t / "B" / "train_0002.png").write_bytes(b"")
    _expect(
        root,
        f"{t / 'label' / 'train_0000.png'}: label values 128 not allowed",
        f"{t / 'A' / 'train_0001.png'}: unreadable or truncated",
        f"{t / 'B' / 'train_0002.png'}: empty file",
    )
    # The header-only mode does not decode, so only the empty file is found.
    msg = _expect(root, "empty file", mode="header")
    assert "label values" not in msg
    # Float GeoTIFFs with NaN.
    f = tmp_path / "f" / "train"
    for d in ("A", "B"):
        img = np.ones((2, 8, 8), np.float32)
        if d == "B":
            img[0, 0, 0] = np.nan
        write_raster(f / d / "x.tif", img)
    write_raster(f / "label" / "x.tif", np.zeros((1, 8, 8), np.uint8))
    _expect(tmp_path / "f", f"{f / 'B' / 'x.tif'}: 1 NaN/inf pixel value(s)")


def test_empty_split_and_missing_split(root):
    for d in ("A", "B", "label"):
        shutil.rmtree(root / "val" / d)
        (root / "val" / d).mkdir()
    _expect(root, "split 'val' is empty", splits=("val",))
    _expect(root, "no split 'test'", splits=("test",))


def test_ignore_value_allows_void_label(root):
    write_raster(
        root / "val" / "label" / "val_0000.png",
        np.array([[[0, 1], [255, 1]]], np.uint8).repeat(16, 1).repeat(16, 2),
    )
    _expect(root, "mixes values 1 and 255", splits=("val",))
    rep = validate_dataset(root, ["val"], mapping=LabelMapping(ignore_value=255), progress=False)
    assert rep.splits["val"].changed_fraction == pytest.approx(2 / 3)
