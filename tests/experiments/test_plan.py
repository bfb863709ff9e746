"""Experiment configs and run plans: recipe merging, names, codes, fingerprints, errors (no training)."""

from __future__ import annotations

import numpy as np
import pytest
from _experiment_helpers import TWO_MODELS, write_experiment

from _engine_helpers import TINY_MODEL
from geomamba.data.io import write_raster
from geomamba.engine.config import ConfigError
from geomamba.experiments.config import load_experiment, split_overrides
from geomamba.experiments.figures import select_figure_samples
from geomamba.experiments.plan import config_fingerprint, parse_variant, plan_runs


def _plan(tmp_path, kind="compare", cli=(), exp_over=(), **sections):
    config = write_experiment(tmp_path, tmp_path / "data", **sections)
    return plan_runs(load_experiment(config, list(exp_over)), kind, list(cli))


def test_variants_by_code_version_and_mapping():
    assert parse_variant("0 1 0", "k").version == "en_sicnn_inmlp-de-di_so_fo_m"
    assert parse_variant("020", "k").decoder == "de_ca"
    assert parse_variant("di_m", "k").version == "en_sicnn_inmlp-de_ca_sa-di_m"
    v = parse_variant({"code": "2 0 4", "core": "shared"}, "k")
    assert (v.encoder, v.difference, v.core, v.code) == ("en_incnn_inmlp", "di_m", "shared", "2 0 4")
    with pytest.raises(ConfigError, match="quoted strings"):
        parse_variant(10, "ablation.groups.decoder[1]")
    with pytest.raises(ConfigError, match=r"ablation.groups.x\[0\]: unknown decoder variant 'de_xx'"):
        parse_variant("de_xx", "ablation.groups.x[0]")
    with pytest.raises(ConfigError, match="contradicts"):
        parse_variant({"code": "0 1 0", "version": "de_ca"}, "k")


def test_compare_plan_merges_recipe_run_and_command_line(tmp_path):
    models = [*TWO_MODELS, {"name": "fc_ef", "overrides": ["optim.lr=0.01", "seed=7"]}]
    runs = _plan(
        tmp_path, models=models, cli=["optim.lr=0.002"], exp_over=["output_dir=" + str(tmp_path / "o")]
    )
    assert [r.key for r in runs] == ["synth/tiny_change_net_test", "synth/narrow", "synth/fc_ef"]
    narrow, fc = runs[1].config, runs[2].config
    assert narrow.model.name == TINY_MODEL and narrow.model.options == {"width": 4}
    # The command line has the last word; the run's other overrides stay.
    assert fc.optim.lr == 0.002 and fc.seed == 7 and fc.model.options == {}
    assert runs[2].run_dir == tmp_path / "o" / "exp" / "runs" / "synth" / "fc_ef"
    assert all(r.config.eval.test_after_fit and r.config.data.root == str(tmp_path / "data") for r in runs)
    # Options of the recipe's own model are inherited; another model starts from none.
    recipe_opts = _plan(tmp_path / "b", models=TWO_MODELS, exp_over=[])  # recipe model has no options
    assert recipe_opts[0].config.model.options == {}


def test_ablation_plan_deduplicates_and_inherits_recipe_options(tmp_path):
    ablation = {
        "model": TINY_MODEL + "_kwargs",
        "options": {"width": 3},
        "groups": {
            "decoder": ["0 0 0", "0 1 0"],
            "difference": ["0 0 0", "di_m", {"code": "004", "core": "shared"}],
        },
    }
    runs = _plan(tmp_path, "ablate", ablation=ablation)
    assert [(r.run, r.code, r.groups) for r in runs] == [
        ("en_sicnn_inmlp-de_ca_sa-di_so_fo_m", "0 0 0", ("decoder", "difference")),
        ("en_sicnn_inmlp-de-di_so_fo_m", "0 1 0", ("decoder",)),
        ("en_sicnn_inmlp-de_ca_sa-di_m", "0 0 4", ("difference",)),
        ("en_sicnn_inmlp-de_ca_sa-di_m-shared", "0 0 4", ("difference",)),
    ]
    opts = runs[1].config.model.options
    assert opts == {
        "width": 3,
        "encoder": "en_sicnn_inmlp",
        "decoder": "de",
        "difference": "di_so_fo_m",
        "core": "fused",
    }


