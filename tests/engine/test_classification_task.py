"""The classification task: ADCD-Net's two stages through the engine on a synthetic MS + PAN scene (stage II
uses stage I's priors), resumable per stage, OA/AA/Kappa from the confusion core, `geomamba test`, and
`geomamba predict --ms --pan` writing a class-map GeoTIFF with the PAN georeference plus a PNG."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import Affine

from geomamba.cli.main import main
from geomamba.data.mspan import make_synthetic_mspan, write_mspan
from geomamba.engine.adcd_stages import stage_configs
from geomamba.engine.config import ConfigError, load_config
from geomamba.engine.module import load_module
from geomamba.engine.tasks import get_task
from geomamba.engine.train import train

CLASSES = ["water", "field", "urban"]


def adcd_overrides(out, name: str = "adcd") -> list[str]:
    """A tiny two-stage run: adcdnet_tiny on a 16x16 synthetic scene (PAN 64x64), 8-pixel patches."""
    return [
        "task=classification",
        f"output_dir={out}",
        f"name={name}",
        "seed=0",
        "model.name=adcdnet_tiny",
        "model.options={dropout: 0.0}",
        f"data.class_names={CLASSES}",
        "data.mspan.synthetic={size: 16, num_classes: 3, labelled_fraction: 0.6, seed: 3}",
        "data.mspan.patch_size=8",
        "data.mspan.train_fraction=0.3",
        "data.batch_size=8",
        "data.eval_batch_size=32",
        "data.num_workers=0",
        "optim.lr=5e-3",
        "scheduler.name=none",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.enable_progress_bar=false",
        "trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=1",
        "classification.stage1.max_epochs=1",
        "classification.stage2.max_epochs=1",
        "eval.num_error_maps=1",
    ]


class _Stage1Weights(pl.Callback):
    """Stage I's weights at the start of each stage's training (after stage II loaded its priors)."""

    def __init__(self) -> None:
        self.starts: list[dict[str, torch.Tensor]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.starts.append({k: v.clone() for k, v in pl_module.model.stage1.state_dict().items()})


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    out = tmp_path_factory.mktemp("adcd")
    recorder = _Stage1Weights()
    result = train(load_config(None, adcd_overrides(out)), callbacks=[recorder])
    return result, recorder


def _stage1_state(path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("model.stage1."): v for k, v in state.items() if k.startswith("model.stage1.")}


def test_config_defaults_and_errors(tmp_path):
    cfg = load_config(None, adcd_overrides("runs"))
    assert cfg.loss == {"name": "adcd"} and cfg.eval.monitor == "OA" and cfg.classification.stage is None
    cfg = load_config(
        None, ["task=classification", "data.mspan.synthetic={num_classes: 3}", "classification.stage=1"]
    )
    assert cfg.data.class_names == ["class1", "class2", "class3"] and cfg.eval.monitor == "cosine"
    assert get_task("classification").runner is not None
    bad = [
        (["task=classification"], "data.class_names: set the names of the classes"),
        (
            [*adcd_overrides("r"), "classification.stage=2"],
            "classification.stage1_checkpoint: stage II alone",
        ),
        ([*adcd_overrides("r"), "eval.monitor=cosine"], "'cosine' is stage I's score"),
        ([*adcd_overrides("r"), "data.mspan.val_fraction=1"], "data.mspan.val_fraction: must be in (0, 1)"),
        ([*adcd_overrides("r"), "classification.stage=3"], "classification.stage: 1, 2 or null"),
        ([*adcd_overrides("r"), "eval.monitor=BIoU"], "eval.monitor: 'BIoU' is not a score"),
    ]
    for overrides, message in bad:
        with pytest.raises(ConfigError) as info:
            load_config(None, overrides)
        assert message in str(info.value)
    with pytest.raises(
        ConfigError, match="'cmdbnet_tiny' is a segmentation model; task classification trains adcdnet"
    ):
        train(load_config(None, [*adcd_overrides(tmp_path), "model.name=cmdbnet_tiny"]))


def test_shipped_demo_config(tmp_path):
    cfg = load_config(
        Path(__file__).resolve().parents[2] / "configs" / "adcdnet_synthetic.yaml", [f"output_dir={tmp_path}"]
    )
    assert cfg.task == "classification" and cfg.model.name == "adcdnet" and len(cfg.data.class_names) == 4
    first, second = stage_configs(cfg)
    run = tmp_path / "adcdnet_synthetic"
    assert (first.output_dir, first.name, second.name) == (str(run), "stage1", "stage2")
    assert (first.trainer.max_epochs, second.trainer.max_epochs) == (10, 30)
    assert first.eval.monitor == "cosine" and second.eval.monitor == "OA" and second.classification.stage == 2
    assert (
        first.data.root == second.data.root == str(run / "synthetic_data")
        and first.data.mspan.synthetic is None
    )
    assert (run / "synthetic_data" / "labels.tif").is_file()


def test_two_stages_run_and_stage_two_uses_stage_one_priors(two_stage):
    result, recorder = two_stage
    run = result.run_dir
    for path in (
        "config.yaml",
        "metrics.json",
        "synthetic_data/pan.tif",
        "stage1/config.yaml",
        "stage2/config.yaml",
    ):
        assert (run / path).is_file(), path
    assert result.best_checkpoint.parent == run / "stage2" / "checkpoints"
    stage2 = load_module(result.best_checkpoint)
    stage1_ckpt = stage2.cfg.classification.stage1_checkpoint
    assert stage2.cfg.classification.stage == 2 and Path(stage1_ckpt).parent == run / "stage1" / "checkpoints"
    # stage I trained (its weights moved), stage II started from exactly those weights and kept them frozen
    initial, loaded = recorder.starts
    assert any(not torch.equal(initial[k], loaded[k]) for k in initial)
    trained = _stage1_state(stage1_ckpt)
    for k, v in stage2.model.stage1.state_dict().items():
        assert torch.equal(v, trained[k]) and torch.equal(loaded[k], trained[k]), k
    assert not any(p.requires_grad for p in stage2.model.stage1.parameters())
    # the classification depends on the priors: other stage-I weights give other probabilities
    scene = make_synthetic_mspan(16, ratio=4, bands=4, num_classes=3, labelled_fraction=0.6, seed=3)
    batch = {
        "ms": torch.from_numpy(scene.ms[None, :, :8, :8]),
        "pan": torch.from_numpy(scene.pan[None, :, :32, :32]),
    }
    with torch.no_grad():
        before = stage2.predict_probs(batch)
        for p in stage2.model.stage1.parameters():
            p.add_(0.5 * torch.randn_like(p))
        assert (stage2.predict_probs(batch) - before).abs().max() > 1e-4


def test_scores_and_outputs_of_the_stages(two_stage):
    result, _ = two_stage
    run = result.run_dir
    test = result.test_scores
    assert {"OA", "AA", "Kappa", "mIoU", "per_class", "confusion"} <= set(test)
    acc = [v["Acc"] for n, v in test["per_class"].items() if test["support"][n] > 0]
    assert test["AA"] == pytest.approx(np.mean(acc))
    cm = np.array(test["confusion"])
    assert test["OA"] == pytest.approx(np.trace(cm) / cm.sum())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["monitor"] == "OA" and "AA" in metrics["history"][-1] and len(metrics["history"]) == 1
    stages = metrics["stages"]
    assert stages["stage1"]["monitor"] == "cosine" and -1 <= stages["stage1"]["best"]["cosine"] <= 1
    assert set(stages["stage1"]["test"]) == {"cosine", "similarity"}
    assert stages["stage2"]["test"]["OA"] == test["OA"]
    assert (run / "stage2" / "error_maps" / "test" / "errors.png").is_file()
    assert (run / "stage1" / "curves" / "metrics.png").is_file()


def test_test_command(two_stage, capsys):
    result, _ = two_stage
    assert main(["test", str(result.best_checkpoint), "--split", "test"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("OA ") and "AA" in line and "Kappa" in line
    stage1 = next((result.run_dir / "stage1" / "checkpoints").glob("best-*.ckpt"))
    assert main(["test", str(stage1)]) == 0
    assert capsys.readouterr().out.strip().startswith("cosine ")


def test_predict_writes_a_geotiff_with_the_pan_georeference_and_a_png(two_stage, tmp_path, capsys):
    result, _ = two_stage
    scene = make_synthetic_mspan(12, ratio=4, bands=4, num_classes=3, labelled_fraction=0.5, seed=7)
    pan_tf = Affine(2.0, 0.0, 300000.0, 0.0, -2.0, 5000000.0)
    scene.transform, scene.crs = pan_tf, rasterio.crs.CRS.from_epsg(32633)
    files = write_mspan(tmp_path / "scene", scene)
    ckpt = str(result.best_checkpoint)
    out = tmp_path / "map.tif"
    args = ["predict", ckpt, "--ms", str(files["ms"]), "--pan", str(files["pan"]), "--out", str(out)]
    assert main([*args, "--label", str(files["labels"]), "--batch-size", "50"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "(48x48)" in printed and "OA " in printed
    with rasterio.open(files["pan"]) as pan, rasterio.open(out) as cls:
        assert cls.crs == pan.crs and cls.transform == pan.transform and cls.shape == pan.shape
        ids = cls.read(1)
        assert cls.tags()["CLASS_1"] == "water" and cls.nodata == 0 and cls.colormap(1)[1][3] == 255
    assert ids.min() >= 1 and ids.max() <= 3
    # every MS pixel's class covers its 4x4 PAN block
    assert (ids == np.repeat(np.repeat(ids[::4, ::4], 4, 0), 4, 1)).all()
    png = np.asarray(Image.open(out.with_suffix(".png")))
    assert png.shape == (48, 48, 3)
    same = ids[:, :, None] == ids.reshape(-1)[None, None, :]  # equal classes <-> equal colours
    colours = png.reshape(-1, 3)
    assert all((colours[same[i, j]] == png[i, j]).all() for i, j in [(0, 0), (20, 30), (47, 47)])
    # on the MS grid: one pixel per MS pixel, the PAN transform scaled by the ratio
    ms_out = tmp_path / "map_ms.tif"
    assert main([*args[:-1], str(ms_out), "--grid", "ms"]) == 0
    with rasterio.open(ms_out) as cls:
        assert cls.shape == (12, 12) and cls.transform == pan_tf * Affine.scale(4)
        assert (cls.read(1) == ids[::4, ::4]).all()


def test_predict_errors_are_one_line(two_stage, tmp_path, capsys):
    result, _ = two_stage
    files = write_mspan(tmp_path / "scene", make_synthetic_mspan(8, ratio=4, num_classes=3, seed=1))
    one_band = write_mspan(
        tmp_path / "one", make_synthetic_mspan(8, ratio=4, bands=1, num_classes=3), fmt="npy"
    )
    ms, pan, tif = str(files["ms"]), str(files["pan"]), str(tmp_path / "m.tif")
    best = str(result.best_checkpoint)
    stage1 = str(next((result.run_dir / "stage1" / "checkpoints").glob("*.ckpt")))
    cases = [
        ([stage1, "--ms", ms, "--pan", pan, "--out", tif], "a stage-I"),
        ([best, "--ms", ms, "--out", tif], "both --ms and --pan"),
        ([best, "--ms", ms, "--pan", pan, "--out", str(tmp_path / "m.png")], "ending in .tif"),
        ([best, "--a", ms, "--b", ms, "--out", tif], "give --ms and --pan"),
        ([best, "--ms", str(one_band["ms"]), "--pan", pan, "--out", tif], "has 1 band(s) but"),
    ]
    for argv, message in cases:
        assert main(["predict", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


# Last: it trains the shared run further (stage II's best checkpoint may change).
def test_rerun_resumes_each_stage(two_stage, capsys):
    result, _ = two_stage
    run = result.run_dir
    step = lambda p: torch.load(p, map_location="cpu", weights_only=True)["global_step"]  # noqa: E731
    steps1 = step(run / "stage1" / "checkpoints" / "last.ckpt")
    steps2 = step(run / "stage2" / "checkpoints" / "last.ckpt")
    more = [*adcd_overrides(run.parent, run.name), "classification.stage2.max_epochs=2"]
    assert main(["train", str(run / "config.yaml"), *more]) == 0
    assert step(run / "stage1" / "checkpoints" / "last.ckpt") == steps1  # finished: resumed as a no-op
    assert step(run / "stage2" / "checkpoints" / "last.ckpt") == 2 * steps2  # one more epoch
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1]
    out = capsys.readouterr().out
    assert f"run folder: {run}" in out and "test: OA " in out and " AA " in out
