"""GPU sweep of the plain-scan BACKWARD tiles (round 3): which tile, warps and pipelining depth, and
whether dB/dC go through per-block partial sums or atomics, at the flagship's three stages.

For each backward tile ``(bd, chunk, warps, stages)`` and dB/dC mode: the median time of
``selective_scan_bwd`` (bf16, G = 4, N = 1, D and delta_bias on, as ``bench/scan_gpu.py``), its relative
error against the table's default tile (a wrong variant is reported, never silently timed), its
effective bandwidth (minimal bytes / time) as % of the measured copy bandwidth, and the time of the
partial-sum reduction alone (``dBp.sum(2)`` for dB and dC) at that tile's block count. Compiles first in
``--jobs`` parallel processes (they fill Triton's on-disk cache), then times in this process.

    PYTHONPATH=src python bench/bwd_sweep_gpu.py --out results.json [--jobs 12]
    PYTHONPATH=src TRITON_INTERPRET=1 python bench/bwd_sweep_gpu.py --tiny   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json

import torch

from _sweep import bench, copy_gbs, header, precompile, rel_error, run_job, scan_inputs, ss2d_inputs
from geomamba.ops.triton import ScanConfig, SS2DOptions, selective_scan_bwd, ss2d_bwd

DEV = "cuda" if torch.cuda.is_available() else "cpu"
S = ScanConfig
# (bd, chunk, warps, stages); None = the table's default tile
TILES = [
    None,
    S(2, 128, 1, 2),
    S(2, 128, 1, 4),
    S(1, 128, 1, 3),
    S(1, 256, 1, 3),
    S(2, 256, 1, 3),
    S(2, 64, 1, 3),
    S(4, 64, 1, 3),
    S(4, 64, 1, 4),
    S(4, 128, 1, 3),
    S(4, 32, 1, 3),
    S(8, 32, 1, 3),
    S(8, 64, 2, 3),
    S(16, 64, 4, 3),
    S(4, 128, 2, 3),
]
# (name, batch, D, L): stage 1-3 of the flagship at batch 16, 256x256 input (D = 4 x d_inner)
SHAPES = [("stage1", 16, 1024, 4096), ("stage2", 16, 2048, 1024), ("stage3", 16, 4096, 256)]
GROUPS = 4


def inputs(batch, dim, length, dtype=torch.bfloat16, seed=0):
    return scan_inputs(batch, dim, length, 1, GROUPS, dtype, seed)


def run_bwd(args, dy, cfg, partial):
    return selective_scan_bwd(dy, *args, True, None, config=cfg, partial_dbc=partial)


def _compile(job):
    cfg, partial, dim, length = job
    args, dy = inputs(1, dim, length)
    run_bwd(args, dy, cfg, partial)


def _compile_job(job):
    return run_job(_compile, job)


# SS2D backward at the flagship maps (name, batch, d_inner, H, W): composed vs fused variants
SS2D_SHAPES = [("64x64", 16, 256, 64, 64), ("32x32", 16, 512, 32, 32), ("16x16", 16, 1024, 16, 16)]
SS2D_VARIANTS = {
    "gather": (None, SS2DOptions()),
    "col_copy": (None, SS2DOptions(col_copy=True)),
    "col_copy_s3": (S(2, 128, 1, 3), SS2DOptions(col_copy=True)),
    "col_copy_s2": (S(2, 128, 1, 2), SS2DOptions(col_copy=True)),
    "col_copy_4x64": (S(4, 64, 1, 3), SS2DOptions(col_copy=True)),
}


def ss2d_rows():
    from geomamba.ops.ss2d_scan import composed_ss2d_bwd
    from geomamba.ops.triton.route import _triton_backend

    be, out = _triton_backend(), []
    for name, batch, dm, h, w in SS2D_SHAPES:
        ins, dy = ss2d_inputs(batch, dm, h, w)
        k = 4
        ref = composed_ss2d_bwd(be, dy, *ins, k)
        row = dict(shape=name, composed_bwd_ms=bench(lambda: composed_ss2d_bwd(be, dy, *ins, k)))  # noqa: B023
        for vname, (cfg, opts) in SS2D_VARIANTS.items():
            try:
                got = ss2d_bwd(dy, *ins, k, config=cfg, options=opts)
                row[vname + "_err"] = max(rel_error(a, b) for a, b in zip(got, ref, strict=True))
                row[vname + "_ms"] = bench(
                    lambda cfg=cfg, opts=opts: ss2d_bwd(dy, *ins, k, config=cfg, options=opts)  # noqa: B023
                )
            except Exception as err:
                row[vname + "_error"] = f"{type(err).__name__}: {err}"[:300]
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--jobs", type=int, default=12)
    p.add_argument("--tiny", action="store_true", help="CPU interpreter smoke run")
    args = p.parse_args(argv)
    shapes, tiles = SHAPES, TILES
    if args.tiny:
        shapes, tiles = [("tiny", 1, 8, 64)], [None, S(2, 16, 1, 2), S(4, 16, 1, 1)]
    modes = [True, False]
    jobs = [(t, m, 1024 if not args.tiny else 8, 4096 if not args.tiny else 64) for t in tiles for m in modes]
    res = header(precompile(_compile_job, jobs, args.jobs))
    res["copy_gbs"] = copy_gbs(bench)
    rows = []
    for name, batch, dim, length in shapes:
        ins, dy = inputs(batch, dim, length)
        ref = run_bwd(ins, dy, None, None)
        nbytes = (5 * batch * dim * length + 4 * batch * GROUPS * length) * 2
        for t in tiles:
            for m in modes:
                row = dict(shape=name, tile=None if t is None else [t.bd, t.chunk, t.num_warps, t.num_stages])
                row["partial_dbc"] = m
                try:
                    out = run_bwd(ins, dy, t, m)
                    errs = [rel_error(a, b) for a, b in zip(out, ref, strict=True) if a is not None]
                    row["max_rel_vs_default"] = max(errs)
                    row["ms"] = bench(lambda t=t, m=m, a=ins, d=dy: run_bwd(a, d, t, m))
                    row["pct_copy"] = 100 * nbytes / (row["ms"] * 1e-3) / 1e9 / res["copy_gbs"]
                    if m:
                        bd = t.bd if t is not None else 2
                        parts = torch.randn(batch, GROUPS, dim // GROUPS // bd, 1, length, device=DEV)
                        parts2 = parts.clone()
                        row["partial_sum_ms"] = bench(
                            lambda a=parts, b=parts2: (
                                a.sum(2).to(torch.bfloat16),
                                b.sum(2).to(torch.bfloat16),
                            )
                        )
                        del parts, parts2
                except Exception as err:
                    row["error"] = f"{type(err).__name__}: {err}"[:300]
                rows.append(row)
    res["rows"] = rows
    res["ss2d"] = [] if args.tiny else ss2d_rows()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    print(f"copy {res['copy_gbs']:.0f} GB/s  {res['device']}  triton {res['triton']}")
    print(f"{'shape':8} {'tile':18} {'partial':7} {'ms':>8} {'%copy':>6} {'sum ms':>7} {'err':>8}")
    for r in rows:
        print(
            f"{r['shape']:8} {r['tile']!s:18} {r['partial_dbc']!s:7} {r.get('ms', float('nan')):8.3f} "
            f"{r.get('pct_copy', float('nan')):6.1f} {r.get('partial_sum_ms', float('nan')):7.3f} "
            f"{r.get('max_rel_vs_default', float('nan')):8.1e} {r.get('error', '')}"
        )


if __name__ == "__main__":
    main()
