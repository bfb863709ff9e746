"""Distributed training (DDP): a real 2-process run on CPU (gloo) and the pieces it relies on.

The 2-process run starts ``tests/engine/ddp_worker.py`` in a subprocess with Lightning's ``ddp`` strategy
(Lightning re-runs the script for rank 1), training the flagship ``subtask_mamba_tiny`` (selective scan,
SS2D, BatchNorm, dropout) for 2 steps on 32x32 synthetic tiles.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import geomamba
from _engine_helpers import tiny_overrides
from geomamba.data.errors import DataError
from geomamba.data.synthetic import generate_dataset
from geomamba.engine.config import ConfigError, load_config
from geomamba.engine.datamodule import ChangeDataModule
from geomamba.engine.distributed import launch_rank
from geomamba.engine.train import _trainer, evaluate_checkpoint
from geomamba.losses import build_loss
from geomamba.models import create_model

WORKER = Path(__file__).with_name("ddp_worker.py")
SIZE = 32
N_TRAIN, N_VAL, N_TEST = 6, 3, 3  # odd evaluation splits: 2 ranks get 2 + 1 images, never a padded duplicate
# 6 images / 2 ranks = 3 per rank < batch 4: one (partial) batch per rank and epoch, 2 epochs = 2 steps.
DDP_OVERRIDES = [
    "model.name=subtask_mamba_tiny",
    "eval.pad_multiple=32",
    "data.batch_size=4",
    "data.eval_batch_size=1",
    "trainer.strategy=ddp",
]
_LAUNCH_VARS = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "JSM_NAMESPACE_RANK",
)


def _clean_env() -> dict[str, str]:
    """This environment without launcher/cluster variables, with ``src`` importable and one thread."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _LAUNCH_VARS and not k.startswith(("SLURM_", "TORCHELASTIC_", "PL_"))
    }
    src = str(Path(geomamba.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = "1"
    if sys.platform.startswith("linux"):  # gloo between local processes: loopback, whatever the hostname
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def _run_worker(root: Path, out: Path, extra: list[str], timeout: float = 400) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(WORKER), str(root), str(out), *DDP_OVERRIDES, *extra]
    proc = subprocess.run(cmd, env=_clean_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"DDP run failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One 2-process CPU run; returns (data root, run dir, probe dir, finished process)."""
    base = tmp_path_factory.mktemp("ddp")
    root = generate_dataset(
        base / "ds", splits={"train": N_TRAIN, "val": N_VAL, "test": N_TEST}, size=SIZE, fmt="tif"
    )
    proc = _run_worker(root, base / "out", ["trainer.accelerator=cpu", "trainer.devices=2"])
    return root, base / "out" / "run", base / "out" / "probe", proc


def _ranks(probe: Path) -> list[dict]:
    return [torch.load(probe / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.mark.slow
def test_ddp_run_splits_the_training_data_between_two_gloo_processes(ddp_run):
    _, _, probe, _ = ddp_run
    r0, r1 = _ranks(probe)
    assert (r0["rank"], r1["rank"]) == (0, 1)
    assert r0["world_size"] == 2 and r0["strategy"] == "DDPStrategy" and r0["backend"] == "gloo"
    # 3 samples per rank < batch 4: the partial batch is kept (dropping it would leave 0 steps).
    assert r0["global_step"] == r1["global_step"] == 2
    everything = {f"train_{i:04d}" for i in range(N_TRAIN)}
    for epoch in (0, 1):
        a, b = r0["names"][epoch], r1["names"][epoch]
        assert len(a) == len(b) == N_TRAIN // 2
        assert set(a).isdisjoint(b) and set(a) | set(b) == everything
    # Each rank draws its own augmentation/dropout stream.
    assert not torch.equal(r0["rng"], r1["rng"])


@pytest.mark.slow
def test_ddp_ranks_end_with_identical_weights_equal_to_the_checkpoint(ddp_run):
    _, run, probe, _ = ddp_run
    r0, r1 = _ranks(probe)
    assert r0["params"].keys() == r1["params"].keys() and len(r0["params"]) > 50
    for name, p in r0["params"].items():
        assert torch.equal(p, r1["params"][name]), name
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    for name, p in r0["params"].items():
        assert torch.equal(ckpt["state_dict"][name], p), name


@pytest.mark.slow
def test_ddp_scores_equal_single_process_scores(ddp_run, tmp_path):
    root, run, probe, _ = ddp_run
    metrics = json.loads((run / "metrics.json").read_text())
    pixels = {"val": N_VAL * SIZE * SIZE, "test": N_TEST * SIZE * SIZE}
    # Last validation (the final weights, last.ckpt) and test (best checkpoint), each recomputed in one
    # process over the same images: the rank-summed confusion matrices must equal the single-process ones.
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    for split, ckpt in (("val", run / "checkpoints" / "last.ckpt"), ("test", best)):
        single = evaluate_checkpoint(ckpt, data_root=root, split=split, out_dir=tmp_path / split)
        ddp = metrics[split]
        assert sum(map(sum, ddp["confusion"])) == pixels[split]  # every image exactly once over the ranks
        assert ddp["confusion"] == single["confusion"], split
        assert ddp["per_class"]["changed"]["F1"] == pytest.approx(single["per_class"]["changed"]["F1"])
        assert ddp["OA"] == pytest.approx(single["OA"])
    # train() returns the same global scores on both ranks.
    results = [json.loads((probe / f"result{r}.json").read_text()) for r in (0, 1)]
    assert results[0]["test"]["confusion"] == results[1]["test"]["confusion"] == metrics["test"]["confusion"]
    assert Path(results[0]["best_checkpoint"]) == best


@pytest.mark.slow
def test_ddp_writes_one_set_of_outputs(ddp_run):
    _, run, _, proc = ddp_run
    top = sorted(p.name for p in run.iterdir())
    assert top == ["checkpoints", "config.yaml", "curves", "error_maps", "logs", "metrics.json", "train.log"]
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    # best, last and the previous resume point (kept as the fallback when last.ckpt is damaged)
    assert len(ckpts) == 3 and ckpts[1:] == ["last.ckpt", "last.prev.ckpt"] and ckpts[0].startswith("best-")
    for kind in ("tensorboard", "csv"):
        assert [p.name for p in (run / "logs" / kind).iterdir()] == ["version_0"]
    assert not [p for p in run.rglob(".*")]  # no temporary files left by concurrent writers
    assert len(list((run / "error_maps" / "val").glob("val_*.png"))) == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == [1, 2]
    log = (run / "train.log").read_text()
    assert log.count("checking dataset") == 1 and log.count("per-class results") == 3
    assert "distributed: 2 processes (1 node(s) x 2)" in log
    # The console too: rank 1 prints warnings only, so each table appears once.
    assert proc.stderr.count("per-class results") == 3


@pytest.mark.slow
def test_ddp_trains_the_compiled_flagship(tmp_path):
    """``trainer.compile`` under DDP (issue 11): the flagship's custom scan ops traced by Dynamo (with their
    fake implementations) and its graph split at DDP's bucket boundaries (Dynamo's DDPOptimizer), with the
    ``eager`` backend to keep CI fast (``aot_eager``, which also traces the backward, is covered in one
    process by test_acceleration.py and took 4-7 minutes here under DDP), gradients all-reduced by DDP's hooks; the compiled forward is used to the end (no eager fallback, no graph break) and both ranks
    end with identical parameters."""
    root = generate_dataset(tmp_path / "ds", splits={"train": 4, "val": 2, "test": 2}, size=SIZE, fmt="tif")
    # One training step, no evaluation (an eval-mode forward is one more compilation; the single-process
    # tests in test_acceleration.py cover it).
    extra = [
        "trainer.devices=2",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=0",
        "eval.test_after_fit=false",
    ]
    extra += ["trainer.accelerator=cpu", "trainer.compile=true", "trainer.compile_backend=eager"]
    _run_worker(root, tmp_path / "out", extra, timeout=900)
    r0, r1 = _ranks(tmp_path / "out" / "probe")
    assert r0["world_size"] == 2 and r0["global_step"] == r1["global_step"] == 1
    for r in (r0, r1):
        assert r["compile"] == {"failure": None, "graph_breaks": {}}, r["compile"]
    # Parameters only: without SyncBatchNorm each rank keeps the running statistics of its own last batch.
    assert r0["params"].keys() == r1["params"].keys() and len(r0["params"]) > 50
    for name, p in r0["params"].items():
        assert torch.equal(p, r1["params"][name]), name


def test_launch_rank_reads_the_launcher_environment(monkeypatch):
    for var in (*_LAUNCH_VARS, "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    assert launch_rank() == 0
    monkeypatch.setenv("SLURM_PROCID", "5")  # srun: one process per task
    assert launch_rank() == 5
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("LOCAL_RANK", "1")  # Lightning child in an interactive SLURM shell: not rank 0
    assert launch_rank() is None
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "1")  # Lightning launch on node 1
    assert launch_rank() is None
    monkeypatch.setenv("RANK", "0")  # torchrun's RANK wins
    assert launch_rank() == 0
    monkeypatch.setenv("RANK", "first")
    with pytest.raises(ValueError, match="RANK='first'"):
        launch_rank()


def test_unsupported_distributed_settings_are_config_errors(tiny_dataset, tmp_path):
    def trainer(*extra: str):
        cfg = load_config(None, tiny_overrides(tiny_dataset, tmp_path) + list(extra))
        return _trainer(cfg, tmp_path, callbacks=[], loggers=False)

    with pytest.raises(ConfigError, match=r"trainer\.sync_batchnorm: .*CUDA GPUs only.* 2 CPU processes"):
        trainer("trainer.devices=2", "trainer.strategy=ddp", "trainer.sync_batchnorm=true")
    with pytest.raises(ConfigError, match=r"trainer\.strategy=.ddp_spawn.: spawned/forked"):
        trainer("trainer.devices=2", "trainer.strategy=ddp_spawn")
    # One process: SyncBatchNorm is a no-op, accepted.
    assert trainer("trainer.sync_batchnorm=true").world_size == 1


def _fake_world(monkeypatch, size: int) -> None:
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: size)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda *a, **k: 0)


def test_training_loader_keeps_a_partial_batch_per_rank(tiny_dataset, tmp_path, monkeypatch):
    cfg = load_config(None, [*tiny_overrides(tiny_dataset, tmp_path), "data.batch_size=3"])
    dm = ChangeDataModule(cfg)
    assert dm.train_dataloader().drop_last  # one process: 4 images, batches of 3, drop the 1 left
    _fake_world(monkeypatch, 2)
    assert not dm.train_dataloader().drop_last  # 2 images per rank < 3: keep them


def test_evaluation_split_smaller_than_the_world_is_an_error(tiny_dataset, tmp_path, monkeypatch):
    cfg = load_config(None, tiny_overrides(tiny_dataset, tmp_path))
    dm = ChangeDataModule(cfg)
    _fake_world(monkeypatch, 3)
    with pytest.raises(
        DataError, match=r"val split 'val' of .* has 2 image\(s\) but the run uses 3 processes"
    ):
        dm.val_dataloader()


@pytest.mark.parametrize(
    ("name", "options", "size"),
    [
        ("subtask_mamba_tiny", {}, 32),
        ("subtask_mamba_tiny", {"deep_supervision": True}, 32),
        ("subtask_mamba_tiny", {"code": "124", "core": "separate"}, 32),
        ("subtask_mamba_tiny", {"code": "231", "core": "shared", "fadc_adakern": True}, 32),
        ("mamba_bcd_tiny", {}, 32),
    ],
)
def test_every_parameter_gets_a_gradient(name, options, size):
    """DDP (without find_unused_parameters) needs a gradient for every trainable parameter each step."""
    model = create_model(name, **options).train()
    out = model(torch.randn(2, 2, 3, size, size))
    build_loss("ce")(out, torch.randint(0, 2, (2, size, size))).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"{name} {options}: parameters without gradient: {unused[:5]}"


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_ddp_two_gpus_with_sync_batchnorm(tmp_path):
    root = generate_dataset(tmp_path / "ds", splits={"train": 4, "val": 2, "test": 2}, size=SIZE, fmt="tif")
    extra = ["trainer.accelerator=gpu", "trainer.devices=2", "trainer.sync_batchnorm=true"]
    _run_worker(root, tmp_path / "out", extra)
    r0, r1 = _ranks(tmp_path / "out" / "probe")
    assert r0["backend"] == "nccl" and r0["sync_batchnorm_layers"] > 0
    for group in ("params", "buffers"):
        for name, t in r0[group].items():
            assert torch.equal(t, r1[group][name]), f"{group} {name}"
