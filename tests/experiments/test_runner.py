"""The experiment runner end to end on tiny synthetic data: a comparison of two tiny models."""

from __future__ import annotations

import csv
import json

import pytest
from _experiment_helpers import TWO_MODELS, write_experiment
from PIL import Image

from geomamba.cli.main import main
from geomamba.engine.callbacks import write_json
from geomamba.experiments.config import load_experiment
from geomamba.experiments.figures import comparison_figure, load_figure_samples
from geomamba.experiments.plan import plan_runs
from geomamba.experiments.runner import ExperimentError, _handle_changed, run_experiment, run_status

METRICS = ("Precision", "Recall", "F1", "IoU", "OA", "Kappa")


def _rows(folder):
    with (folder / "results.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_every_run_appears_once_with_scores_and_efficiency(compare_exp):
    _, result = compare_exp
    rows = _rows(result.folder)
    assert [r["run"] for r in rows] == ["tiny_change_net_test", "narrow"]
    assert result.ran == ["synth/tiny_change_net_test", "synth/narrow"] and not result.failed
    for r in rows:
        assert r["status"] == "finished" and r["dataset"] == "synth"
        for m in ("Precision", "Recall", "F1", "IoU", "OA"):
            assert 0 <= float(r[m]) <= 1, (m, r[m])
        assert -1 <= float(r["Kappa"]) <= 1
        assert float(r["params_M"]) > 0 and float(r["GFLOPs"]) > 0
        assert float(r["GMACs"]) == pytest.approx(float(r["GFLOPs"]) / 2, rel=1e-3)
        assert float(r["infer_pairs_per_s"]) > 0 and float(r["train_pairs_per_s"]) > 0
        assert (r["speed_batch"], r["speed_input"], r["device"]) == ("2", "32", "cpu")
    # width 8 vs width 4: the wider model has more parameters.
    assert float(rows[0]["params_M"]) > float(rows[1]["params_M"])
    # The CSV scores are those of the run's own test pass.
    run_dir = result.folder / "runs" / "synth" / "narrow"
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert float(rows[1]["F1"]) == pytest.approx(test["per_class"]["changed"]["F1"], abs=1e-6)
    md = (result.folder / "results.md").read_text()
    assert md.count("| narrow |") == 2  # accuracy and efficiency tables
    assert "figures/errors_synth.png" in md and "figures/loss_curves.png" in md
    marker = json.loads((run_dir / "finished.json").read_text())
    assert len(marker["fingerprint"]) == 16 and len(marker["figure_samples"]) == 4
    assert sorted(p.stem for p in (run_dir / "figure").glob("*.png")) == sorted(marker["figure_samples"])


def test_figure_grid_has_samples_by_models(compare_exp):
    _, result = compare_exp
    samples = json.loads((result.folder / "figure_samples.json").read_text())["synth"]["samples"]
    assert len(samples) == 4 and len(set(samples)) == 4
    img = Image.open(result.folder / "figures" / "errors_synth.png")
    # 4 rows x (A, B, ground truth + 2 models) panels of 1.9 inches at 100 dpi, plus the title strip.
    assert img.size == (round(1.9 * 5 * 100), round((1.9 * 4 + 0.6) * 100))
    assert (result.folder / "figures" / "loss_curves.png").is_file()


def test_grid_geometry_and_missing_runs(exp_dataset):
    samples = load_figure_samples(exp_dataset, "test", ["test_0000", "test_0001", "test_0002"])
    preds = {"m1": {s.name: s.label for s in samples}, "m2": {}, "m3": {}}
    fig = comparison_figure(samples, preds)
    assert len(fig.axes) == 3 * 6
    assert fig.axes[0].get_subplotspec().get_geometry()[:2] == (3, 6)
    assert [ax.get_title() for ax in fig.axes[:6]] == ["A", "B", "ground truth", "m1", "m2", "m3"]
    assert "not run" in [t.get_text() for t in fig.axes[4].texts]  # m2 has no prediction


def test_rerun_skips_finished_runs(compare_exp):
    config, first = compare_exp
    markers = sorted((first.folder / "runs").rglob("finished.json"))
    before = {p: p.read_text() for p in markers}
    again = run_experiment(config, "compare")
    assert again.ran == [] and not again.failed
    assert {p: p.read_text() for p in markers} == before
    assert len(_rows(first.folder)) == 2


def test_interrupted_run_resumes_from_its_last_checkpoint(compare_exp):
    config, first = compare_exp
    run_dir = first.folder / "runs" / "synth" / "narrow"
    old = json.loads((run_dir / "finished.json").read_text())
    (run_dir / "finished.json").unlink()  # as if stopped after training, before the marker
    again = run_experiment(config, "compare", report=False)
    assert again.ran == ["synth/narrow"]
    assert "resuming from" in (run_dir / "train.log").read_text()
    new = json.loads((run_dir / "finished.json").read_text())
    assert new["test"]["confusion"] == old["test"]["confusion"]  # same weights: nothing retrained
    assert new["epochs"] == old["epochs"] == 1


def test_changed_recipe_is_an_error_unless_kept(compare_exp):
    config, _ = compare_exp
    with pytest.raises(
        ExperimentError, match=r"changed since they ran: synth/.*optim.lr: 0.001 -> 0.5.*--changed rerun"
    ):
        run_experiment(config, "compare", ["optim.lr=0.5"], report=False)
    kept = run_experiment(config, "compare", ["optim.lr=0.5"], report=False, changed="keep")
    assert kept.ran == []
    # Keys that do not change results (workers, devices, progress bar) do not count as a change.
    same = run_experiment(config, "compare", ["data.num_workers=1"], report=False)
    assert same.ran == []


def test_cli_lists_runs_and_reports_bad_configs(compare_exp, tmp_path, capsys):
    config, _ = compare_exp
    assert main(["experiment", "compare", str(config), "--list"]) == 0
    out = capsys.readouterr().out
    assert "synth/narrow" in out and "finished" in out and "2 run(s)" in out
    assert main(["experiment", "compare", str(config), "--report-only"]) == 0
    assert "report.html" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text() + "colour: red\n")
    assert main(["experiment", "compare", str(bad)]) == 2
    assert "unknown experiment key 'colour'" in capsys.readouterr().err
    assert main(["experiment", "ablate", str(config)]) == 2
    assert "needs 'ablation.groups'" in capsys.readouterr().err


