"""The shipped experiment configs plan the runs of the author's experiment plan (SPEC §2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from geomamba.experiments.config import load_experiment
from geomamba.experiments.plan import plan_runs

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "experiments"
COMPARED = [
    "fc_ef",
    "fc_siam_conc",
    "fc_siam_diff",
    "snunet_c16",
    "bit",
    "changeformer",
    "changer_ex",
    "changer_ex_globalm",
    "mamba_bcd",
    "subtask_mamba",
]


@pytest.mark.parametrize("name, dataset", [("levircd_compare", "LEVIR-CD"), ("whucd_compare", "WHU-CD")])
def test_comparisons(name, dataset):
    runs = plan_runs(load_experiment(CONFIGS / f"{name}.yaml"), "compare")
    assert [r.model for r in runs] == COMPARED and {r.dataset for r in runs} == {dataset}
    ours = runs[-1].config
    # The flagship keeps the recipe's options; a baseline starts from its own defaults.
    assert ours.model.options["depths"] == [2, 2, 10] and runs[0].config.model.options == {}
    assert all(r.config.trainer.precision == "bf16-mixed" and r.config.optim.lr == 1e-3 for r in runs)
    assert len({r.fingerprint for r in runs}) == len(runs)


def test_ablation_grid():
    runs = plan_runs(load_experiment(CONFIGS / "levircd_ablation.yaml"), "ablate")
    assert len(runs) == 10  # 3 + 4 + 5 variants, the full model shared by the three groups
    groups = {g: [r.code for r in runs if g in r.groups] for g in ("encoder", "decoder", "difference")}
    assert groups == {
        "encoder": ["0 0 0", "1 0 0", "2 0 0"],
        "decoder": ["0 0 0", "0 1 0", "0 2 0", "0 3 0"],
        "difference": ["0 0 0", "0 0 1", "0 0 2", "0 0 3", "0 0 4"],
    }
    names = {r.run for r in runs}
    assert {
        "en_sicnn_simlp-de_ca_sa-di_so_fo_m",
        "en_sicnn_inmlp-de_sa-di_so_fo_m",
        "en_sicnn_inmlp-de_ca_sa-di_so_fo",
    } <= names
    options = runs[5].config.model.options  # 0 3 0: spatial attention kept
    assert (options["decoder"], options["dims"]) == ("de_sa", [64, 128, 256])
