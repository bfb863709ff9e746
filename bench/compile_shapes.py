"""Compiled inference of the flagship when a second input shape is compiled in the same process.

``torch.compile`` caches graphs per code object, not per model instance: a second model of the same class
called with another batch size recompiles the same ``forward``, and with ``dynamic=None`` (automatic dynamic
shapes) the new graph has a symbolic batch size. Dynamo then tries the newest graph first, so the first
shape can end up running the dynamic graph. This probe times, in one process:

1. ``alone``: the flagship at batch ``--batch`` (compiled, the config's compile mode);
2. ``other``: a second instance at batch ``--other-batch`` (e.g. the sliding window's ``window_batch``);
3. ``after_other``: the first one again;

with ``--dynamic auto`` (torch.compile's default), ``static`` (``dynamic=False``: one static graph per
shape) or ``dynamic`` (``dynamic=True``: one graph with a symbolic batch size from the start);
``--other-batch 0`` skips phases 2 and 3. Prints the figures and writes ``compile_shapes_<gpu>_<dynamic>.json``; ``TORCH_LOGS=recompiles``
shows why each recompile happened.

    PYTHONPATH=src python bench/compile_shapes.py --dynamic auto
    PYTHONPATH=src python bench/compile_shapes.py --dynamic static
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _train_speed_jobs as jobs
from geomamba.engine.config import load_config
from train_speed import result_header, slug, write_result


def _counters() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {
        "unique_graphs": int(counters["stats"]["unique_graphs"]),
        "cudagraph_skips": int(counters["inductor"]["cudagraph_skips"]),
    }


@contextlib.contextmanager
def _locked(path: str | None):
    if path is None:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _host_ms(step, device: torch.device, n: int) -> float:
    """Host time per call without waiting for the GPU (median of ``n``): when it nears the GPU time per
    step, the step is bound by the CPU (launches, guards, CUDA-graph bookkeeping)."""
    jobs.sync(device)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    jobs.sync(device)
    return round(1e3 * statistics.median(times), 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/levircd.yaml")
    ap.add_argument(
        "--set", action="append", default=[], help="config override, e.g. trainer.compile_mode=none"
    )
    ap.add_argument("--dynamic", choices=("auto", "static", "dynamic"), default="auto")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--other-batch", type=int, default=100, help="0: time the first shape only")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--backend", default=None, help="torch.compile backend (default: the config's)")
    ap.add_argument("--mode", default=None, help="compile mode (default: the config's; 'none' for None)")
    ap.add_argument("--out-dir", default="bench/results")
    ap.add_argument("--tag", default="", help="suffix of the JSON's name")
    ap.add_argument("--lock", default=None, help="a file locked while timing (probes run side by side)")
    args = ap.parse_args(argv)

    cfg = load_config(args.config, args.set)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t = cfg.trainer
    if args.backend is not None:
        t.compile_backend = args.backend
    if args.mode is not None:
        t.compile_mode = None if args.mode == "none" else args.mode
    if device.type != "cuda":
        t.compile_mode = None  # CUDA graphs need CUDA
    dynamic = {"auto": None, "static": False, "dynamic": True}[args.dynamic]
    base = {
        "model": cfg.model.name,
        "size": args.size,
        "kind": "infer",
        "channels_last": t.channels_last,
        "dynamic": dynamic,
    }
    record: dict = {
        "dynamic": args.dynamic,
        "mode": t.compile_mode,
        "backend": t.compile_backend,
        "inductor": t.compile_inductor,
        "overrides": args.set,
        "phases": {},
    }

    def phase(name: str, step, batch: int) -> None:
        t0 = time.perf_counter()
        step()  # compiles (outside the lock: two probes may compile side by side)
        jobs.sync(device)
        with _locked(args.lock):
            timing = jobs.time_steps(step, device, warmup=2, steps=args.steps, cap_s=600)
            timing["host_ms"] = _host_ms(step, device, args.steps)
        per_s = round(batch / timing["median_s"], 1)
        record["phases"][name] = {
            "batch": batch,
            "per_s": per_s,
            **timing,
            "s": round(time.perf_counter() - t0, 1),
            **_counters(),
        }
        print(
            f"{name:12s} batch {batch:4d}: {per_s:8.1f} pairs/s, GPU {1e3 * timing['median_s']:.1f} ms, "
            f"host {timing['host_ms']} ms per step  {_counters()}",
            flush=True,
        )

    def build(batch: int):
        return jobs.build_infer_step(cfg, {**base, "batch": batch}, device, compile_model=True)[0]

    first = build(args.batch)
    phase("alone", first, args.batch)
    if args.other_batch:
        phase("other", build(args.other_batch), args.other_batch)
        phase("after_other", first, args.batch)

    out = {**result_header("compile_shapes", device, argv), **record}
    tag = f"_{args.tag}" if args.tag else ""
    name = slug(out["device"].get("name", "cpu"))
    path = write_result(out, args.out_dir, f"compile_shapes_{name}_{args.dynamic}{tag}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
