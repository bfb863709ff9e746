"""GPU sweep of the N = 16 plain forward (issue 3: "N = 16 forward no more than 2.5x the N = 1 time") and,
with ``--bwd``, of the N = 16 backward's tiles.

Variants of the sequential kernel (``scan_fwd_seq_kernel``, ``ScanConfig(chunk=0)``): ``state_groups``
threads per channel (1, 2, 4: each scans 16, 8, 4 of the 16 states), warps per program, software-
pipelining stages, and B/C handed to the kernel in their input dtype (bf16) or converted to fp32 first
(the conversion is inside the timed call): fp32 rows save the kernel two bf16 -> fp32 conversions per
element and state (the sm_90 SASS of the chunk loop: 10.3 -> 7.8 instructions per element and state with
one thread per channel). ``--prefetch``: the 2- and 4-lane tiles with and without ``ScanConfig.prefetch``
(each next chunk's rows loaded into registers before the current chunk is computed) and with bf16 B/C
converted value by value or read as int32 words of two values. Also the associative state-loop tiles (the
default and the best of round 4) and the N = 1 forward of the same shape, the denominator of the target.

``--bwd``: the backward's tiles: the rows kernel (``scan_bwd_kernel``, rows = (channel, state) pairs,
recomputing the forward per chunk) with ``bd`` channels per program x ``chunk`` positions, dB/dC by fp32
atomics or partial sums, and the sequential kernel (``scan_bwd_seq_kernel``) with 2-8 lanes per channel;
with ``--prefetch`` the sequential kernel's pass 1 with and without prefetch, B/C per value or as words.
Relative error of every gradient against the default tile's.

Each row: GPU time of one call replayed from a CUDA graph (``triton.testing.do_bench_cudagraph``), its
relative error against the rows kernel (``state_loop=False``) and its ratio to the N = 1 forward.
Compiles first in ``--jobs`` processes (they fill Triton's cache), then times in this process.

    PYTHONPATH=src python bench/n16_sweep_gpu.py --out results.json [--jobs 14] [--quick | --prefetch | --bwd] [--dtype fp16]
    PYTHONPATH=src TRITON_INTERPRET=1 python bench/n16_sweep_gpu.py --tiny   # CPU smoke run
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch

from _sweep import bench as sweep_bench
from _sweep import header, precompile, rel_error, run_job, scan_inputs
from geomamba.ops.triton import ScanConfig, launch, selective_scan_bwd, selective_scan_fwd

DEV = "cuda" if torch.cuda.is_available() else "cpu"
GROUPS = 4
SHAPES = [("stage1_n16", 16, 1024, 4096), ("stage3_n16", 16, 4096, 256)]
# (tile, B/C in fp32)
VARIANTS = [(ScanConfig(32, 32, 4, 2), False), (ScanConfig(32, 16, 2, 2), False)] + [
    (ScanConfig(32 * w // sg, 0, w, st, sg), f32)
    for sg, w, st, f32 in itertools.product((1, 2, 4), (1, 2, 4), (1, 2, 3, 4), (False, True))
]
# --quick: the associative tiles and the sequential kernel without pipelining (the full sweep's winners)
QUICK = VARIANTS[:2] + [
    (ScanConfig(32 * w // sg, 0, w, 1, sg), False) for sg, w in itertools.product((1, 2, 4), (1, 2, 4))
]
# --prefetch: the sequential kernel with 2 or 4 lanes per channel, with and without loading each next
# chunk into registers ahead of its compute (ScanConfig.prefetch); B/C in bf16 converted per value, read as
# int32 words of two values (launch.PACK_BF16_BC, the default) or converted to fp32 before the call
PREFETCH = [
    (ScanConfig(32 * w // sg, 0, w, 1, sg, pf), bc)
    for sg, w, bc, pf in itertools.product((2, 4), (1, 2, 4), ("bf16", "bf16_words", "fp32"), (False, True))
]

# --bwd: (tile, partial dB/dC sums); None = the default (the sequential kernel); chunk 0 = the sequential
# kernel (scan_bwd_seq.py) with state_groups lanes per channel, else the rows kernel (scan_bwd.py)
BWD_VARIANTS = [(None, None), (ScanConfig(1, 32, 2, 1), False), (ScanConfig(2, 32, 2, 1), False)] + [
    (ScanConfig(r // sg, 0, r // 32, 1, sg), None) for sg, r in itertools.product((2, 4, 8), (32, 64, 128))
]

# --bwd --prefetch: the sequential backward with 4 or 8 lanes per channel, pass 1 with and without prefetch,
# B/C converted per value or read as words
BWD_PREFETCH = [(None, None)] + [
    (ScanConfig(32 // sg, 0, 1, 1, sg, pf), bc)
    for sg, pf, bc in itertools.product((4, 8), (False, True), ("bf16", "bf16_words"))
]


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def inputs(batch, dim, length, dtype, n=16, seed=0):
    """The scan's inputs, ``dtype`` (a DTYPES key) for u, delta, B, C and z."""
    return scan_inputs(batch, dim, length, n, GROUPS, dtype=DTYPES[dtype], seed=seed)[0]


def call(args, cfg, f32):
    """``f32``: True or "fp32" (B/C converted to fp32 in the call), "bf16" (bf16 B/C converted value by
    value in the kernel), False or "bf16_words" (read as words of two: the default)."""
    u, delta, A, B, C, *rest = args
    launch.PACK_BF16_BC = f32 != "bf16"
    if f32 in (True, "fp32"):
        B, C = B.float(), C.float()
    return selective_scan_fwd(u, delta, A, B, C, *rest, True, config=cfg, state_loop=True)