def test_failed_run_is_reported_and_others_go_on(exp_dataset, tmp_path):
    models = [{"name": "tiny_change_net_test", "label": "broken", "options": {"colour": 1}}]
    config = write_experiment(tmp_path, exp_dataset, models=models)
    with pytest.raises(ExperimentError, match="1 run\\(s\\) failed: synth/broken"):
        run_experiment(config, "compare")
    folder = tmp_path / "out" / "exp"
    failed = json.loads((folder / "runs" / "synth" / "broken" / "failed.json").read_text())
    assert "model.options.colour" in failed["error"]
    rows = _rows(folder)
    assert [r["status"] for r in rows] == ["failed"] and rows[0]["F1"] == ""


def test_changed_runs_are_moved_aside_for_a_rerun(tmp_path):
    runs = plan_runs(
        load_experiment(write_experiment(tmp_path, tmp_path / "data", models=TWO_MODELS)), "compare"
    )
    old, same = runs
    write_json(old.run_dir / "finished.json", {"fingerprint": "0" * 16})
    write_json(same.run_dir / "finished.json", {"fingerprint": same.fingerprint})
    status = {r.key: run_status(r) for r in runs}
    assert status == {old.key: "changed", same.key: "finished"}
    _handle_changed(runs, status, "rerun")
    assert status == {old.key: "pending", same.key: "finished"}
    assert not old.run_dir.exists() and len(list(old.run_dir.parent.glob(f"{old.run}.stale-*"))) == 1
    assert same.run_dir.is_dir()
