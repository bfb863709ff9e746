"""Peak GPU memory of segmentation training (CMDBNet, low-memory recipe) at batch 4, 256x256 (issue 7: <= 6 GB).

Trains a segmentation config (default ``configs/potsdam.yaml``: ``cmdbnet`` with ``low_memory``,
``checkpoint_cnn``, ``checkpoint_mamba``, fp16 AMP, 4 accumulated batches) through the engine's
``SegmentationModule`` and a Lightning ``Trainer``, exactly as ``geomamba train`` does, on in-memory
synthetic 6-class scenes (no data files), for ``--warmup`` + ``--steps`` batches. The peak is measured over
the batches after the warm-up (``torch.cuda.reset_peak_memory_stats`` before them):

- ``peak_allocated_gb``: tensors (``torch.cuda.max_memory_allocated``);
- ``peak_reserved_gb``: held by PyTorch's caching allocator (``max_memory_reserved``): what the process
  needs from the GPU besides its CUDA context;
- ``overhead_gb``: device memory outside the caching allocator (CUDA context, cuDNN/cuBLAS kernels),
  ``total - free`` of ``torch.cuda.mem_get_info`` minus ``torch.cuda.memory_reserved`` after training
  (assumes no other process on the GPU);
- ``peak_total_gb = peak_reserved_gb + overhead_gb``: the figure to compare with a 6 GB card.

``--ablate`` also measures the recipe without gradient checkpointing, in fp32, with the default Mamba
depths, and with all three switches off, each in a fresh subprocess (an out-of-memory variant is reported,
not fatal). ``--device cpu`` runs the same training as a smoke check (memory: the process's peak RSS).

    PYTHONPATH=src python bench/seg_memory.py                     # CUDA, configs/potsdam.yaml, batch 4, 256
    PYTHONPATH=src python bench/seg_memory.py --ablate
    PYTHONPATH=src python bench/seg_memory.py --device cpu --size 64 --batch 2 --steps 1 --warmup 1
    PYTHONPATH=src python bench/seg_memory.py --set model.options.pretrained=resnet34.pth   # any override

Prints a table and writes ``bench/results/seg_memory_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
GIB = float(2**30)
VARIANTS = {
    "recipe": [],
    "no_checkpointing": ["model.options.checkpoint_cnn=false", "model.options.checkpoint_mamba=false"],
    "fp32": ["trainer.precision=32"],
    "default_depths": ["model.options.low_memory=false"],
    "all_off": [
        "model.options.checkpoint_cnn=false",
        "model.options.checkpoint_mamba=false",
        "model.options.low_memory=false",
        "trainer.precision=32",
    ],
}


class _Scenes(torch.utils.data.Dataset):
    """``length`` items cycling over a few synthetic scenes (images normalised, class ids), made in memory."""

    def __init__(self, length: int, size: int, channels: int, num_classes: int) -> None:
        from geomamba.data.synthetic_segmentation import make_segmentation_scene

        self.length = length
        n = min(length, 8)
        items = [make_segmentation_scene(np.random.default_rng(i), max(size, 32), channels) for i in range(n)]
        self.items = [
            (
                torch.from_numpy((img[:, :size, :size] - 0.45) / 0.2),
                torch.from_numpy(ids[:size, :size].astype(np.int64) % num_classes),
            )
            for img, ids in items
        ]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        image, mask = self.items[i % len(self.items)]
        return {"image": image, "mask": mask, "name": f"scene_{i}"}


def measure(args: argparse.Namespace, overrides: list[str]) -> dict:
    """Train ``warmup + steps`` batches of the config on ``args.device``; returns the measured figures."""
    import lightning.pytorch as pl

    from geomamba.engine.config import config_to_dict, load_config
    from geomamba.engine.segmentation import SegmentationModule

    cuda = args.device == "cuda"
    sizes = [f"data.batch_size={args.batch}", f"data.crop_size={args.size}"]
    cfg = load_config(args.config, [*args.set, *overrides, *sizes])
    if cfg.task != "segmentation":
        raise SystemExit(f"{args.config}: not a segmentation config (task: {cfg.task})")
    channels = len(cfg.data.bands) if cfg.data.bands else 3
    cfg.data.mean, cfg.data.std = [0.0] * channels, [1.0] * channels
    cfg.model.options.setdefault("num_classes", len(cfg.data.class_names))
    if channels != 3:
        cfg.model.options.setdefault("in_channels", channels)
    precision = cfg.trainer.precision
    if not cuda and precision in ("16-mixed", "16-true"):
        precision = "bf16-mixed"  # Lightning's CPU AMP is bfloat16
    module = SegmentationModule(config_to_dict(cfg))
    n_batches = args.warmup + args.steps
    data = _Scenes(args.batch * n_batches, args.size, channels, len(cfg.data.class_names))
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch, shuffle=True, drop_last=True)
    times: list[float] = []

    class Probe(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == args.warmup and cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if cuda:
                torch.cuda.synchronize()
            if batch_idx >= args.warmup:
                times.append(time.perf_counter() - self.t0)

    trainer = pl.Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        precision=precision,
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accumulate_grad_batches=cfg.trainer.accumulate_grad_batches,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Probe()],
    )
    trainer.fit(module, train_dataloaders=loader)
    out = {
        "model": cfg.model.name,
        "options": dict(cfg.model.options),
        "precision": precision,
        "accumulate_grad_batches": cfg.trainer.accumulate_grad_batches,
        "batch": args.batch,
        "size": args.size,
        "batches_measured": len(times),
        "params_m": round(sum(p.numel() for p in module.model.parameters()) / 1e6, 2),
        "sec_per_batch": round(float(np.median(times)), 4) if times else None,
    }
    if cuda:
        free, total = torch.cuda.mem_get_info()
        overhead = (total - free - torch.cuda.memory_reserved()) / GIB
        out.update(
            peak_allocated_gb=round(torch.cuda.max_memory_allocated() / GIB, 3),
            peak_reserved_gb=round(torch.cuda.max_memory_reserved() / GIB, 3),
            overhead_gb=round(overhead, 3),
        )
        out["peak_total_gb"] = round(out["peak_reserved_gb"] + out["overhead_gb"], 3)
        out["within_6gb"] = out["peak_total_gb"] <= 6.0
    else:
        out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 3)
    return out


def _run_variant(args: argparse.Namespace, name: str) -> dict:
    cmd = [sys.executable, __file__, "--variant", name, "--json-line", *_common_args(args)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    oom = "out of memory" in proc.stderr.lower()
    return {"variant": name, "error": "out of memory" if oom else " | ".join(tail)}


def _common_args(args: argparse.Namespace) -> list[str]:
    return [
        f"--config={args.config}",
        f"--device={args.device}",
        f"--batch={args.batch}",
        f"--size={args.size}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        *(f"--set={kv}" for kv in args.set),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "potsdam.yaml"), help="segmentation config")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=8, help="measured batches (after the warm-up)")
    p.add_argument(
        "--warmup", type=int, default=4, help="batches before the measurement (one accumulation cycle)"
    )
    p.add_argument("--ablate", action="store_true", help="also measure the recipe with switches turned off")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="JSON path (default bench/results/seg_memory_<device>.json)"
    )
    p.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--json-line", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu for a smoke check")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    if args.variant:  # one measurement, printed as a JSON line (child process of --ablate)
        res = {"variant": args.variant, **measure(args, VARIANTS[args.variant])}
        print(json.dumps(res))
        return 0
    names = list(VARIANTS) if args.ablate else ["recipe"]
    if args.ablate:
        results = [_run_variant(args, n) for n in names]
    else:
        results = [{"variant": "recipe", **measure(args, [])}]
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    mem = "peak_total_gb" if args.device == "cuda" else "peak_rss_gb"
    print(
        f"{'variant':18s} {'precision':10s} {'ckpt':5s} {'depths':7s} {'alloc GB':>9s} {mem:>13s} {'s/batch':>8s}"
    )
    for r in results:
        if "error" in r:
            print(f"{r['variant']:18s} {r['error']}")
            continue
        o = r["options"]
        ckpt = "yes" if o.get("checkpoint_cnn") and o.get("checkpoint_mamba") else "no"
        depths = "2242" if o.get("low_memory") else "2262"
        alloc = f"{r['peak_allocated_gb']:.3f}" if "peak_allocated_gb" in r else "-"
        print(
            f"{r['variant']:18s} {r['precision']:10s} {ckpt:5s} {depths:7s} {alloc:>9s} {r[mem]:>13.3f} "
            f"{r['sec_per_batch']:>8.3f}"
        )
    slug = "cpu" if args.device == "cpu" else re.sub(r"[^a-z0-9]+", "_", device.lower()).strip("_")
    path = args.out or RESULTS / f"seg_memory_{slug}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": "python bench/seg_memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": args.config,
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "results": results,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
