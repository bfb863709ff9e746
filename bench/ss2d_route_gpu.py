"""GPU timing of the two SS2D paths of the Triton backend at the flagship's shapes (sets route.py's rule).

For each shape (batch, d_inner, H, W; N = 1, K = 4, bf16): the composed path exactly as the backend runs
it (``composed_ss2d_fwd`` / ``_bwd`` with the Triton backend: reorders of x, delta, B, C, dy and the
gradients included) and fused-kernel variants (``SS2DOptions`` and tiles), forward and backward timed
separately (the route decides them separately), with each variant's relative error against the composed
result (a wrong variant is reported, never silently timed). Then plain-scan tiles with software
pipelining (``ScanConfig.num_stages``) at stage 1 (N = 1 and 16). Compiles first in ``--jobs`` parallel
processes (they fill Triton's on-disk cache), then times everything in this process; prints tables and
writes JSON (``--out``).

    PYTHONPATH=src python bench/ss2d_route_gpu.py --out results.json [--jobs 12] [--quick]
    PYTHONPATH=src python bench/ss2d_route_gpu.py --once plain_bwd   # one launch, for ncu
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import torch
import triton

from geomamba.ops.ss2d_scan import composed_ss2d_bwd, composed_ss2d_fwd
from geomamba.ops.triton import (
    ScanConfig,
    SS2DOptions,
    selective_scan_bwd,
    selective_scan_fwd,
    ss2d_bwd,
    ss2d_fwd,
)
from geomamba.ops.triton.route import _triton_backend

S = ScanConfig
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: TRITON_INTERPRET=1 smoke run (--tiny)
# name -> (forward tile or None = table, backward tile or None, options); T3 = transposed column tiles,
# G = gather. Round-2 call 1 measured gather/atomic/stage variants; call 2 these.
T3, G = SS2DOptions(col_t3=True), SS2DOptions(col_t3=False)
VARIANTS = {
    "default": (None, None, SS2DOptions()),
    "gather": (S(2, 256, 2), S(4, 128, 2), G),
    "t3_k": (None, None, SS2DOptions(col_t3=True, seq_k=False)),
    "t3_c1k": (S(1, 1024, 4), S(1, 1024, 4), T3),
    "t3_c1k8": (S(1, 1024, 8), S(1, 1024, 8), T3),
    "t3_c2k": (S(1, 2048, 8), S(1, 2048, 8), T3),
    "t3_c4k": (S(1, 4096, 8), S(2, 512, 4), T3),
    "t3_c1k_k": (S(1, 1024, 4), S(1, 1024, 4), SS2DOptions(col_t3=True, seq_k=False)),
    "t3_s2": (S(2, 256, 2, 2), S(4, 128, 2, 2), T3),
    "t3_b1w": (S(2, 512, 4), S(2, 128, 1), T3),
    "g_b1w": (S(4, 256, 4), S(2, 128, 1), G),
}
# (name, batch, d_inner, H, W): the flagship's SS2D maps (d_inner 128..1024, batch 16-32)
SHAPES = [
    ("64x64_b16_d256", 16, 256, 64, 64),
    ("64x64_b32_d128", 32, 128, 64, 64),
    ("32x32_b16_d512", 16, 512, 32, 32),
    ("32x32_b32_d256", 32, 256, 32, 32),
    ("16x16_b16_d1024", 16, 1024, 16, 16),
    ("16x16_b32_d512", 32, 512, 16, 16),
]
# plain scan at stage 1 (16, 1024, 4096, G = 4): (N, forward tile, backward tile)
PLAIN = [
    (1, None, None),
    (1, S(4, 256, 4, 3), S(2, 128, 1, 2)),
    (1, S(2, 256, 2, 3), S(2, 128, 1, 3)),
    (1, S(4, 512, 4, 3), S(2, 128, 2, 2)),
    (1, S(2, 512, 4, 3), S(1, 128, 1, 2)),
    (1, S(4, 256, 4, 4), S(2, 64, 1, 2)),
    (1, S(8, 256, 8, 3), S(2, 256, 2, 2)),
    (1, S(4, 128, 2, 3), S(1, 256, 1, 2)),
    (16, None, None),
]


def ss2d_inputs(batch, dm, h, w, n=1, k=4, dtype=torch.bfloat16):
    g = torch.Generator(device=DEV).manual_seed(0)
    length = h * w

    def r(*s):
        return torch.randn(*s, device=DEV, generator=g)

    return (
        r(batch, dm, h, w).to(dtype),
        (r(batch, k, dm, length) * 0.5 - 1.0).to(dtype),
        -torch.exp(r(k * dm, n) * 0.5),
        r(batch, k, n, length).to(dtype),
        r(batch, k, n, length).to(dtype),
        torch.ones(k * dm, device=DEV),
        r(k * dm) * 0.1,
    )


def plain_inputs(n, batch=16, dim=1024, length=4096, groups=4):
    g = torch.Generator(device=DEV).manual_seed(0)

    def r(*s):
        return torch.randn(*s, device=DEV, generator=g)

    bf = torch.bfloat16
    return (
        r(batch, dim, length).to(bf), (r(batch, dim, length) * 0.5 - 1.0).to(bf), -torch.exp(r(dim, n) * 0.5),
        r(batch, groups, n, length).to(bf), r(batch, groups, n, length).to(bf), torch.ones(dim, device=DEV),
        None, r(dim) * 0.1, True,
    )  # fmt: skip


def _fused(ins, variant):
    fc, bc, opts = VARIANTS[variant]
    return (
        lambda: ss2d_fwd(*ins, 4, config=fc, options=opts),
        lambda dy: ss2d_bwd(dy, *ins, 4, config=bc, options=opts),
    )


def _compile_job(job):
    """Worker: run one (kind, ...) case once at batch 1 so its kernels land in Triton's disk cache."""
    kind, *rest = job
    t0 = time.perf_counter()
    try:
        if kind == "ss2d":
            variant, dm, h, w = rest
            ins = ss2d_inputs(1, dm, h, w)
            if variant == "composed":
                be = _triton_backend()
                composed_ss2d_fwd(be, *ins, 4)
                composed_ss2d_bwd(be, ins[0], *ins, 4)
            else:
                f, b = _fused(ins, variant)
                f()
                b(ins[0])
        else:
            n, fc, bc = rest
            args = plain_inputs(n, batch=1)
            selective_scan_fwd(*args, config=fc)
            selective_scan_bwd(args[0], *args, None, config=bc)
        _sync()
        return job, time.perf_counter() - t0, None
    except Exception as err:  # reported in the table, the timing phase skips it
        return job, time.perf_counter() - t0, f"{type(err).__name__}: {str(err)[:300]}"


