"""Helpers of the experiment-runner tests: a tiny recipe and experiment configs."""

from __future__ import annotations

from pathlib import Path

import yaml

from _engine_helpers import TINY_MODEL

# The shared recipe of the tests: one epoch of two steps on 32x32 crops, CPU.
RECIPE = {
    "model": {"name": TINY_MODEL},
    "loss": "ce",
    "data": {"crop_size": 32, "batch_size": 2, "eval_batch_size": 2, "num_workers": 0},
    "scheduler": {"name": "cosine"},
    "trainer": {
        "max_epochs": 1,
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
    },
    "eval": {"num_error_maps": 1, "pad_multiple": 8},
}
EFFICIENCY = {"input_size": 32, "batch_size": 2, "warmup": 1, "iters": 2}


def write_experiment(folder: Path, root: Path, name: str = "exp", **sections) -> Path:
    """Write ``recipe.yaml`` and ``<name>.yaml`` (an experiment over the dataset ``synth``) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(RECIPE), encoding="utf-8")
    exp = {
        "name": name,
        "output_dir": str(folder / "out"),
        "recipe": "recipe.yaml",
        "datasets": {"synth": {"root": str(root)}},
        "efficiency": EFFICIENCY,
        **sections,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False), encoding="utf-8")
    return path


TWO_MODELS = [TINY_MODEL, {"name": TINY_MODEL, "label": "narrow", "options": {"width": 4}}]
