import itertools

import numpy as np
import pytest
import torch
from affine import Affine
from rasterio.crs import CRS

from _engine_helpers import TinyChangeNet
from geomamba.data.datasets import normalise_image
from geomamba.data.io import raster_info, read_raster, write_raster
from geomamba.engine.inference import make_predict_fn, predict_scene, sliding_window_probs, window_starts


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyChangeNet(width=4).eval()


def test_window_starts_cover_with_overlap():
    assert window_starts(20, 32, 8) == [0]
    starts = window_starts(100, 32, 8)
    assert starts[0] == 0 and starts[-1] == 68
    assert all(b - a <= 32 - 8 for a, b in itertools.pairwise(starts))


@pytest.mark.parametrize(("h", "w"), [(64, 80), (70, 45)])
def test_sliding_window_equals_whole_image(model, h, w):
    x = torch.randn(2, 2, 3, h, w)
    fn = make_predict_fn(model)
    whole = sliding_window_probs(fn, x, window=None, pad_multiple=1)
    tiled = sliding_window_probs(fn, x, window=32, overlap=16, pad_multiple=8)  # RF radius 2 <= 16 // 4
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-6)
    assert tiled.shape == (2, 2, h, w)
    torch.testing.assert_close(tiled.sum(1), torch.ones(2, h, w))


def test_tta_is_a_probability_map(model):
    x = torch.randn(1, 2, 3, 16, 16)
    p = make_predict_fn(model, tta=True)(x)
    assert p.shape == (1, 2, 16, 16)
    torch.testing.assert_close(p.sum(1), torch.ones(1, 16, 16))


def test_scene_blocks_equal_whole_image_and_keep_georeference(model, tmp_path):
    rng = np.random.default_rng(0)
    crs, transform = CRS.from_epsg(32633), Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5000000.0)
    a = rng.integers(0, 255, (3, 96, 80), dtype=np.uint8)
    b = rng.integers(0, 255, (3, 96, 80), dtype=np.uint8)
    label = (rng.random((1, 96, 80)) > 0.8).astype(np.uint8) * 255
    for name, arr in (("a", a), ("b", b), ("label", label)):
        write_raster(tmp_path / f"{name}.tif", arr, crs=crs, transform=transform)
    mean, std = [127.0, 127.0, 127.0], [70.0, 70.0, 70.0]
    res = predict_scene(
        model,
        tmp_path / "a.tif",
        tmp_path / "b.tif",
        tmp_path / "out.tif",
        mean=mean,
        std=std,
        window=32,
        overlap=16,
        pad_multiple=8,
        block=32,
        output="prob",
        label=tmp_path / "label.tif",
        progress=False,
    )
    info = raster_info(tmp_path / "out.tif")
    assert (info.crs, info.transform, info.size, info.count) == (crs, transform, (96, 80), 1)
    x = torch.from_numpy(
        np.stack([normalise_image(a, mean=mean, std=std), normalise_image(b, mean=mean, std=std)])
    )
    with torch.no_grad():
        whole = torch.softmax(model(x[None]), 1)[0, 1].numpy()
    np.testing.assert_allclose(read_raster(tmp_path / "out.tif")[0], whole, rtol=1e-5, atol=1e-6)
    assert res.scores["support"]["changed"] == int((label > 0).sum())
    assert sum(res.scores["predicted"].values()) == 96 * 80


def test_error_map_colours():
    from geomamba.engine.figures import error_map

    pred = np.array([[1, 0, 1, 0, 1]])
    target = np.array([[1, 0, 0, 1, 255]])
    em = error_map(pred, target)
    assert em[0].tolist() == [[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [128, 128, 128]]
