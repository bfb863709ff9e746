import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from geomamba.data.errors import DataError
from geomamba.data.io import RasterWriter, raster_info, read_raster, write_raster


def test_geotiff_round_trip_keeps_crs_transform_dtype(tmp_path):
    arr = np.arange(2 * 5 * 7, dtype=np.uint16).reshape(2, 5, 7)
    crs, transform = CRS.from_epsg(32650), Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4400000.0)
    path = write_raster(tmp_path / "x.tif", arr, crs=crs, transform=transform)
    info = raster_info(path)
    assert (info.height, info.width, info.count, info.dtype) == (5, 7, 2, "uint16")
    assert info.crs == crs and info.transform == transform
    np.testing.assert_array_equal(read_raster(path), arr)
    np.testing.assert_array_equal(read_raster(path, (1, 2, 3, 4), bands=[2]), arr[1:2, 1:4, 2:6])


@pytest.mark.parametrize("suffix", [".png", ".bmp"])
def test_pil_formats_round_trip(tmp_path, suffix):
    arr = np.random.default_rng(0).integers(0, 255, (3, 6, 9), dtype=np.uint8)
    path = write_raster(tmp_path / f"x{suffix}", arr)
    info = raster_info(path)
    assert (info.count, info.size, info.crs) == (3, (6, 9), None)
    np.testing.assert_array_equal(read_raster(path), arr)
    np.testing.assert_array_equal(read_raster(path, (2, 3, 2, 2)), arr[:, 2:4, 3:5])


def test_uint16_png_and_single_band(tmp_path):
    arr = np.array([[[0, 1000], [65535, 7]]], np.uint16)
    path = write_raster(tmp_path / "x.png", arr)
    out = read_raster(path)
    assert out.dtype == np.uint16 and out.shape == (1, 2, 2)
    np.testing.assert_array_equal(out, arr)


def test_truncated_and_empty_files_name_the_file(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    good = write_raster(tmp_path / "good.png", arr)
    bad = tmp_path / "cut.png"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut\.png: unreadable or truncated"):
        read_raster(bad)
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.tif: empty file"):
        raster_info(empty)
    with pytest.raises(DataError, match="file not found"):
        read_raster(tmp_path / "nope.png")
    with pytest.raises(DataError, match=r"band\(s\) \[4\] requested"):
        read_raster(good, bands=[4])


def test_writer_is_atomic(tmp_path):
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError):
        with RasterWriter(target, height=4, width=4, count=1, dtype="uint8") as dst:
            dst.write(np.ones((1, 2, 4), np.uint8))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="unsupported output format"):
        RasterWriter(tmp_path / "x.xyz", height=1, width=1, count=1, dtype="uint8")