def _rel(a, b):
    a, b = a.double(), b.double()
    den = b.norm()
    return ((a - b).norm() / den).item() if den > 0 else (a - b).norm().item()


def _kernel_stats():
    """{(kernel name, cache key repr): (n_regs, n_spills)} of the compiled kernels in memory."""
    from geomamba.ops.triton.scan_bwd import scan_bwd_kernel
    from geomamba.ops.triton.scan_fwd import scan_fwd_kernel

    out = {}
    for fn in (scan_fwd_kernel, scan_bwd_kernel):
        for dev_cache in getattr(fn, "device_caches", {}).values():
            cache = dev_cache[0] if isinstance(dev_cache, tuple) else dev_cache
            for key, k in cache.items():
                out[(fn.__name__, repr(key))] = (getattr(k, "n_regs", None), getattr(k, "n_spills", None))
    return out


def _new_stats(before):
    now = _kernel_stats()
    return [list(v) for k, v in now.items() if k not in before]


def bench(fn, rep=60):
    if DEV == "cpu":
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    return float(triton.testing.do_bench(fn, warmup=20, rep=rep, return_mode="median"))


def _sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def time_ss2d(shapes, variants):
    be = _triton_backend()
    rows = []
    for name, batch, dm, h, w in shapes:
        ins = ss2d_inputs(batch, dm, h, w)
        dy = torch.randn_like(ins[0])
        y_c = composed_ss2d_fwd(be, *ins, 4)
        g_c = composed_ss2d_bwd(be, dy, *ins, 4)
        comp_f = bench(lambda ins=ins: composed_ss2d_fwd(be, *ins, 4))
        comp_b = bench(lambda ins=ins, dy=dy: composed_ss2d_bwd(be, dy, *ins, 4))
        row = dict(
            shape=name, batch=batch, d_inner=dm, H=h, W=w, composed_fwd_ms=comp_f, composed_bwd_ms=comp_b
        )
        for v in variants:
            f, b = _fused(ins, v)
            before = _kernel_stats()
            try:
                y = f()
                g = b(dy)
            except Exception as err:
                row[v] = dict(error=f"{type(err).__name__}: {str(err)[:300]}")
                continue
            _sync()
            errs = {"y": _rel(y, y_c)} | {
                nm: _rel(a, c)
                for nm, a, c in zip(["dx", "ddelta", "dA", "dB", "dC", "dD", "dbias"], g, g_c, strict=True)
            }
            tf, tb = bench(f), bench(lambda b=b, dy=dy: b(dy))
            row[v] = dict(
                fwd_ms=tf, bwd_ms=tb, fwd_speedup=comp_f / tf, bwd_speedup=comp_b / tb,
                max_rel_err=max(errs.values()), errors=errs, regs_spills=_new_stats(before),
            )  # fmt: skip
        rows.append(row)
        del ins, dy, y_c, g_c
        torch.cuda.empty_cache()
    return rows


