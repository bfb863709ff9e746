"""A two-variant ablation of the flagship's tiny variant, by numeric code and by version name."""

from __future__ import annotations

import csv

import yaml
from _experiment_helpers import write_experiment

from geomamba.experiments.runner import run_experiment


def test_two_variant_ablation(exp_dataset, tmp_path):
    # The full model is named in two groups (by code and by version name): it runs once.
    ablation = {
        "model": "subtask_mamba_tiny",
        "groups": {
            "encoder": ["0 0 0"],
            "decoder": ["en_sicnn_inmlp-de_ca_sa-di_so_fo_m", "0 2 0"],
        },
    }
    config = write_experiment(tmp_path, exp_dataset, name="abl", ablation=ablation)
    result = run_experiment(config, "ablate", ["efficiency.enabled=false"])
    assert not result.failed
    with (result.folder / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["code"], r["groups"]) for r in rows] == [
        ("en_sicnn_inmlp-de_ca_sa-di_so_fo_m", "0 0 0", "encoder;decoder"),
        ("en_sicnn_inmlp-de_ca-di_so_fo_m", "0 2 0", "decoder"),
    ]
    assert all(r["status"] == "finished" and r["model"] == "subtask_mamba_tiny" for r in rows)
    # The speed loops were switched off; parameters and GFLOPs are always there.
    assert all(r["infer_pairs_per_s"] == "" and float(r["GFLOPs"]) > 0 for r in rows)
    # Removing the spatial attention removes parameters.
    assert float(rows[1]["params_M"]) < float(rows[0]["params_M"])
    run_cfg = yaml.safe_load((result.folder / "runs" / "synth" / rows[1]["run"] / "config.yaml").read_text())
    assert run_cfg["model"]["options"]["decoder"] == "de_ca"
    md = (result.folder / "results.md").read_text()
    assert "| Version | Code | Groups |" in md and "encoder, decoder" in md
