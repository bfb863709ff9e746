"""A/B of FADC's tap samplers inside the flagship's training step (issue 9): eager, or compiled with the
config's compile settings (``--compiled``), timed in alternating turns (median of turns).

Samplers (the model option ``fadc_sampler``, same values): ``taps`` (the tap sampler with its explicit
backward, a custom op under ``torch.compile``), ``composed`` (the same in PyTorch ops, autograd),
``deform`` (torchvision's ``deform_conv2d``). ``--profile`` adds each variant's kernel table (one step
under ``torch.profiler``, ``step_anatomy.profile_step``) to ``fadc_ab_<gpu>[_<tag>].txt``. ``--set``
overrides config values, e.g. ``model.options.depths=[1,1,1]`` for a quicker compile (the three FADC
layers are in the difference modules, whatever the depths).

    PYTHONPATH=src python bench/fadc_ab.py --batch 32 --turns 3                        # eager: taps, composed, deform
    PYTHONPATH=src python bench/fadc_ab.py --compiled --samplers taps,deform --profile
    # two compiles side by side, timed one at a time:
    for s in taps deform; do PYTHONPATH=src python bench/fadc_ab.py --compiled --samplers $s --tag $s \
        --lock /tmp/ab.lock --barrier /tmp/ab.barrier:2 & done; wait
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _train_speed_jobs as jobs
from compile_shapes import _counters, _locked
from geomamba.engine.config import load_config
from train_speed import result_header, slug, write_result


def _wait_for_peers(folder: str, parties: str, timeout_s: float = 900.0) -> None:
    """Side-by-side probes: mark this one compiled, then wait until ``parties`` probes have (so that no
    timing runs while another probe compiles on the same CPUs)."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    (path / str(os.getpid())).touch()
    start = time.monotonic()
    while len(list(path.iterdir())) < int(parties):
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(
                f"--barrier {folder}:{parties}: only {len(list(path.iterdir()))} probes arrived"
            )
        time.sleep(1.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/levircd.yaml")
    ap.add_argument("--set", action="append", default=[], help="config override (repeatable)")
    ap.add_argument("--samplers", default="taps,composed,deform", help="comma-separated fadc_sampler values")
    ap.add_argument(
        "--compiled", action="store_true", help="time the compiled steps (the config's compile mode)"
    )
    ap.add_argument("--profile", action="store_true", help="also profile one step of each variant (CUDA)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--tag", default="", help="suffix of the output files' names")
    ap.add_argument("--out-dir", default="bench/results")
    ap.add_argument("--lock", default=None, help="a file locked while timing (probes run side by side)")
    ap.add_argument(
        "--barrier",
        default=None,
        help="DIR:N: after compiling, wait until N probes have compiled (side by side)",
    )
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.set)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda":
        cfg.trainer.compile_mode = None  # CUDA graphs need CUDA
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    steps, texts, profiles = {}, [], {}
    for name in samplers:
        p = {"model": cfg.model.name, "size": args.size, "batch": args.batch, "kind": "train"}
        p["channels_last"] = cfg.trainer.channels_last
        p["options"] = {"fadc_sampler": name}
        steps[name] = jobs.build_train_step(cfg, p, device, compile_model=args.compiled)[0]
        steps[name]()  # compiles (--compiled) before the turns
        jobs.sync(device)
        if args.profile and device.type == "cuda":
            from step_anatomy import profile_step

            profiles[name], txt = profile_step(
                steps[name], device, f"train b{args.batch} fadc_sampler={name}"
            )
            texts.append(txt)
    if args.barrier:
        _wait_for_peers(*args.barrier.rsplit(":", 1))
    per_s: dict[str, list[float]] = {k: [] for k in samplers}
    for _ in range(args.turns):
        for name in samplers:
            with _locked(args.lock):
                t = jobs.time_steps(steps[name], device, warmup=2, steps=args.steps, cap_s=120)
            per_s[name].append(round(args.batch / t["median_s"], 2))
            print(
                f"{name:9s} {per_s[name][-1]:8.2f} pairs/s (min step {t['min_s'] * 1e3:.1f} ms)", flush=True
            )
    out = {
        **result_header("fadc_ab", device, argv),
        "compiled": args.compiled,
        "compile_mode": cfg.trainer.compile_mode if args.compiled else None,
        "overrides": args.set,
        "batch": args.batch,
        "per_s": per_s,
        "median_per_s": {k: statistics.median(v) for k, v in per_s.items()},
        "graph_counters": _counters(),  # inductor's (a skipped CUDA graph shows here)
        "profiles": {
            k: {key: v[key] for key in ("kernel_ms", "launches", "copy_ms")} for k, v in profiles.items()
        },
    }
    stem = f"fadc_ab_{slug(out['device'].get('name', 'cpu'))}" + (f"_{args.tag}" if args.tag else "")
    path = write_result(out, args.out_dir, stem)
    if texts:
        path.with_suffix(".txt").write_text("\n\n".join(texts) + "\n")
    print(json.dumps(out["median_per_s"]), f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
