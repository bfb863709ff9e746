"""CPU benchmark of the selective scan: reference backend against the naive per-token loop.

Times forward and forward+backward (autograd through each implementation) at the issue's shapes
(batch 2, D 192, L 4096, N 1 and 16), and measures peak memory, then prints a table and writes
``bench/results/scan_cpu.json`` (machine, torch version, command, every figure).

Timing: wall clock (``time.perf_counter``), best and median of ``--repeats`` runs of the reference after
one warm-up and of ``--naive-repeats`` runs of the naive loop, interleaved so that load from other
processes on a shared machine hits both alike; the speedup compares the best runs.

Peak memory: ``torch.profiler`` with ``profile_memory=True`` records every CPU allocation and free made
by torch during one call; the peak is the largest running sum of those, i.e. the most memory the call
held at once above what existed before it (its outputs and gradients included). tracemalloc cannot be
used: it only sees Python's allocator, not torch's. The ratio column divides that peak by the bytes of
the call's inputs plus outputs (forward: u, delta, A, B, C, D, delta_bias and y; forward+backward: those,
dy, and the gradients).

Usage::

    OMP_NUM_THREADS=2 PYTHONPATH=src python bench/scan_cpu.py             # the issue's shapes
    PYTHONPATH=src python bench/scan_cpu.py --length 512 --naive-repeats 1 --out /tmp/x.json  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from geomamba.ops import selective_scan
from geomamba.ops.selective_scan.naive import selective_scan_naive

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "scan_cpu.json"


def make_inputs(batch, dim, length, n, groups, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {
        "u": torch.randn(batch, dim, length, generator=gen),
        "delta": torch.randn(batch, dim, length, generator=gen) * 0.5 - 1.0,
        "A": -torch.rand(dim, n, generator=gen) * n - 0.5,
        "B": torch.randn(batch, groups, n, length, generator=gen),
        "C": torch.randn(batch, groups, n, length, generator=gen),
        "D": torch.ones(dim),
        "delta_bias": torch.rand(dim, generator=gen) * 0.1,
    }


def impl_fn(name):
    if name == "naive":
        return lambda **kw: selective_scan_naive(**kw)
    return lambda **kw: selective_scan(**kw, backend="ref")


def run_once(fn, inputs, backward):
    if not backward:
        with torch.no_grad():
            return [fn(**inputs)]
    leaves = {k: v.detach().requires_grad_() for k, v in inputs.items()}
    y = fn(**leaves)
    dy = torch.ones_like(y)
    y.backward(dy)
    return [y, dy, *(t.grad for t in leaves.values())]


def timed_pair(fns, inputs, backward, repeats):
    """Times of each function, runs interleaved (ref, naive, ref, naive, ...) so that a burst of load
    from other processes hits both alike; ``repeats[i]`` runs of ``fns[i]`` after one warm-up of the
    first (the reference). Returns ``[(best, median), ...]``."""
    run_once(fns[0], inputs, backward)
    times = [[] for _ in fns]
    for r in range(max(repeats)):
        for i, fn in enumerate(fns):
            if r < repeats[i]:
                t0 = time.perf_counter()
                run_once(fn, inputs, backward)
                times[i].append(time.perf_counter() - t0)
    return [(min(ts), statistics.median(ts)) for ts in times]


def peak_bytes(fn, inputs, backward):
    """Largest running sum of torch's CPU allocations minus frees during one call (see module doc)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        outs = run_once(fn, inputs, backward)
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    level = peak = 0
    for _, nbytes in events:
        level += nbytes
        peak = max(peak, level)
    io = sum(t.numel() * t.element_size() for t in (*inputs.values(), *outs))
    return peak, io


LOAD_AT_START = os.getloadavg() if hasattr(os, "getloadavg") else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--d-state", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--groups", type=int, default=1, help="G of B and C (default 1)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of the reference")
    parser.add_argument("--naive-repeats", type=int, default=3, help="timed runs of the naive loop")
    parser.add_argument("--no-memory", action="store_true", help="skip the profiler memory pass")
    parser.add_argument("--naive-memory", action="store_true", help="also profile the naive loop's memory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output file")
    args = parser.parse_args(argv)

    rows = []
    for n in args.d_state:
        inputs = make_inputs(args.batch, args.dim, args.length, n, args.groups)
        row = {
            "batch": args.batch,
            "dim": args.dim,
            "length": args.length,
            "d_state": n,
            "groups": args.groups,
        }
        impls = ("ref", "naive")
        for phase, backward in (("fwd", False), ("fwdbwd", True)):
            results = timed_pair(
                [impl_fn(i) for i in impls], inputs, backward, [args.repeats, args.naive_repeats]
            )
            for impl, (best, median) in zip(impls, results):
                row[f"{impl}_{phase}_s"] = best
                row[f"{impl}_{phase}_median_s"] = median
                print(f"  N={n} {impl:5s} {phase:6s} best {best:.4f} s  median {median:.4f} s", flush=True)
            for impl in impls:
                if not args.no_memory and (impl == "ref" or args.naive_memory):
                    peak, io = peak_bytes(impl_fn(impl), inputs, backward)
                    row[f"{impl}_{phase}_peak_bytes"] = peak
                    row[f"{impl}_{phase}_io_bytes"] = io
                    row[f"{impl}_{phase}_peak_over_io"] = peak / io
        for phase in ("fwd", "fwdbwd"):
            row[f"speedup_{phase}"] = row[f"naive_{phase}_s"] / row[f"ref_{phase}_s"]
        rows.append(row)

    header = (
        f"{'N':>3} {'phase':7} {'naive s':>9} {'ref s':>8} {'speedup':>8} {'ref peak MiB':>13} {'peak/io':>8}"
    )
    print(
        f"\nselective scan on CPU, batch {args.batch}, D {args.dim}, L {args.length}, G {args.groups}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(header)
    for row in rows:
        for phase in ("fwd", "fwdbwd"):
            peak = row.get(f"ref_{phase}_peak_bytes")
            mem = f"{peak / 2**20:13.1f} {row[f'ref_{phase}_peak_over_io']:8.2f}" if peak is not None else ""
            print(
                f"{row['d_state']:>3} {phase:7} {row[f'naive_{phase}_s']:9.3f} {row[f'ref_{phase}_s']:8.4f} "
                f"{row[f'speedup_{phase}']:7.1f}x {mem}"
            )

    report = {
        "benchmark": "selective scan, reference backend vs naive loop, CPU",
        "command": " ".join(
            [f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}", sys.executable, *sys.argv]
        ),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "loadavg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "timing": "wall clock, best (and median) of interleaved runs; naive loop: autograd for its backward",
        "loadavg_at_start": list(LOAD_AT_START) if LOAD_AT_START else None,
        "memory": "torch.profiler profile_memory: peak running sum of allocations during one call, "
        "compared with the bytes of the call's inputs + outputs (peak_over_io)",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
