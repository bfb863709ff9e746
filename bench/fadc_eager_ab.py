"""A/B of FADC's eager CUDA sampler inside the flagship's eager training step: the custom op
``tap_conv`` vs the composed ``dilated_tap_conv`` (autograd), timed in alternating turns (median of turns).

    PYTHONPATH=src python bench/fadc_eager_ab.py --batch 32 --turns 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _train_speed_jobs as jobs
import geomamba.layers.fadc as fadc
from geomamba.engine.config import load_config
from geomamba.ops.dilated_taps import dilated_tap_conv, tap_conv
from train_speed import device_info, slug, versions


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/levircd.yaml")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out-dir", default="bench/results")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    p = {"model": cfg.model.name, "size": args.size, "batch": args.batch, "kind": "train"}
    variants = {"op": tap_conv, "composed": dilated_tap_conv}
    steps = {}
    for name, fn in variants.items():
        fadc.tap_conv = fn
        steps[name] = jobs.build_train_step(cfg, p, device)[0]
    per_s: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.turns):
        for name, fn in variants.items():
            fadc.tap_conv = fn
            t = jobs.time_steps(steps[name], device, warmup=2, steps=args.steps, cap_s=120)
            per_s[name].append(round(args.batch / t["median_s"], 2))
            print(
                f"{name:9s} {per_s[name][-1]:8.2f} pairs/s (min step {t['min_s'] * 1e3:.1f} ms)", flush=True
            )
    fadc.tap_conv = tap_conv
    out = {
        "benchmark": "fadc_eager_ab",
        "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
        "device": device_info(device),
        "versions": versions(),
        "per_s": per_s,
        "median_per_s": {k: statistics.median(v) for k, v in per_s.items()},
    }
    path = Path(args.out_dir) / f"fadc_eager_ab_{slug(out['device'].get('name', 'cpu'))}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out["median_per_s"]), f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
