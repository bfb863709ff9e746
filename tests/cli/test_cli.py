import json

import numpy as np
import pytest

from _engine_helpers import TINY_MODEL, tiny_overrides
from geomamba.cli.main import main
from geomamba.data.io import raster_info, write_raster
from geomamba.data.synthetic import generate_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_dataset(
        tmp_path_factory.mktemp("cli") / "ds", splits={"train": 4, "val": 2, "test": 2}, size=32, fmt="tif"
    )


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    return err[0]


def test_train_test_predict_commands(dataset, tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("name: cli\n")
    assert main(["train", str(cfg), *tiny_overrides(dataset, tmp_path / "runs", "cli")]) == 0
    out = capsys.readouterr().out
    assert "run folder:" in out and "test: F1" in out
    ckpt = tmp_path / "runs" / "cli" / "checkpoints" / "last.ckpt"
    assert (
        main(
            ["test", str(ckpt), "--data", str(dataset), "--split", "val", "--window", "16", "--overlap", "4"]
        )
        == 0
    )
    assert "F1" in capsys.readouterr().out
    assert json.loads((tmp_path / "runs" / "cli" / "test_val" / "metrics.json").read_text())["test"]
    a, b = dataset / "test" / "A", dataset / "test" / "B"
    assert (
        main(["predict", str(ckpt), "--a", str(a), "--b", str(b), "--out", str(tmp_path / "maps"), "--prob"])
        == 0
    )
    assert raster_info(tmp_path / "maps" / "test_0001.tif").dtype == "float32"
    # Bad inputs: one line naming the problem, exit status 2.
    assert (
        main(
            [
                "predict",
                str(ckpt),
                "--a",
                str(a / "test_0000.tif"),
                "--b",
                str(tmp_path / "no.tif"),
                "--out",
                "x.tif",
            ]
        )
        == 2
    )
    assert "no.tif: not found" in _err(capsys)
    assert main(["test", str(tmp_path / "missing.ckpt")]) == 2
    assert "missing.ckpt: checkpoint not found" in _err(capsys)


def test_bad_config_and_data_errors_are_one_line(dataset, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim: {lr: 0.1}\n")
    assert main(["train", str(cfg), "optim.lrr=1"]) == 2
    assert "unknown config key 'optim.lrr'" in _err(capsys)
    assert main(["train", str(cfg), *tiny_overrides(tmp_path / "nowhere", tmp_path)]) == 2
    assert "data.root: folder" in _err(capsys)
    assert main(["train", str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in _err(capsys)
    bad = tmp_path / "bad"
    write_raster(bad / "A" / "x.png", np.zeros((3, 8, 8), np.uint8))
    write_raster(bad / "B" / "x.png", np.zeros((3, 8, 8), np.uint8))
    write_raster(bad / "label" / "x.png", np.full((1, 8, 8), 3, np.uint8))
    assert main(["stats", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "x.png: label values 3 not allowed" in err and "Traceback" not in err


def test_stats_models_config(dataset, capsys):
    assert main(["stats", str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "mean: [" in out and "std: [" in out and "4 pairs, 3 band(s) uint8" in out
    assert main(["models", "tiny_change*"]) == 0
    assert TINY_MODEL in capsys.readouterr().out
    assert main(["models", "--summary", "no_such_model"]) == 2
    assert "unknown model 'no_such_model'" in _err(capsys)
    assert main(["config", "--keys"]) == 0
    assert "optim.lr" in capsys.readouterr().out


def test_demo_runs_end_to_end(tmp_path, capsys, monkeypatch):
    import geomamba.cli.demo as demo

    monkeypatch.setitem(demo.DEMO_DATA, "splits", {"train": 4, "val": 2, "test": 2})
    monkeypatch.setitem(demo.DEMO_DATA, "size", 32)
    over = [
        f"model.name={TINY_MODEL}",
        "loss=ce",
        "trainer.max_epochs=1",
        "data.crop_size=32",
        "eval.pad_multiple=8",
    ]
    assert main(["demo", "--out", str(tmp_path / "demo"), *over]) == 0
    out = capsys.readouterr().out
    assert "geomamba demo finished" in out and "test F1 (changed)" in out
    pred = next((tmp_path / "demo" / "prediction").glob("*.tif"))
    assert raster_info(pred).crs is not None
    assert (tmp_path / "demo" / "run" / "metrics.json").is_file()
