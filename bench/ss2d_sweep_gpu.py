"""GPU sweep of the fused SS2D kernels' tiles and options at the flagship's small maps (16x16, 32x32).

For each phase (forward / backward), map, tile ``(bd, chunk, warps, stages)`` and ``SS2DOptions``
variant: the GPU time of one ``ss2d_fwd`` / ``ss2d_bwd`` call replayed from a CUDA graph
(``do_bench_cudagraph``: no host launch cost, as in the compiled training step's graphs), its relative
error against the composed path (reorders + plain scan + cross_merge; a wrong variant is reported, never
silently timed) and its effective bandwidth (minimal bytes / time) as % of the copy bandwidth. bf16,
batch 16, N = 1, K = 4, D and delta_bias on (as ``bench/scan_gpu.py``). Compiles first in ``--jobs``
worker processes (Triton's disk cache), then times in this process.

    PYTHONPATH=src python bench/ss2d_sweep_gpu.py --out results.json [--jobs 14] [--maps 16x16]
    PYTHONPATH=src TRITON_INTERPRET=1 python bench/ss2d_sweep_gpu.py --tiny   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json

import torch

from _sweep import bench as sweep_bench
from _sweep import copy_gbs, header, precompile, rel_error, run_job, ss2d_inputs
from geomamba.ops.triton import ScanConfig, SS2DOptions, ss2d_bwd, ss2d_fwd

DEV = "cuda" if torch.cuda.is_available() else "cpu"
S = ScanConfig
MAPS = {"16x16": (16, 1024, 16, 16), "32x32": (16, 512, 32, 32), "64x64": (16, 256, 64, 64)}
FWD_TILES = [None, S(1, 256, 1), S(1, 256, 2), S(2, 256, 2), S(2, 256, 4), S(4, 256, 4), S(4, 256, 8),
             S(8, 256, 8), S(2, 128, 2), S(4, 128, 4), S(4, 64, 2), S(8, 64, 4), S(2, 256, 4, 2),
             S(4, 128, 4, 2), S(2, 1024, 4), S(2, 1024, 8)]  # fmt: skip
BWD_TILES = [None, S(1, 128, 1), S(1, 256, 1), S(1, 256, 2), S(2, 256, 1), S(2, 256, 2), S(2, 256, 4),
             S(4, 64, 1), S(4, 128, 1), S(4, 128, 2), S(4, 256, 4), S(8, 64, 2), S(8, 128, 4),
             S(2, 128, 1, 2), S(2, 128, 1, 3), S(4, 64, 1, 3), S(4, 128, 2, 3)]  # fmt: skip
FWD_OPTS = {
    "t3": SS2DOptions(col_t3=True),
    "gather": SS2DOptions(),
    "t3_atomic": SS2DOptions(col_t3=True, seq_k=False),
}
BWD_OPTS = {
    "gather": SS2DOptions(),
    "gather_atomic": SS2DOptions(dbc_atomic=True),
    "t3": SS2DOptions(col_t3=True),
    "col_copy_atomic": SS2DOptions(col_copy=True, dbc_atomic=True),
}


def call(phase, ins, dy, cfg, opts):
    if phase == "fwd":
        return (ss2d_fwd(*ins, 4, config=cfg, options=opts),)
    return ss2d_bwd(dy, *ins, 4, config=cfg, options=opts)


def _compile(job):
    phase, mapname, cfg, _, opts = job
    _, dm, h, w = MAPS[mapname]
    ins, dy = ss2d_inputs(1, dm, h, w)
    call(phase, ins, dy, cfg, opts)


def _compile_job(job):
    return run_job(_compile, job)


def bench(fn):
    return sweep_bench(fn, rep=60, graphs=True)


def jobs_for(maps, phases):
    """``(phase, map, tile, options name, options)`` for every variant."""
    out = []
    for m in maps:
        for phase in phases:
            tiles, opts = (FWD_TILES, FWD_OPTS) if phase == "fwd" else (BWD_TILES, BWD_OPTS)
            out += [(phase, m, t, name, o) for name, o in opts.items() for t in tiles]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--jobs", type=int, default=14)
    p.add_argument("--maps", nargs="+", default=["16x16", "32x32"], choices=sorted(MAPS))
    p.add_argument("--phases", nargs="+", default=["fwd", "bwd"], choices=["fwd", "bwd"])
    p.add_argument("--tiny", action="store_true", help="CPU interpreter smoke run")
    args = p.parse_args(argv)
    if args.tiny:
        MAPS["tiny"] = (1, 4, 4, 8)
        FWD_TILES[:], BWD_TILES[:] = [None, S(2, 16, 1)], [None, S(2, 16, 1)]
        args.maps = ["tiny"]
    from geomamba.ops.ss2d_scan import composed_ss2d_bwd, composed_ss2d_fwd
    from geomamba.ops.triton.route import _triton_backend

    jobs = jobs_for(args.maps, args.phases)
    res = header(precompile(_compile_job, jobs, args.jobs), timing="do_bench_cudagraph median")
    res["copy_gbs"] = copy_gbs(bench)
    be, rows = _triton_backend(), []
    for m in args.maps:
        batch, dm, h, w = MAPS[m]
        ins, dy = ss2d_inputs(batch, dm, h, w)
        length, es = h * w, 2
        nbytes = {
            "fwd": (2 * batch * dm * length + batch * 4 * dm * length + 2 * batch * 4 * length) * es,
            "bwd": (3 * batch * dm * length + 2 * batch * 4 * dm * length + 4 * batch * 4 * length) * es,
        }
        for phase in args.phases:
            if phase == "fwd":
                ref = (composed_ss2d_fwd(be, *ins, 4),)
                comp = bench(lambda: composed_ss2d_fwd(be, *ins, 4))  # noqa: B023
            else:
                ref = composed_ss2d_bwd(be, dy, *ins, 4)
                comp = bench(lambda: composed_ss2d_bwd(be, dy, *ins, 4))  # noqa: B023
            rows.append(dict(map=m, phase=phase, variant="composed", ms=comp))
            print(json.dumps(rows[-1]), flush=True)
            for _, _, cfg, oname, opts in jobs_for([m], [phase]):
                row = dict(map=m, phase=phase, variant=oname)
                row["tile"] = None if cfg is None else [cfg.bd, cfg.chunk, cfg.num_warps, cfg.num_stages]
                try:
                    got = call(phase, ins, dy, cfg, opts)
                    row["max_rel_vs_composed"] = max(
                        rel_error(a, b) for a, b in zip(got, ref, strict=True) if a is not None
                    )
                    row["ms"] = bench(lambda c=cfg, o=opts, ph=phase: call(ph, ins, dy, c, o))  # noqa: B023
                    row["pct_copy"] = 100 * nbytes[phase] / (row["ms"] * 1e-3) / 1e9 / res["copy_gbs"]
                    row["vs_composed"] = comp / row["ms"]
                except Exception as err:
                    row["error"] = f"{type(err).__name__}: {err}"[:300]
                rows.append(row)
                print(json.dumps(row), flush=True)
    res["rows"] = rows
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    for m in args.maps:
        for phase in args.phases:
            ok = [r for r in rows if r["map"] == m and r["phase"] == phase and "ms" in r]
            ok = [r for r in ok if r["variant"] == "composed" or r.get("max_rel_vs_composed", 1) < 1e-2]
            best = sorted(ok, key=lambda r: r["ms"])[:5]
            print(f"{m} {phase}: " + "; ".join(f"{r['variant']} {r.get('tile')} {r['ms']:.3f}" for r in best))


if __name__ == "__main__":
    main()
