"""The segmentation task: config defaults, `geomamba train/test` end to end on synthetic scenes with the
low-memory switches, TensorBoard logs, checkpoints, and checkpointed gradients through the engine's loss."""

from __future__ import annotations

import json

import pytest
import torch

from geomamba.cli.main import main
from geomamba.data.synthetic_segmentation import generate_segmentation_dataset
from geomamba.engine.config import ConfigError, config_keys, config_to_dict, load_config, parse_config
from geomamba.engine.module import load_module
from geomamba.engine.tasks import TASKS, get_task


def seg_overrides(root, out, name: str = "seg") -> list[str]:
    """A tiny segmentation run: cmdbnet_tiny on 48x48 synthetic tiles, 32x32 crops, a few CPU steps."""
    return [
        "task=segmentation",
        f"data.root={root}",
        f"output_dir={out}",
        f"name={name}",
        "model.name=cmdbnet_tiny",
        "data.segmentation.encoding=rgb",
        "data.crop_size=32",
        "data.batch_size=2",
        "data.eval_batch_size=2",
        "data.num_workers=0",
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.enable_progress_bar=false",
        "trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=1",
        "eval.num_error_maps=2",
        "eval.pad_multiple=32",
        "scheduler.name=cosine",
    ]


@pytest.fixture(scope="module")
def seg_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg") / "ds"
    return generate_segmentation_dataset(
        root, splits={"train": 4, "val": 2, "test": 2}, size=48, labels="rgb"
    )


def test_task_defaults_and_checks():
    cfg = load_config(None, ["task=segmentation", "data.segmentation.encoding=rgb"])
    assert cfg.data.segmentation.palette == "isprs" and cfg.data.class_names[0] == "impervious_surface"
    assert cfg.eval.monitor == "mIoU" and cfg.loss == {"name": "ce", "boundary_weight": 0.3}
    cfg = load_config(None, ["task=segmentation", "data.segmentation.palette=isprs", "loss=ce_lovasz"])
    assert cfg.loss == {"name": "ce_lovasz", "boundary_weight": 0.3}
    cfg = load_config(
        None, ["task=segmentation", "data.segmentation.palette=isprs", "loss.boundary_weight=0.5"]
    )
    assert cfg.loss["boundary_weight"] == 0.5
    assert parse_config(config_to_dict(cfg)) == cfg  # resolved configs parse to themselves
    ok = ["task=segmentation", "data.class_names=[a,b,c]", "data.ignore_value=0", "eval.monitor=BIoU_b"]
    assert load_config(None, ok).eval.monitor == "BIoU_b"
    change = load_config(None, [])
    assert change.task == "change" and change.eval.monitor == "F1_changed" and change.loss == "ce"
    assert {"task", "data.segmentation.encoding", "eval.boundary_width"} <= {k for k, _, _ in config_keys()}
    assert get_task("segmentation") is TASKS["segmentation"]
    with pytest.raises(KeyError, match="unknown task 'detection'; valid tasks: change, segmentation"):
        get_task("detection")


SEG3 = ["task=segmentation", "data.class_names=[a,b,c]"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=detection"], "task: 'detection' is not one of change, segmentation, classification"),
        (["eval.monitor=BIoU"], "eval.monitor: 'BIoU' is not a score"),  # change detection has no BIoU
        (["task=segmentation"], "data.class_names: set the class names"),
        ([*SEG3, "data.segmentation.encoding=rgb"], "RGB-coded labels need a palette"),
        ([*SEG3, "data.segmentation.palette=isprs"], "palette 'isprs' has 6 colours but 3 classes"),
        ([*SEG3, "data.segmentation.palette=[[0,0,0],[1,1,1]]"], "2 colours for 3 classes"),
        ([*SEG3, "data.segmentation.palette=[[0,0,0],[1,1,1],[1,2,300]]"], "values 0..255, got [1, 2, 300]"),
        ([*SEG3, "data.augment.date_swap=0.5"], "date_swap: applies to change detection only"),
        ([*SEG3, "eval.monitor=F1_changed"], "eval.monitor: 'F1_changed' is not a score"),
        ([*SEG3, "data.segmentation.encoding=hsv"], "data.segmentation.encoding: 'hsv' is not one of"),
    ],
)
def test_task_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert message in str(info.value)


def test_shipped_segmentation_recipes():
    from pathlib import Path

    configs = Path(__file__).resolve().parents[2] / "configs"
    for name, classes, encoding in (("potsdam", 6, "rgb"), ("vaihingen", 6, "rgb"), ("loveda", 7, "ids")):
        cfg = load_config(configs / f"{name}.yaml")
        assert (
            cfg.task == "segmentation"
            and cfg.model.name == "cmdbnet"
            and len(cfg.data.class_names) == classes
        )
        assert cfg.model.options == {"low_memory": True, "checkpoint_cnn": True, "checkpoint_mamba": True}
        assert (cfg.trainer.precision, cfg.trainer.accumulate_grad_batches, cfg.data.batch_size) == (
            "16-mixed",
            4,
            4,
        )
        assert cfg.data.segmentation.encoding == encoding and cfg.loss["boundary_weight"] == 0.3
    assert load_config(configs / "loveda.yaml").data.segmentation.reduce_zero_label
    assert load_config(configs / "vaihingen.yaml").data.segmentation.image_suffix == ""