def time_plain(cases):
    rows = []
    for n, fc, bc in cases:
        args = plain_inputs(n)
        dy = torch.randn_like(args[0])
        before = _kernel_stats()
        y, _ = selective_scan_fwd(*args, config=fc)
        g = selective_scan_bwd(dy, *args, None, config=bc)
        y0, _ = selective_scan_fwd(*args)
        g0 = selective_scan_bwd(dy, *args, None)
        err = max([_rel(y, y0)] + [_rel(a, c) for a, c in zip(g, g0, strict=True) if a is not None])
        tf = bench(lambda args=args, fc=fc: selective_scan_fwd(*args, config=fc))
        tb = bench(lambda args=args, dy=dy, bc=bc: selective_scan_bwd(dy, *args, None, config=bc))
        rows.append(
            dict(
                N=n,
                fwd_config=None if fc is None else list(fc.__dict__.values()),
                bwd_config=None if bc is None else list(bc.__dict__.values()),
                fwd_ms=tf,
                bwd_ms=tb,
                rel_err_vs_default=err,
                regs_spills=_new_stats(before),
            )
        )
        del args, dy
        torch.cuda.empty_cache()
    return rows


def once(case):
    if case == "plain_bwd":
        args = plain_inputs(1)
        selective_scan_bwd(torch.randn_like(args[0]), *args, None)
    elif case == "plain_fwd":
        selective_scan_fwd(*plain_inputs(1))
    else:  # fused_fwd / fused_bwd at 64x64 (16, 256)
        ins = ss2d_inputs(16, 256, 64, 64)
        f, b = _fused(ins, "default")
        f() if case == "fused_fwd" else b(torch.randn_like(ins[0]))
    _sync()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--jobs", type=int, default=12)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--no-plain", action="store_true")
    p.add_argument("--once", default=None)
    p.add_argument("--tiny", action="store_true", help="tiny shapes (CPU smoke run under the interpreter)")
    p.add_argument("--compile-only", action="store_true", help="only the parallel warm-up (fills the cache)")
    args = p.parse_args(argv)
    if args.once:
        once(args.once)
        return 0
    variants = [v for v in args.variants.split(",") if v]
    global SHAPES, PLAIN
    if args.tiny:
        SHAPES = [("tiny", 1, 4, 8, 8)]
        PLAIN = [(1, None, S(2, 16, 4, 2)), (4, S(1, 16, 4, 2), None)]
        plain_inputs.__defaults__ = (1, 8, 64, 2)
    hs = sorted({h: (dm, h, w) for _, _, dm, h, w in SHAPES}.values())
    jobs = [("ss2d", v, dm, h, w) for v in [*variants, "composed"] for dm, h, w in hs]
    if not args.no_plain:
        jobs += [("plain", n, fc, bc) for n, fc, bc in PLAIN]
    t0 = time.perf_counter()
    compile_log = []
    if args.tiny or args.jobs < 1:
        jobs = []
    with ProcessPoolExecutor(max(1, args.jobs), mp_context=mp.get_context("spawn")) as ex:
        for job, secs, err in ex.map(_compile_job, jobs):
            compile_log.append(dict(job=repr(job), seconds=secs, error=err))
            if err:
                print("COMPILE/RUN FAILED", job, err, flush=True)
    print(f"parallel warm-up of {len(jobs)} cases: {time.perf_counter() - t0:.0f} s", flush=True)
    if args.compile_only:
        return 0
    res = dict(device=torch.cuda.get_device_name() if DEV == "cuda" else DEV, torch=torch.__version__, triton=triton.__version__,
               command=" ".join(sys.argv), compile_log=compile_log)  # fmt: skip
    t1 = time.perf_counter()
    res["ss2d"] = time_ss2d(SHAPES, variants)
    res["plain"] = [] if args.no_plain else time_plain(PLAIN)
    print(f"timing: {time.perf_counter() - t1:.0f} s")
    print(
        "\nSS2D N=1 K=4 bf16: composed ms (fwd/bwd), then per variant fwd/bwd speedup over composed [max rel err]"
    )
    for r in res["ss2d"]:
        cells = []
        for v in variants:
            c = r[v]
            cells.append(
                f"{v} ERR"
                if "error" in c
                else f"{v} {c['fwd_speedup']:.2f}/{c['bwd_speedup']:.2f} [{c['max_rel_err']:.0e}]"
            )
        print(f"{r['shape']:16} {r['composed_fwd_ms']:.3f}/{r['composed_bwd_ms']:.3f} | " + " | ".join(cells))
    print("\nplain stage1 (16, 1024, 4096, G=4) bf16")
    for r in res["plain"]:
        print(f"N={r['N']:<3} {r['fwd_config']} {r['bwd_config']} fwd {r['fwd_ms']:.3f} bwd {r['bwd_ms']:.3f}"
              f" err {r['rel_err_vs_default']:.0e} regs {r['regs_spills']}")  # fmt: skip
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
