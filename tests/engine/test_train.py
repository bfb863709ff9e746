import csv
import json

import numpy as np
import pytest
import torch

from geomamba.data.errors import DataError, GeomambaError
from geomamba.data.io import raster_info, read_raster, write_raster
from geomamba.engine.config import load_config
from geomamba.engine.module import load_module
from geomamba.engine.predict import predict_paths
from geomamba.engine.train import evaluate_checkpoint, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dataset):
    from _engine_helpers import tiny_overrides

    out = tmp_path_factory.mktemp("runs")
    result = train(load_config(None, tiny_overrides(tiny_dataset, out)), resume=False)
    return result, out


def test_run_writes_every_output(trained):
    result, _ = trained
    run = result.run_dir
    assert result.best_checkpoint.is_file() and result.last_checkpoint == run / "checkpoints" / "last.ckpt"
    for rel in (
        "config.yaml",
        "train.log",
        "curves/loss.png",
        "curves/metrics.png",
        "error_maps/val/error_maps.png",
    ):
        assert (run / rel).is_file(), rel
    assert len(list((run / "error_maps" / "test").glob("test_*.png"))) == 2
    assert list((run / "logs" / "tensorboard").rglob("events.out.tfevents*"))
    assert list((run / "logs" / "csv").rglob("metrics.csv"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == [2, 4]
    assert set(metrics["test"]["per_class"]) == {"unchanged", "changed"}
    assert metrics["monitor"] == "F1_changed" and "F1_changed" in metrics["best"]
    # The resolved config holds the statistics; the checkpoint holds plain data only.
    resolved = load_config(run / "config.yaml")
    assert len(resolved.data.mean) == 3 and all(s > 0 for s in resolved.data.std)
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    assert ckpt["geomamba"]["config"]["data"]["mean"] == resolved.data.mean
    assert ckpt["geomamba"]["version"] and ckpt["global_step"] == 4
    assert "per-class results" in (run / "train.log").read_text()


def test_test_command_reproduces_the_scores(trained, tiny_dataset):
    result, _ = trained
    scores = evaluate_checkpoint(result.best_checkpoint, data_root=tiny_dataset)
    assert scores["confusion"] == result.test_scores["confusion"]
    saved = json.loads((result.run_dir / "test_test" / "metrics.json").read_text())
    assert saved["test"]["confusion"] == scores["confusion"]


def test_predict_geotiff_keeps_georeference(trained, tiny_dataset, tmp_path):
    result, _ = trained
    a, b = tiny_dataset / "test" / "A" / "test_0000.tif", tiny_dataset / "test" / "B" / "test_0000.tif"
    label = tiny_dataset / "test" / "label" / "test_0000.tif"
    res = predict_paths(
        result.best_checkpoint, a, b, tmp_path / "out.tif", label=label, window=32, overlap=8, progress=False
    )
    info, src = raster_info(tmp_path / "out.tif"), raster_info(a)
    assert (info.crs, info.transform, info.size, info.dtype) == (src.crs, src.transform, src.size, "uint8")
    assert set(np.unique(read_raster(tmp_path / "out.tif"))) <= {0, 255}
    assert res.scores["support"]["changed"] == int((read_raster(label) > 0).sum())
    prob = predict_paths(
        result.best_checkpoint, a, b, tmp_path / "p.tif", output="prob", tta=True, progress=False
    )
    p = read_raster(prob.outputs[0].path)
    assert p.dtype == np.float32 and p.min() >= 0 and p.max() <= 1
    # Folders: one output per shared name; bad pairs name the files.
    folder = predict_paths(
        result.best_checkpoint, a.parent, b.parent, tmp_path / "maps", label=label.parent, progress=False
    )
    assert sorted(r.path.name for r in folder.outputs) == ["test_0000.tif", "test_0001.tif"]
    write_raster(tmp_path / "b4.tif", np.zeros((4, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"b4\.tif: 4 band\(s\) but .*test_0000\.tif has 3"):
        predict_paths(result.best_checkpoint, a, tmp_path / "b4.tif", tmp_path / "x.tif", progress=False)
    assert not (tmp_path / "x.tif").exists()


def test_resume_continues_from_the_saved_step(trained, tiny_dataset):
    from _engine_helpers import tiny_overrides

    result, out = trained
    before = torch.load(result.last_checkpoint, weights_only=True)["geomamba"]["history"]
    # Same run name, one more epoch: resumes automatically from last.ckpt (step 4).
    again = train(load_config(None, [*tiny_overrides(tiny_dataset, out), "trainer.max_epochs=3"]))
    ckpt = torch.load(again.last_checkpoint, weights_only=True)
    assert ckpt["global_step"] == 6
    assert ckpt["geomamba"]["history"][:2] == before
    assert [h["step"] for h in ckpt["geomamba"]["history"]] == [2, 4, 6]
    logs = sorted((again.run_dir / "logs" / "csv").glob("version_*/metrics.csv"))
    with open(logs[-1]) as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert min(steps) >= 4  # the resumed process trained only the new steps
    assert "resuming from" in (again.run_dir / "train.log").read_text()


def test_max_steps_mid_epoch_is_saved_and_resumed(tiny_dataset, overrides, tmp_path):
    base = [*overrides(tiny_dataset, tmp_path), "trainer.max_epochs=-1", "eval.test_after_fit=false"]
    first = train(load_config(None, [*base, "trainer.max_steps=3"]), resume=False)
    assert torch.load(first.last_checkpoint, weights_only=True)["global_step"] == 3
    second = train(load_config(None, [*base, "trainer.max_steps=5"]), resume=True)
    assert torch.load(second.last_checkpoint, weights_only=True)["global_step"] == 5
    with pytest.raises(GeomambaError, match="checkpoint to resume from not found"):
        train(load_config(None, [*base, "name=other"]), resume=True)


def test_bad_data_fails_before_training(tiny_dataset, overrides, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root)
    (root / "train" / "B" / "train_0001.tif").unlink()
    write_raster(root / "val" / "label" / "val_0000.tif", np.full((1, 32, 32), 7, np.uint8))
    with pytest.raises(DataError) as info:
        train(load_config(None, overrides(root, tmp_path / "runs")), resume=False)
    msg = str(info.value)
    assert "train_0001.*: missing partner file" in msg and "val_0000.tif: label values 7 not allowed" in msg
    assert not (tmp_path / "runs" / "run" / "checkpoints").exists()


def test_load_module_errors(trained, tmp_path):
    result, _ = trained
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(result.last_checkpoint.read_bytes()[:100])
    with pytest.raises(GeomambaError, match=r"bad\.ckpt: unreadable or corrupt checkpoint"):
        load_module(bad)
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    ckpt["geomamba"]["config"]["model"]["options"] = {"width": 4}
    torch.save(ckpt, tmp_path / "other.ckpt")
    with pytest.raises(GeomambaError, match="weights do not match model"):
        load_module(tmp_path / "other.ckpt")
