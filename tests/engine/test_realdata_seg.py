"""Segmentation on the real samples of ../shared/data/seg (class-id labels, not RGB): two training steps
of cmdbnet_tiny on each of Potsdam, Vaihingen and LoveDA, validated and tested."""

from __future__ import annotations

import json

import pytest

from geomamba.engine.config import load_config
from geomamba.engine.train import train

CASES = {
    # name: (class-id labels, reduce_zero_label, display palette)
    "potsdam": (6, False, "isprs"),
    "vaihingen": (6, False, "isprs"),
    "loveda": (7, True, "loveda"),
}


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(CASES))
def test_two_training_steps_on_real_tiles(shared_data, tmp_path, name):
    classes, reduce_zero, palette = CASES[name]
    root = shared_data / "seg" / name  # images/ and labels/ directly: one split used for all
    over = [
        "task=segmentation",
        f"data.root={root}",
        f"output_dir={tmp_path}",
        f"name={name}",
        "model.name=cmdbnet_tiny",
        f"data.segmentation.palette={palette}",
        f"data.segmentation.reduce_zero_label={str(reduce_zero).lower()}",
        "data.segmentation.eval_tile=128",
        "data.crop_size=64",
        "data.crops_per_image=4",
        "data.batch_size=2",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.num_sanity_val_steps=0",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "eval.num_error_maps=1",
    ]
    result = train(load_config(None, over), resume=False)
    assert result.last_checkpoint.is_file() and result.test_scores is not None
    cfg = load_config(result.run_dir / "config.yaml")
    assert cfg.model.options["num_classes"] == classes and len(cfg.data.class_names) == classes
    assert len(cfg.data.mean) == 3 and 20 < cfg.data.mean[0] < 230  # statistics of real RGB tiles
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["history"][-1]["step"] == 2 and "BIoU" in metrics["test"]
    assert sum(metrics["test"]["support"].values()) > 0