def test_fingerprint_ignores_only_what_does_not_change_results(tmp_path):
    base = _plan(tmp_path, models=TWO_MODELS)[0]
    same = _plan(tmp_path, models=TWO_MODELS, cli=["data.num_workers=3", "trainer.enable_progress_bar=true"])[
        0
    ]
    other = _plan(tmp_path, models=TWO_MODELS, cli=["optim.lr=0.5"])[0]
    assert base.fingerprint == same.fingerprint == config_fingerprint(base.config)
    assert other.fingerprint != base.fingerprint


def test_bad_experiments_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="holds both 'models' and 'ablation'"):
        _plan(tmp_path, models=TWO_MODELS, ablation={"groups": {"d": ["0 0 0"]}})
    with pytest.raises(ConfigError, match="run labels must be unique; repeated: tiny_change_net_test"):
        _plan(tmp_path, models=[TINY_MODEL, TINY_MODEL])
    with pytest.raises(ConfigError, match=r"models: fc_siam_dif: unknown model 'fc_siam_dif'.*fc_siam_diff"):
        _plan(tmp_path, models=["fc_siam_dif"])
    with pytest.raises(ConfigError, match="a segmentation model"):
        _plan(tmp_path, models=["unet"])
    with pytest.raises(ConfigError, match="one device each; use --devices"):
        _plan(tmp_path, models=TWO_MODELS, cli=["trainer.devices=2"])
    with pytest.raises(ConfigError, match=r"run synth/narrow: unknown config key 'optim.lrr'"):
        _plan(tmp_path, models=[TWO_MODELS[1] | {"overrides": ["optim.lrr=1"]}])
    with pytest.raises(ConfigError, match="must be a plain folder name"):
        _plan(tmp_path, models=[{"name": TINY_MODEL, "label": "a/b"}])
    with pytest.raises(ConfigError, match=r"efficiency.iters: must be >= 1"):
        _plan(tmp_path, models=TWO_MODELS, exp_over=["efficiency.iters=0"])
    with pytest.raises(ConfigError, match=r"recipe: run config .*nope.yaml not found"):
        _plan(tmp_path, models=TWO_MODELS, exp_over=["recipe=nope.yaml"])


def test_command_line_overrides_are_routed():
    exp, recipe = split_overrides(["datasets.X.root=/d", "trainer.max_epochs=1", "devices=[0,1]", "seed=3"])
    assert exp == ["datasets.X.root=/d", "devices=[0,1]"] and recipe == ["trainer.max_epochs=1", "seed=3"]


def test_figure_samples_spread_over_the_amount_of_change(tmp_path):
    root = tmp_path / "ds"
    rng = np.random.default_rng(0)
    for i, frac in enumerate([0, 0.1, 0.2, 0.3, 0.4, 0.5, 0]):
        label = np.zeros((1, 10, 10), np.uint8)
        label.reshape(-1)[: int(frac * 100)] = 255
        for sub, arr in (
            ("A", rng.integers(0, 255, (3, 10, 10))),
            ("B", rng.integers(0, 255, (3, 10, 10))),
            ("label", label),
        ):
            write_raster(root / "test" / sub / f"s{i}.png", np.asarray(arr, np.uint8))
    # Changed images by fraction: s1 .. s5; two picks at evenly spaced ranks.
    assert select_figure_samples(root, "test", 2) == ["s2", "s4"]
    assert select_figure_samples(root, "test", 5) == ["s1", "s2", "s3", "s4", "s5"]
    # Fewer changed images than asked: unchanged ones by name fill up.
    assert select_figure_samples(root, "test", 7) == ["s1", "s2", "s3", "s4", "s5", "s0", "s6"]
    assert select_figure_samples(root, "test", 4, names=["s6"]) == ["s6"]
    with pytest.raises(Exception, match=r"figure.names: zz not in"):
        select_figure_samples(root, "test", 4, names=["zz"])
