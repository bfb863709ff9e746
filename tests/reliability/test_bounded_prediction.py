"""Bounded-memory prediction: a scene is read and written window by window (never whole), and a prediction
killed half-way leaves the earlier output at the target path untouched (the new map is written to a hidden
temporary file and renamed when complete; a later run removes the dead process's temporary file)."""

import signal
import subprocess
import time

import numpy as np
import pytest
import torch
import torch.nn as nn
from _reliability_helpers import cli_command, cli_env
from rasterio.env import get_gdal_config

import geomamba.engine.inference as inference
from geomamba.cli.main import main
from geomamba.data.io import WRITER_CACHE_BYTES, RasterWriter, raster_info, read_raster, write_raster
from geomamba.engine.inference import predict_scene
from geomamba.models import split_bitemporal

SIZE = 1024


class _DiffNet(nn.Module):
    """Changed where the dates differ: a 1x1 conv over |A - B|."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])[:, :, None, None])
            self.conv.bias.zero_()

    def forward(self, x, b=None):
        a, b = split_bitemporal(x, b)
        return self.conv((a - b).abs() - 0.1)  # dates scaled to [0, 1]: 50 / 255 > 0.1


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 1024 x 1024 3-band uint8 GeoTIFF pair; B differs from A in one square."""
    folder = tmp_path_factory.mktemp("scene")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 200, (3, SIZE, SIZE), dtype=np.uint8)
    b = a.copy()
    b[:, 300:500, 600:900] += 50
    write_raster(folder / "a.tif", a)
    write_raster(folder / "b.tif", b)
    return folder / "a.tif", folder / "b.tif"


def test_scene_is_read_and_written_window_by_window(scene, tmp_path, monkeypatch):
    reads, writes, caches = [], [], []
    real_read, real_write = inference.read_raster, RasterWriter.write

    def read(path, window=None, **kw):
        reads.append(window)
        return real_read(path, window, **kw)

    def write(self, arr, row, col):
        writes.append((row, col, *arr.shape[1:]))
        caches.append(get_gdal_config("GDAL_CACHEMAX"))
        return real_write(self, arr, row, col)

    monkeypatch.setattr(inference, "read_raster", read)
    monkeypatch.setattr(RasterWriter, "write", write)
    window, overlap, block = 64, 16, 256
    a, b = scene
    out = tmp_path / "change.tif"
    predict_scene(
        _DiffNet(),
        a,
        b,
        out,
        mean=None,
        std=None,
        window=window,
        overlap=overlap,
        block=block,
        progress=False,
    )
    blocks = (SIZE // block) ** 2
    assert len(reads) == 2 * blocks and len(writes) == blocks  # one read per date and block, one write
    assert None not in reads  # never the whole image
    assert max(h * w for _, _, h, w in reads) <= (block + 2 * overlap) ** 2  # a block and its halo
    assert sum(h * w for _, _, h, w in reads) <= 2 * SIZE * SIZE * 1.3  # each pixel read ~once per date
    covered = np.zeros((SIZE, SIZE), np.int32)
    for r, c, h, w in writes:
        assert h <= block and w <= block
        covered[r : r + h, c : c + w] += 1
    assert (covered == 1).all()  # the output is written once, block by block
    assert set(caches) == {WRITER_CACHE_BYTES}  # GDAL keeps at most that many written bytes in memory
    pred = read_raster(out)[0]
    assert set(np.unique(pred[300:500, 600:900])) == {255} and pred[:300].max() == 0


@pytest.mark.slow
def test_killed_prediction_leaves_the_earlier_output(scene, short_run, tmp_path):
    a, b = scene
    target = tmp_path / "change.tif"
    write_raster(target, np.zeros((1, 8, 8), np.uint8))
    before = target.read_bytes()
    base = ["predict", str(short_run.last_checkpoint), "--a", str(a), "--b", str(b), "--out", str(target)]
    args = [*base, "--window", "32", "--overlap", "8", "--block", "64", "--device", "cpu"]  # many blocks
    proc = subprocess.Popen(
        cli_command(*args), env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        # Kill once the new map is being written (its temporary file exists): polling, not timing.
        while proc.poll() is None and not list(tmp_path.glob(".change.tmp-*")):
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the prediction ended before it could be killed"
    assert target.read_bytes() == before  # the earlier map, intact
    assert len(list(tmp_path.glob(".change.tmp-*"))) == 1  # the dead process's partial file, hidden
    assert (
        main([*base, "--window", "128", "--overlap", "16", "--block", "512", "--device", "cpu"]) == 0
    )  # a new run
    assert raster_info(target).size == (SIZE, SIZE)
    assert not list(tmp_path.glob(".change.tmp-*"))  # removed by the next run


def test_window_batch_option_bounds_the_forward_passes(scene, short_run, tmp_path, monkeypatch, capsys):
    import geomamba.engine.predict as predict

    seen = []
    real = predict.predict_scene

    def spy(*args, **kwargs):
        seen.append(kwargs["window_batch"])
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "predict_scene", spy)
    a, b = scene
    args = ["predict", str(short_run.last_checkpoint), "--a", str(a), "--b", str(b), "--device", "cpu"]
    args += ["--out", str(tmp_path / "m.tif"), "--window", "256", "--overlap", "16", "--block", "1024"]
    assert main([*args, "--window-batch", "3"]) == 0
    assert main(args) == 0
    saved = torch.load(short_run.last_checkpoint, weights_only=True)["geomamba"]["config"]["eval"]
    assert seen == [3, saved["window_batch"]]  # else the checkpoint's eval.window_batch
    assert main([*args, "--window-batch", "0"]) == 2
    assert capsys.readouterr().err.strip().endswith("--window-batch must be >= 1, got 0")