def bwd_call(args, dy, cfg, partial):
    """``partial``: the rows kernel's partial dB/dC sums (bool / None), or for the sequential kernel the B/C
    reading as ``call``'s ``f32`` ("bf16" / "bf16_words")."""
    if isinstance(partial, str):
        launch.PACK_BF16_BC, partial = partial != "bf16", None
    return selective_scan_bwd(dy, *args, True, None, config=cfg, partial_dbc=partial)


def _compile(job):
    cfg, f32, dim, length, bwd, dtype = job
    args = inputs(1, dim, length, dtype)
    if bwd:
        bwd_call(args, args[0].clone(), cfg, f32)
    else:
        call(args, cfg, f32)


def _compile_job(job):
    return run_job(_compile, job)


def bench(fn):
    return sweep_bench(fn, rep=60, graphs=True)


def rows(shapes, variants, dtype):
    out = []
    for name, batch, dim, length in shapes:
        args = inputs(batch, dim, length, dtype)
        y_ref, last_ref = selective_scan_fwd(*args, True, state_loop=False)
        one = inputs(batch, dim, length, dtype, n=1)
        n1_ms = bench(lambda a=one: selective_scan_fwd(*a, True))
        out.append(dict(shape=name, tile="n1_forward", ms=n1_ms))
        print(json.dumps(out[-1]), flush=True)
        for cfg, f32 in variants:
            row = dict(shape=name, tile=list(cfg.__dict__.values()), bc_fp32=f32)
            try:
                y, last = call(args, cfg, f32)
                row["rel_y"], row["rel_last"] = rel_error(y, y_ref), rel_error(last, last_ref)
                row["ms"] = bench(lambda a=args, c=cfg, f=f32: call(a, c, f))
                row["x_n1"] = row["ms"] / n1_ms
            except Exception as err:
                row["error"] = f"{type(err).__name__}: {err}"[:300]
            out.append(row)
            print(json.dumps(row), flush=True)
        del args, one, y_ref, last_ref
    return out


def bwd_rows(shapes, variants, dtype):
    out = []
    for name, batch, dim, length in shapes:
        args = inputs(batch, dim, length, dtype)
        dy = torch.randn_like(args[0])
        ref = bwd_call(args, dy, None, None)
        for cfg, partial in variants:
            row = dict(shape=name, tile=None if cfg is None else list(cfg.__dict__.values()), partial=partial)
            try:
                got = bwd_call(args, dy, cfg, partial)
                row["max_rel"] = max(rel_error(a, b) for a, b in zip(got, ref, strict=True) if a is not None)
                row["ms"] = bench(lambda a=args, d=dy, c=cfg, p=partial: bwd_call(a, d, c, p))
            except Exception as err:
                row["error"] = f"{type(err).__name__}: {err}"[:300]
            out.append(row)
            print(json.dumps(row), flush=True)
        del args, dy, ref
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--jobs", type=int, default=14)
    p.add_argument("--tiny", action="store_true", help="CPU interpreter smoke run")
    p.add_argument(
        "--quick", action="store_true", help="the associative tiles and the unpipelined sequential ones"
    )
    p.add_argument("--bwd", action="store_true", help="sweep the backward's tiles instead")
    p.add_argument("--prefetch", action="store_true", help="the sequential tiles with and without prefetch")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="the inputs' dtype")
    args = p.parse_args(argv)
    shapes, variants = SHAPES, QUICK if args.quick else VARIANTS
    if args.prefetch:
        variants = PREFETCH
        if args.dtype != "bf16":  # B/C words apply to bf16 only
            variants = [(c, bc) for c, bc in PREFETCH if bc == "bf16" and c.num_warps == 2]
    if args.bwd:
        variants = BWD_PREFETCH if args.prefetch else BWD_VARIANTS
    if args.tiny:
        shapes = [("tiny16", 1, 8, 32)]
        variants = [(ScanConfig(4, 16, 1, 1), False), (ScanConfig(4, 0, 1, 1, 2), True)]
        if args.prefetch:
            variants = [
                (ScanConfig(4, 0, 1, 1, 2, True), "bf16_words"),
                (ScanConfig(4, 0, 1, 1, 4, True), "bf16"),
            ]
        if args.bwd:
            variants = [
                (None, None),
                (ScanConfig(2, 16, 1, 1), True),
                (ScanConfig(2, 0, 1, 1, 4, True), "bf16"),
            ]
    jobs = [(c, f, d, L, args.bwd, args.dtype) for _, _, d, L in shapes for c, f in variants]
    log = precompile(_compile_job, jobs, args.jobs)
    res = header(log, timing="do_bench_cudagraph median (GPU time of CUDA-graph replays)")
    res["dtype"] = args.dtype
    res["rows"] = (bwd_rows if args.bwd else rows)(shapes, variants, args.dtype)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    print(f"{res['device']}  torch {res['torch']}  triton {res['triton']}")
    for r in sorted(res["rows"], key=lambda r: (r["shape"], r.get("ms", 1e9))):
        if args.bwd:
            print(
                f"{r['shape']:11} {r['tile']!s:20} partial {r['partial']!s:5} {r.get('ms', float('nan')):8.3f} ms"
                f"  max rel {r.get('max_rel', float('nan')):8.1e} {r.get('error', '')}"
            )
            continue
        print(
            f"{r['shape']:11} {r['tile']!s:24} B/C {r.get('bc_fp32')!s:10} {r.get('ms', float('nan')):8.3f} ms "
            f"{r.get('x_n1', float('nan')):6.2f}x N=1  rel {r.get('rel_y', float('nan')):8.1e} {r.get('error', '')}"
        )


if __name__ == "__main__":
    main()
