"""Hostile inputs: the dataset validator (``geomamba stats`` / ``validate_dataset``), the training loader and the
predictor (``geomamba predict``) fed malformed data. Each case must give a one-line error naming the bad file,
no traceback (also not from inside a DataLoader worker), and never a partial output file in place of a good
one. Unusual but valid inputs (16-bit images, odd paths, stray non-image files) must work.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from _reliability_helpers import cli_command, cli_env

from _engine_helpers import tiny_overrides
from geomamba.cli.main import main
from geomamba.data.errors import DataError
from geomamba.data.io import read_raster, write_raster
from geomamba.data.validate import validate_dataset

SIZE = 16


def _dataset(root: Path, fmt: str = "png") -> Path:
    """``root/{A,B,label}/{x,y}.<fmt>``: a valid one-split dataset of 16x16 uint8 tiles (PNG labels
    for JPEG images: lossy labels are not labels)."""
    rng = np.random.default_rng(0)
    label_fmt = "png" if fmt == "jpg" else fmt
    for name in ("x", "y"):
        for d in ("A", "B"):
            write_raster(root / d / f"{name}.{fmt}", rng.integers(0, 255, (3, SIZE, SIZE), dtype=np.uint8))
        label = (rng.random((1, SIZE, SIZE)) > 0.7).astype(np.uint8) * 255
        write_raster(root / "label" / f"{name}.{label_fmt}", label)
    return root


def _truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _png_header_only(path: Path, width: int, height: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def _corrupt_tiff_block(root: Path) -> Path:
    big = np.random.default_rng(1).integers(0, 255, (3, 300, 300), dtype=np.uint8)
    for d in ("A", "B"):
        write_raster(root / d / "x.tif", big)
    write_raster(root / "label" / "x.tif", np.zeros((1, 300, 300), np.uint8))
    path = root / "A" / "x.tif"
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 200):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    return path


def _float_pair(root: Path, bad: float) -> Path:
    for name in ("x", "y"):
        for d in ("A", "B"):
            write_raster(root / d / f"{name}.tif", np.full((3, SIZE, SIZE), 0.5, np.float32))
    img = np.full((3, SIZE, SIZE), 0.5, np.float32)
    img[1, 3, 5] = bad
    write_raster(root / "A" / "x.tif", img)
    return root / "A" / "x.tif"


def _symlink_loop(root: Path, fmt: str) -> Path:
    path = root / "A" / f"x.{fmt}"
    path.unlink()
    os.symlink(root / "A" / ".loop", path)  # x -> .loop -> x
    os.symlink(path, root / "A" / ".loop")
    return path


def _broken_symlink(root: Path, fmt: str) -> Path:
    path = root / "A" / f"x.{fmt}"
    path.unlink()
    os.symlink(root / "elsewhere" / f"x.{fmt}", path)
    return path


def _replace(path: Path, array: np.ndarray) -> Path:
    path.unlink()
    write_raster(path, array)
    return path


# Each case: (format, mutation(root) -> bad file, expected message fragment, predictor also tested).
Mutation = Callable[[Path], Path]
CASES: dict[str, tuple[str, Mutation, str, bool]] = {
    "truncated_png": (
        "png",
        lambda r: (_truncate(r / "A" / "x.png", 0.5), r / "A" / "x.png")[1],
        "unreadable or truncated image",
        True,
    ),
    "truncated_tiff_data": (
        "tif",
        lambda r: (_truncate(r / "A" / "x.tif", 0.7), r / "A" / "x.tif")[1],
        "unreadable or truncated raster",
        True,
    ),
    "truncated_tiff_header": (
        "tif",
        lambda r: (_truncate(r / "A" / "x.tif", 0.02), r / "A" / "x.tif")[1],
        "unreadable raster",
        True,
    ),
    "truncated_jpeg": (
        "jpg",
        lambda r: (_truncate(r / "A" / "x.jpg", 0.5), r / "A" / "x.jpg")[1],
        "unreadable image (Truncated File Read)",
        True,
    ),
    "corrupt_tiff_block": ("tif", _corrupt_tiff_block, "IReadBlock failed", True),
    "zero_byte_file": (
        "png",
        lambda r: ((r / "B" / "x.png").write_bytes(b""), r / "B" / "x.png")[1],
        "empty file (0 bytes)",
        True,
    ),
    "size_mismatch": (
        "png",
        lambda r: _replace(r / "B" / "x.png", np.zeros((3, SIZE, SIZE - 4), np.uint8)),
        "size 16x12 differs from",
        True,
    ),
    "one_band_vs_three_bands": (
        "png",
        lambda r: _replace(r / "B" / "x.png", np.zeros((1, SIZE, SIZE), np.uint8)),
        "1 band(s) but",
        True,
    ),
    "16bit_vs_8bit_dates": (
        "tif",
        lambda r: _replace(r / "A" / "x.tif", np.full((3, SIZE, SIZE), 4000, np.uint16)),
        "dtype",
        True,
    ),
    "nan_in_float_geotiff": ("tif", lambda r: _float_pair(r, np.nan), "NaN/inf pixel value", False),
    "inf_in_float_geotiff": ("tif", lambda r: _float_pair(r, np.inf), "NaN/inf pixel value", False),
    "label_value_3": (
        "png",
        lambda r: _replace(r / "label" / "x.png", np.full((1, SIZE, SIZE), 3, np.uint8)),
        "label values 3 not allowed",
        True,
    ),
    "label_value_128": (
        "png",
        lambda r: _replace(r / "label" / "x.png", np.full((1, SIZE, SIZE), 128, np.uint8)),
        "label values 128 not allowed",
        True,
    ),
    "label_16bit_value_256": (
        "tif",
        lambda r: _replace(r / "label" / "x.tif", np.full((1, SIZE, SIZE), 256, np.uint16)),
        "label values 256 not allowed",
        True,
    ),
    "label_bands_differ": (
        "png",
        lambda r: _replace(
            r / "label" / "x.png",
            np.stack([np.zeros((SIZE, SIZE), np.uint8)] * 2 + [np.ones((SIZE, SIZE), np.uint8)]),
        ),
        "label has 3 different bands",
        True,
    ),
    "text_file_named_png": (
        "png",
        lambda r: ((r / "A" / "x.png").write_text("not an image\n"), r / "A" / "x.png")[1],
        "cannot identify image file",
        True,
    ),
    "random_bytes_named_tif": (
        "tif",
        lambda r: ((r / "A" / "x.tif").write_bytes(np.random.default_rng(2).bytes(300)), r / "A" / "x.tif")[
            1
        ],
        "not recognized as being in a supported file format",
        True,
    ),
    "decompression_bomb_header": (
        "png",
        lambda r: (_png_header_only(r / "A" / "x.png", 60000, 60000), r / "A" / "x.png")[1],
        "decompression bomb",
        True,
    ),
    "symlink_loop": ("png", lambda r: _symlink_loop(r, "png"), "symbolic link loop", True),
    "broken_symlink": ("png", lambda r: _broken_symlink(r, "png"), "broken symbolic link", True),
    "bad_file_under_unicode_path_with_spaces": (
        "png",
        lambda r: (_truncate(r / "A" / "x.png", 0.3), r / "A" / "x.png")[1],
        "unreadable or truncated image",
        True,
    ),
}


def _root(tmp_path: Path, case: str) -> Path:
    if "unicode" in case:
        return tmp_path / "my data" / "变化 检测 é"
    return tmp_path / "ds"


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("geomamba: error: "), err
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_validator_names_the_bad_file_in_one_line(case, tmp_path, capsys):
    fmt, mutate, fragment, _ = CASES[case]
    root = _dataset(_root(tmp_path, case), fmt)
    bad = mutate(root)
    with pytest.raises(DataError) as info:
        validate_dataset(root, ["train"], progress=False)
    msg = str(info.value)
    assert "\n" not in msg and str(bad) in msg and fragment in msg, msg
    assert main(["stats", str(root)]) == 2
    line = _one_line(capsys)
    assert str(bad) in line and fragment in line


@pytest.fixture(scope="module")
def checkpoint(short_run):
    return short_run.last_checkpoint  # trained on 3-band uint8 GeoTIFFs


@pytest.mark.parametrize("case", sorted(c for c, v in CASES.items() if v[3]))
def test_predictor_names_the_bad_file_and_keeps_the_old_output(case, checkpoint, tmp_path, capsys):
    fmt, mutate, fragment, _ = CASES[case]
    root = _dataset(_root(tmp_path, case), fmt)
    bad = mutate(root)
    out = tmp_path / "out"
    out.mkdir()
    target = out / "change.tif"
    target.write_bytes(b"a good map from an earlier run")
    args = [
        "predict",
        str(checkpoint),
        "--a",
        str(root / "A" / f"x.{fmt}"),
        "--b",
        str(root / "B" / f"x.{fmt}"),
    ]
    args += ["--out", str(target), "--window", "16", "--overlap", "4", "--device", "cpu"]
    if bad.parent.name == "label":
        args += ["--label", str(bad)]
    assert main(args) == 2
    line = _one_line(capsys)
    assert str(bad) in line and fragment in line, line
    assert target.read_bytes() == b"a good map from an earlier run"
    assert sorted(p.name for p in out.iterdir()) == ["change.tif"]  # no temporary file left


def test_predictor_refuses_other_integer_units_and_nan_windows(checkpoint, tmp_path, capsys):
    from geomamba.engine.inference import predict_scene
    from geomamba.engine.module import load_module

    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    write_raster(a, np.full((3, SIZE, SIZE), 3000, np.uint16))
    write_raster(b, np.full((3, SIZE, SIZE), 3000, np.uint16))
    assert (
        main(["predict", str(checkpoint), "--a", str(a), "--b", str(b), "--out", str(tmp_path / "o.tif")])
        == 2
    )
    assert f"{a}: uint16 pixels but the model was trained on uint8 images" in _one_line(capsys)
    nan = _float_pair(_dataset(tmp_path / "f", "tif"), np.nan)
    model = load_module(checkpoint).model
    with pytest.raises(DataError, match=rf"{nan}: NaN/inf pixel values in window"):
        predict_scene(model, nan, nan.parent.parent / "B" / "x.tif", tmp_path / "p.tif", mean=None, std=None)
    assert not (tmp_path / "p.tif").exists() and not list(tmp_path.glob(".p*"))


def test_unusual_but_valid_inputs_work(checkpoint, tmp_path, capsys):
    # 16-bit single-band PNGs keep their values; stray files and folder loops are ignored.
    root = tmp_path / "u16"
    for name in ("x", "y"):
        for d in ("A", "B"):
            write_raster(root / d / f"{name}.png", np.full((1, SIZE, SIZE), 40000, np.uint16))
        write_raster(root / "label" / f"{name}.png", np.zeros((1, SIZE, SIZE), np.uint8))
    (root / "A" / "notes.txt").write_text("acquisition notes")
    (root / "A" / "x.png.aux.xml").write_text("<PAMDataset/>")
    (root / "B" / "table.csv").write_text("a,b\n")
    os.symlink(root, root / "A" / "loop")
    report = validate_dataset(root, ["train"], progress=False)
    assert report.splits["train"].dtype == "uint16" and read_raster(root / "A" / "x.png").max() == 40000
    # Paths with spaces and unicode: the whole chain works and writes its output.
    uni = _dataset(tmp_path / "my data" / "变化 检测 é", "tif")
    assert validate_dataset(uni, ["train"], progress=False).splits["train"].bands == 3
    out = tmp_path / "résultats 1" / "carte é.tif"
    args = ["predict", str(checkpoint), "--a", str(uni / "A" / "x.tif"), "--b", str(uni / "B" / "x.tif")]
    assert main([*args, "--out", str(out), "--window", "16", "--overlap", "4", "--device", "cpu"]) == 0
    assert read_raster(out).shape == (1, SIZE, SIZE)
    capsys.readouterr()


def test_bad_file_found_inside_a_loader_worker_is_one_line(tmp_path):
    """With only a header check before training, the truncated tile fails inside a DataLoader worker; the
    command (run in a subprocess, as a user runs it) ends with one error line naming the file."""
    root = _dataset(tmp_path / "ds", "png")
    shutil.copytree(root, tmp_path / "ds2" / "train")
    shutil.copytree(root, tmp_path / "ds2" / "val")
    root = tmp_path / "ds2"
    _truncate(root / "train" / "A" / "y.png", 0.6)
    config = tmp_path / "run.yaml"
    config.write_text("name: run\n")
    over = tiny_overrides(root, tmp_path / "runs")
    over += ["data.validate=header", "data.num_workers=1", "data.mean=[1,1,1]", "data.std=[1,1,1]"]
    proc = subprocess.run(
        cli_command("train", str(config), *over), env=cli_env(), capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "worker" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
    assert errors == [proc.stderr.strip().splitlines()[-1]]
    assert (
        errors[0]
        == f"geomamba: error: {root / 'train' / 'A' / 'y.png'}: unreadable or truncated image (image file is truncated)"
    )
