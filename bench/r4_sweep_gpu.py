"""GPU sweep of round 4: the plain backward reading the forward's chunk-entry states (tiles, stages 1-3)
and the N = 16 forward kernels (state loop: associative tile or sequential per-thread recurrence).

Backward (bf16, G = 4, N = 1, D and delta_bias on, as ``bench/scan_gpu.py``): for each tile, the forward
stores its states every ``chunk`` positions (``states_every``) and the backward reads them; its time,
effective bandwidth (minimal bytes / time, % of the measured copy) and its largest relative gradient
error against the recomputing default backward. Also the forward with and without storing the states.
N = 16 forward: each variant's time and its relative error against the rows kernel (``state_loop=False``).
Compiles first in ``--jobs`` parallel processes (they fill Triton's cache), then times in this process.

    PYTHONPATH=src python bench/r4_sweep_gpu.py --out results.json [--jobs 14]
    PYTHONPATH=src TRITON_INTERPRET=1 python bench/r4_sweep_gpu.py --tiny   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json

import torch

from _sweep import bench, copy_gbs, header, precompile, rel_error, run_job, scan_inputs, ss2d_inputs
from geomamba.ops.triton import ScanConfig, selective_scan_bwd, selective_scan_fwd

DEV = "cuda" if torch.cuda.is_available() else "cpu"
S = ScanConfig
GROUPS = 4
# (tile or None = the table's default, partial dB/dC sums)
BWD_VARIANTS = [
    (None, None),
    (S(4, 64, 1, 2), None),
    (S(4, 64, 2, 3), None),
    (S(8, 64, 2, 3), None),
    (S(8, 64, 1, 3), None),
    (S(4, 128, 1, 3), None),
    (S(4, 128, 2, 3), None),
    (S(8, 32, 1, 3), None),
    (S(4, 32, 1, 3), None),
    (S(2, 64, 1, 3), None),
    (S(16, 64, 4, 3), None),
    (S(16, 64, 2, 3), None),
    (S(8, 64, 2, 3), True),
    (S(16, 64, 4, 3), True),
]
BWD_SHAPES = [("stage1", 16, 1024, 4096), ("stage2", 16, 2048, 1024), ("stage3", 16, 4096, 256)]
# N = 16 forward: chunk 0 = the sequential kernel (16-byte rows), else the associative state-loop tile
FWD16_VARIANTS = [
    S(16, 64, 4, 1),
    S(32, 32, 4, 1),
    S(8, 128, 4, 1),
    S(64, 16, 4, 1),
    S(16, 32, 2, 1),
    S(32, 64, 8, 1),
    S(16, 64, 4, 2),
    S(32, 32, 4, 2),
    S(32, 0, 1, 1),
    S(64, 0, 2, 1),
    S(128, 0, 4, 1),
    S(32, 0, 1, 2),
    S(64, 0, 2, 2),
    S(128, 0, 4, 2),
]
FWD16_SHAPES = [("stage1_n16", 16, 1024, 4096), ("stage3_n16", 16, 4096, 256)]
# --quick (second call): defaults of the first call's winners against a few neighbours
QUICK_FWD16 = [
    S(32, 32, 4, 2),
    S(32, 32, 4, 3),
    S(64, 32, 8, 2),
    S(16, 32, 2, 2),
    S(32, 16, 2, 2),
    S(64, 16, 4, 2),
    S(16, 64, 4, 3),
    S(64, 0, 2, 1),
]
QUICK_BWD = [(None, None)]
# SS2D backward at 32x32 (batch 16, d_inner 512, K 4, N 1): col_copy with these plain tiles, and gather
SS2D_32_TILES = [S(4, 64, 1, 3), S(2, 64, 1, 3), S(4, 128, 1, 3), S(8, 64, 1, 3), S(2, 128, 1, 3)]


def ss2d32_rows():
    from geomamba.ops.ss2d_scan import composed_ss2d_bwd, composed_ss2d_fwd
    from geomamba.ops.triton import SS2DOptions, ss2d_bwd, ss2d_fwd
    from geomamba.ops.triton.route import _triton_backend

    be, rows = _triton_backend(), []
    for name, batch, dm, h, w in [("32x32", 16, 512, 32, 32), ("64x64", 16, 256, 64, 64)]:
        ins, dy = ss2d_inputs(batch, dm, h, w)
        k = 4
        ref = composed_ss2d_bwd(be, dy, *ins, k)
        row = dict(shape=name)
        row["composed_fwd_ms"] = bench(lambda: composed_ss2d_fwd(be, *ins, k))  # noqa: B023
        row["composed_bwd_ms"] = bench(lambda: composed_ss2d_bwd(be, dy, *ins, k))  # noqa: B023
        row["fused_fwd_ms"] = bench(lambda: ss2d_fwd(*ins, k))  # noqa: B023
        for cfg in SS2D_32_TILES:
            tag = "x".join(map(str, cfg.__dict__.values()))
            opts = SS2DOptions(col_copy=True)
            got = ss2d_bwd(dy, *ins, k, config=cfg, options=opts)
            row[f"colcopy_{tag}_err"] = max(rel_error(a, b) for a, b in zip(got, ref, strict=True))
            row[f"colcopy_{tag}_ms"] = bench(lambda c=cfg, o=opts: ss2d_bwd(dy, *ins, k, config=c, options=o))  # noqa: B023
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def inputs(batch, dim, length, n=1, seed=0):
    return scan_inputs(batch, dim, length, n, GROUPS, seed=seed)


def bwd_with_states(args, dy, cfg, partial):
    every = cfg.chunk if cfg is not None else None  # None: the default backward's chunk
    _, _, st = selective_scan_fwd(*args, True, return_states=True, states_every=every)
    return st, lambda: selective_scan_bwd(dy, *args, True, None, config=cfg, partial_dbc=partial, states=st)


def fwd16(args, cfg):
    return selective_scan_fwd(*args, True, config=cfg, state_loop=True)


def _compile(job):
    kind, cfg, partial, dim, length = job
    if kind == "bwd":
        args, dy = inputs(1, dim, length)
        _, run = bwd_with_states(args, dy, cfg, partial)
        run()
    else:
        args, _ = inputs(1, dim, length, n=16)
        fwd16(args, cfg)


def _compile_job(job):
    return run_job(_compile, job)


def bwd_rows(shapes, variants, copy_gbs):
    rows = []
    for name, batch, dim, length in shapes:
        args, dy = inputs(batch, dim, length)
        ref = selective_scan_bwd(dy, *args, True, None)
        nbytes = (5 * batch * dim * length + 4 * batch * GROUPS * length) * 2
        base = dict(shape=name, tile="default_recompute")
        base["ms"] = bench(lambda a=args, d=dy: selective_scan_bwd(d, *a, True, None))
        base["fwd_ms"] = bench(lambda a=args: selective_scan_fwd(*a, True))
        base["fwd_states_ms"] = bench(lambda a=args: selective_scan_fwd(*a, True, return_states=True))
        base["pct_copy"] = 100 * nbytes / (base["ms"] * 1e-3) / 1e9 / copy_gbs
        rows.append(base)
        print(json.dumps(base), flush=True)
        for cfg, partial in variants:
            row = dict(shape=name, tile=None if cfg is None else list(cfg.__dict__.values()), partial=partial)
            try:
                st, run = bwd_with_states(args, dy, cfg, partial)
                got = run()
                row["max_rel_vs_recompute"] = max(
                    rel_error(a, b) for a, b in zip(got, ref, strict=True) if a is not None
                )
                row["ms"] = bench(run)
                row["pct_copy"] = 100 * nbytes / (row["ms"] * 1e-3) / 1e9 / copy_gbs
                del st
            except Exception as err:
                row["error"] = f"{type(err).__name__}: {err}"[:300]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def fwd16_rows(shapes, variants, copy_gbs):
    rows = []
    for name, batch, dim, length in shapes:
        args, _ = inputs(batch, dim, length, n=16)
        y_ref, last_ref = selective_scan_fwd(*args, True, state_loop=False)
        nbytes = (3 * batch * dim * length + 2 * batch * GROUPS * 16 * length) * 2
        base = dict(
            shape=name,
            tile="rows_default",
            ms=bench(lambda a=args: selective_scan_fwd(*a, True, state_loop=False)),
        )
        rows.append(base)
        print(json.dumps(base), flush=True)
        for cfg in variants:
            row = dict(shape=name, tile=list(cfg.__dict__.values()))
            try:
                y, last = fwd16(args, cfg)
                row["rel_y"], row["rel_last"] = rel_error(y, y_ref), rel_error(last, last_ref)
                row["ms"] = bench(lambda a=args, c=cfg: fwd16(a, c))
                row["pct_copy"] = 100 * nbytes / (row["ms"] * 1e-3) / 1e9 / copy_gbs
            except Exception as err:
                row["error"] = f"{type(err).__name__}: {err}"[:300]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--jobs", type=int, default=12)
    p.add_argument("--tiny", action="store_true", help="CPU interpreter smoke run")
    p.add_argument("--quick", action="store_true", help="the second call: defaults vs a few neighbours")
    args = p.parse_args(argv)
    bshapes, fshapes, bvars, fvars = BWD_SHAPES, FWD16_SHAPES, BWD_VARIANTS, FWD16_VARIANTS
    if args.quick:
        bvars, fvars = QUICK_BWD, QUICK_FWD16
    if args.tiny:
        bshapes, fshapes = [("tiny", 1, 8, 64)], [("tiny16", 1, 8, 32)]
        bvars, fvars = [(None, None), (S(4, 16, 1, 1), None)], [S(4, 16, 1, 1), S(4, 0, 1, 1)]
    jobs = [("bwd", c, m, d, L) for _, _, d, L in bshapes for c, m in bvars]
    jobs += [("fwd16", c, None, d, L) for _, _, d, L in fshapes for c in fvars]
    res = header(precompile(_compile_job, jobs, args.jobs))
    res["copy_gbs"] = copy_gbs(bench)
    res["fwd16"] = fwd16_rows(fshapes, fvars, res["copy_gbs"])
    res["bwd"] = bwd_rows(bshapes, bvars, res["copy_gbs"])
    res["ss2d"] = ss2d32_rows() if args.quick and DEV == "cuda" else []
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    print(f"copy {res['copy_gbs']:.0f} GB/s  {res['device']}  triton {res['triton']}")
    for r in res["fwd16"] + res["bwd"]:
        print(
            f"{r['shape']:11} {r['tile']!s:22} {r.get('partial')!s:5} {r.get('ms', float('nan')):8.3f} "
            f"{r.get('pct_copy', float('nan')):6.1f} "
            f"{r.get('max_rel_vs_recompute', r.get('rel_y', float('nan'))):8.1e} {r.get('error', '')}"
        )


if __name__ == "__main__":
    main()