def test_train_and_test_commands_on_synthetic_scenes(seg_dataset, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    over = [
        *seg_overrides(seg_dataset, tmp_path),
        # the low-memory switches: mixed precision, accumulation, gradient checkpointing of both branches
        "trainer.precision=bf16-mixed",
        "trainer.accumulate_grad_batches=2",
        "model.options.checkpoint_cnn=true",
        "model.options.checkpoint_mamba=true",
    ]
    (tmp_path / "seg.yaml").write_text("name: seg\n")
    assert main(["train", str(tmp_path / "seg.yaml"), *over]) == 0
    out = capsys.readouterr().out
    assert "best validation: epoch" in out and ", mIoU " in out and "test: mIoU " in out and "BIoU" in out
    run = tmp_path / "seg"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["monitor"] == "mIoU" and [h["step"] for h in metrics["history"]] == [1, 2]
    assert {"mIoU", "OA", "mF1", "BIoU", "IoU_building", "BIoU_car"} <= set(metrics["best"])
    assert set(metrics["test"]["per_class"]["tree"]) >= {"IoU", "F1", "BIoU"}
    assert metrics["test"]["boundary_width"] == 3 and len(metrics["test"]["confusion"]) == 6
    assert (run / "error_maps" / "val" / "error_maps.png").is_file()
    assert len(list((run / "error_maps" / "test").glob("test_*.png"))) == 2
    events = EventAccumulator(str(next((run / "logs" / "tensorboard").glob("version_*")))).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"lr", "train/loss", "train/loss_ce", "train/loss_aux0", "train/loss_boundary"} <= tags
    assert {"val/mIoU", "val/BIoU", "val/IoU_car", "val/loss"} <= tags
    assert not any(t.startswith("gpu/") for t in tags)  # GPU memory is logged on CUDA only
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["geomamba"]["task"] == "segmentation" and ckpt["geomamba"]["config"]["model"]["options"] == {
        "checkpoint_cnn": True,
        "checkpoint_mamba": True,
        "num_classes": 6,
    }
    module = load_module(run / "checkpoints" / "last.ckpt")
    assert type(module).__name__ == "SegmentationModule" and module.cfg.data.mean is not None
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    assert main(["test", str(best), "--split", "test"]) == 0
    assert capsys.readouterr().out.startswith("mIoU ")
    again = json.loads((run / "test_test" / "metrics.json").read_text())["test"]
    assert again["confusion"] == metrics["test"]["confusion"] and again["BIoU"] == metrics["test"]["BIoU"]
    image = seg_dataset / "test" / "images" / "test_0000.png"
    assert (
        main(["predict", str(best), "--a", str(image), "--b", str(image), "--out", str(tmp_path / "p.tif")])
        == 2
    )
    assert "a segmentation checkpoint; `geomamba predict` maps image pairs" in capsys.readouterr().err


def test_checkpointing_switches_give_the_same_loss_and_gradients(seg_dataset):
    from geomamba.engine.segmentation import SegmentationModule

    cfg = load_config(None, seg_overrides(seg_dataset, "runs"))
    plain = SegmentationModule(config_to_dict(cfg))
    cfg.model.options.update(checkpoint_cnn=True, checkpoint_mamba=True)
    ckpt = SegmentationModule(config_to_dict(cfg))
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    y = torch.randint(0, 6, (2, 32, 32))
    losses, grads = [], []
    for module in (plain, ckpt):
        module.train()
        torch.manual_seed(5)
        loss = module.loss_fn(module.model(x), y)
        loss.backward()
        assert set(module.loss_fn.last_components) == {"ce", "aux0", "aux1", "boundary"}
        losses.append(loss.detach())
        grads.append({n: p.grad for n, p in module.model.named_parameters()})
    torch.testing.assert_close(losses[0], losses[1])
    for name, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][name], msg=name)


def test_gpu_memory_stats():
    from geomamba.engine.callbacks import gpu_memory_stats

    assert gpu_memory_stats("cpu") == {}


@pytest.mark.gpu
def test_gpu_memory_stats_on_cuda():
    from geomamba.engine.callbacks import gpu_memory_stats

    x = torch.zeros(64, 2**20, device="cuda")  # 256 MiB
    stats = gpu_memory_stats("cuda")
    assert set(stats) == {"gpu/mem_allocated_gb", "gpu/mem_peak_gb", "gpu/mem_reserved_gb"}
    assert (
        stats["gpu/mem_peak_gb"] >= stats["gpu/mem_allocated_gb"] >= 0.25
        and stats["gpu/mem_reserved_gb"] >= 0.25
    )
    del x
