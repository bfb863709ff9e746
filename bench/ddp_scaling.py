"""Multi-GPU scaling of training with DDP (issue 12): subtask_mamba at 256x256 on 1 and on N devices.

For each device count k of ``--devices`` (default: 1 and every visible GPU) a fresh process trains the
engine's own ``ChangeDetectionModule`` (the run config's model, loss and AdamW, Lightning ``Trainer``;
strategy ``ddp`` for k > 1, exactly what ``geomamba train ... trainer.devices=k trainer.strategy=ddp``
builds) for ``--warmup`` + ``--steps`` optimiser steps on in-memory synthetic pairs (``--batch`` pairs
per device: weak scaling, the global batch grows with k). Measured per configuration:

- pairs/s over the ``--steps`` timed steps after the warm-up (host clock, CUDA synchronised), and the
  mean step time;
- peak GPU memory per rank (``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``); on CPU the
  peak resident memory of each process;
- identical weights: after training every rank compares its parameters and buffers with rank 0's
  (broadcast), giving the largest absolute difference over ranks (0 = identical).

Scaling efficiency(k) = pairs/s(k) / (k x pairs/s(1)). Prints a table and writes
``bench/results/ddp_scaling_<gpu>.json`` (``_cpu`` with ``--device cpu``).

    PYTHONPATH=src python bench/ddp_scaling.py                      # 1 and all GPUs, subtask_mamba, 256x256
    PYTHONPATH=src python bench/ddp_scaling.py --devices 1 2 --steps 50 --batch 16
    PYTHONPATH=src python bench/ddp_scaling.py --batch 32 --compile-mode reduce-overhead   # CUDA graphs
    PYTHONPATH=src python bench/ddp_scaling.py --device cpu --model subtask_mamba_tiny --size 64 \\
        --batch 2 --warmup 1 --steps 3                             # CPU smoke run (gloo, 1 and 2 processes)

NVLink multicast stays off (``NCCL_NVLS_ENABLE=0`` and friends are set unless already set).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SRC = Path(__file__).resolve().parents[1] / "src"
# Never let NCCL/PyTorch/NVSHMEM use NVLink multicast (it can take a shared host's GPUs out of service).
_NO_MULTICAST = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}
_LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    p.add_argument("--devices", type=int, nargs="+", help="device counts to run (default: 1 and all GPUs)")
    p.add_argument("--model", default="subtask_mamba")
    p.add_argument("--size", type=int, default=256, help="tile side in pixels")
    p.add_argument("--batch", type=int, default=8, help="pairs per device and step")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps (Triton JIT, cuDNN autotuning)")
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--precision", default=None, help="default: bf16-mixed on CUDA, 32 on CPU")
    p.add_argument("--loss", default="ce")
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: 4 on CUDA, 0 on CPU)")
    p.add_argument("--sync-batchnorm", action="store_true", help="trainer.sync_batchnorm=true (CUDA only)")
    p.add_argument(
        "--compile-mode",
        default=None,
        help="compile the model (trainer.compile=true) with this torch.compile mode, e.g. reduce-overhead "
        "(CUDA graphs, as levircd); 'default' for torch.compile's default; inductor's layout optimisation "
        "off as in levircd. Off when not given",
    )
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend with --compile-mode")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per configuration")
    p.add_argument(
        "--out", type=Path, default=None, help="JSON path (default bench/results/ddp_scaling_<gpu>.json)"
    )
    # Internal: one configuration in this process (and the ranks Lightning starts from it).
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--num-devices", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    return p


# ------------------------------------------------------------------------------------------------ worker
def _worker(args: argparse.Namespace) -> int:
    import lightning.pytorch as pl
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset

    from geomamba.data.synthetic import make_scene
    from geomamba.engine.config import config_to_dict, parse_config
    from geomamba.engine.module import ChangeDetectionModule

    cuda = args.device == "cuda"
    k = args.num_devices
    total_steps = args.warmup + args.steps
    pl.seed_everything(0, verbose=False)
    cfg = parse_config(
        {
            "model": {"name": args.model},
            "loss": args.loss,
            "data": {"batch_size": args.batch, "mean": [0.5] * 3, "std": [0.25] * 3},
            "optim": {"name": "adamw", "lr": 1e-4},
            "scheduler": {"name": "none"},
            "trainer": {
                "compile": args.compile_mode is not None,
                "compile_mode": None if args.compile_mode in (None, "default") else args.compile_mode,
                "compile_backend": args.compile_backend,
                "compile_inductor": {"layout_optimization": False}
                if args.compile_backend == "inductor"
                else {},
            },
        }
    )
    module = ChangeDetectionModule(config_to_dict(cfg))

    class Pairs(Dataset):
        """A few synthetic scenes, repeated: loading costs next to nothing."""

        def __init__(self, length: int, pool: int = 8) -> None:
            rng = np.random.default_rng(0)
            scenes = [make_scene(rng, size=args.size) for _ in range(pool)]
            self.images = [(torch.from_numpy(np.stack([s.a, s.b])) - 0.5) / 0.25 for s in scenes]
            self.masks = [torch.from_numpy(s.change.astype(np.int64)) for s in scenes]
            self.length = length

        def __len__(self) -> int:
            return self.length

        def __getitem__(self, i: int) -> dict:
            j = i % len(self.images)
            return {"image": self.images[j], "mask": self.masks[j], "name": f"pair_{i}"}

    workers = args.workers if args.workers is not None else (4 if cuda else 0)
    loader = DataLoader(
        Pairs((total_steps + 1) * args.batch * k),
        batch_size=args.batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=cuda,
        persistent_workers=workers > 0,
    )

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    class Measure(pl.Callback):
        def __init__(self) -> None:
            self.t0 = self.t1 = None

        def on_train_start(self, trainer, pl_module) -> None:
            if cuda:
                torch.cuda.reset_peak_memory_stats()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == args.warmup and self.t0 is None:
                sync()
                self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == total_steps and self.t1 is None:
                sync()
                self.t1 = time.perf_counter()

        def on_train_end(self, trainer, pl_module) -> None:
            dev = pl_module.device
            tensors = [t.detach() for t in pl_module.parameters()]
            buffers = [b.detach() for b in pl_module.buffers()]
            diffs = []
            for group in (tensors, buffers):
                vec = (
                    torch.cat([t.double().flatten() for t in group]) if group else torch.zeros(1, device=dev)
                )
                ref = vec.clone()
                if torch.distributed.is_initialized():
                    torch.distributed.broadcast(ref, src=0)
                diffs.append(float((vec - ref).abs().max()))
            if cuda:
                mem = [
                    torch.cuda.max_memory_allocated(dev) / 2**30,
                    torch.cuda.max_memory_reserved(dev) / 2**30,
                ]
            else:
                mem = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, float("nan")]  # KiB -> GiB
            elapsed = (self.t1 - self.t0) if self.t0 is not None and self.t1 is not None else float("nan")
            mine = torch.tensor([*diffs, *mem, elapsed], dtype=torch.float64, device=dev)
            every = trainer.strategy.all_gather(mine).reshape(-1, mine.numel()).cpu().tolist()
            if trainer.is_global_zero:
                elapsed = max(r[4] for r in every)
                pairs = args.steps * args.batch * trainer.world_size
                result = {
                    "devices": trainer.world_size,
                    "strategy": type(trainer.strategy).__name__,
                    "backend": torch.distributed.get_backend()
                    if torch.distributed.is_initialized()
                    else None,
                    "global_batch": args.batch * trainer.world_size,
                    "timed_steps": args.steps,
                    "elapsed_s": elapsed,
                    "pairs_per_s": pairs / elapsed,
                    "step_ms": 1e3 * elapsed / args.steps,
                    "max_param_diff": max(r[0] for r in every),
                    "max_buffer_diff": max(r[1] for r in every),
                    "params_identical": all(r[0] == 0 for r in every),
                    "buffers_identical": all(r[1] == 0 for r in every),
                    ("peak_mem_gb" if cuda else "peak_rss_gb"): [r[2] for r in every],
                    "peak_reserved_gb": [r[3] for r in every] if cuda else None,
                    "sync_batchnorm_layers": sum(
                        isinstance(m, torch.nn.SyncBatchNorm) for m in pl_module.modules()
                    ),
                    "parameters_m": sum(p.numel() for p in pl_module.model.parameters()) / 1e6,
                }
                args.result.write_text(json.dumps(result), encoding="utf-8")

    trainer = pl.Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=k,
        strategy="ddp" if k > 1 else "auto",
        precision=args.precision,
        max_steps=total_steps,
        max_epochs=-1,
        sync_batchnorm=args.sync_batchnorm,
        benchmark=cuda,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[Measure()],
    )
    trainer.fit(module, train_dataloaders=loader)
    return 0


# ------------------------------------------------------------------------------------------------ driver
def _device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return platform.processor() or platform.machine() or "cpu"


def _run_config(args: argparse.Namespace, k: int, result: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--num-devices", str(k)]
    cmd += [
        "--device",
        args.device,
        "--model",
        args.model,
        "--size",
        str(args.size),
        "--batch",
        str(args.batch),
    ]
    cmd += ["--warmup", str(args.warmup), "--steps", str(args.steps), "--precision", args.precision]
    cmd += ["--loss", args.loss, "--result", str(result)]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    if args.sync_batchnorm:
        cmd.append("--sync-batchnorm")
    if args.compile_mode is not None:
        cmd += ["--compile-mode", args.compile_mode, "--compile-backend", args.compile_backend]
    env = {k_: v for k_, v in os.environ.items() if k_ not in _LAUNCH_VARS}
    env.update({k_: v for k_, v in _NO_MULTICAST.items() if k_ not in env})
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    if args.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // k))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"devices": k, "error": f"timed out after {args.timeout} s"}
    if proc.returncode != 0 or not result.is_file():
        tail = (proc.stderr or proc.stdout)[-3000:]
        print(tail, file=sys.stderr)
        return {"devices": k, "error": f"exit status {proc.returncode}", "stderr_tail": tail}
    out = json.loads(result.read_text(encoding="utf-8"))
    out["wall_s"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for key, value in _NO_MULTICAST.items():
        os.environ.setdefault(key, value)
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.precision is None:
        args.precision = "bf16-mixed" if args.device == "cuda" else "32"
    if args.worker:
        return _worker(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("ddp_scaling: --device cuda but no CUDA GPU is visible", file=sys.stderr)
        return 2
    available = torch.cuda.device_count() if args.device == "cuda" else (os.cpu_count() or 1)
    counts = args.devices or sorted({1, torch.cuda.device_count() if args.device == "cuda" else 2})
    if args.device == "cuda" and max(counts) > available:
        print(f"ddp_scaling: asked for {max(counts)} GPUs but {available} are visible", file=sys.stderr)
        return 2
    name = _device_name(args.device)
    import lightning

    import geomamba

    print(
        f"device {name} x{available}  torch {torch.__version__}  lightning {lightning.__version__}  "
        f"model {args.model} {args.size}x{args.size}  batch {args.batch}/device  precision {args.precision}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in counts:
            row = _run_config(args, k, Path(tmp) / f"result_{k}.json")
            rows.append(row)
            if "error" in row:
                print(f"{k} device(s): FAILED ({row['error']})")
    base = next((r for r in rows if r.get("devices") == 1 and "error" not in r), None)
    efficiency = {}
    for r in rows:
        if base is not None and "error" not in r:
            r["scaling_efficiency"] = r["pairs_per_s"] / (r["devices"] * base["pairs_per_s"])
            efficiency[str(r["devices"])] = r["scaling_efficiency"]
    mem_key = "peak_mem_gb" if args.device == "cuda" else "peak_rss_gb"
    print(
        f"{'devices':>7} {'pairs/s':>9} {'step ms':>8} {'efficiency':>10} {mem_key + ' per rank':>24} identical"
    )
    for r in rows:
        if "error" in r:
            continue
        mem = ", ".join(f"{m:.2f}" for m in r[mem_key])
        eff = r.get("scaling_efficiency")
        print(
            f"{r['devices']:>7} {r['pairs_per_s']:>9.2f} {r['step_ms']:>8.1f} "
            f"{'' if eff is None else f'{100 * eff:.1f}%':>10} {mem:>24} "
            f"params {r['params_identical']} buffers {r['buffers_identical']}"
        )
    slug = "cpu" if args.device == "cpu" else re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    out = args.out or RESULTS / f"ddp_scaling_{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "device": name,
        "device_type": args.device,
        "visible_devices": available,
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "geomamba": geomamba.__version__,
        "python": platform.python_version(),
        "command": "python bench/ddp_scaling.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": args.model,
        "size": args.size,
        "batch_per_device": args.batch,
        "precision": args.precision,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "sync_batchnorm": args.sync_batchnorm,
        "compile_mode": args.compile_mode,
        "compile_backend": args.compile_backend if args.compile_mode is not None else None,
        "nccl_nvls_enable": os.environ.get("NCCL_NVLS_ENABLE"),
        "configs": rows,
        "scaling_efficiency": efficiency,
    }
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {out}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
