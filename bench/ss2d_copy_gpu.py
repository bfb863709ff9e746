"""The fused SS2D backward's copies on a GPU (issue 9): PyTorch's strided copies vs the tiled Triton copy.

At the SS2D shapes of the flagship's training step (batch 32, bf16, N = 1, K = 4, d_inner x map):

- one H/W transpose of a bf16 map: ``t.transpose(-1, -2).contiguous()`` vs ``ops.triton.copy.transposed``,
  and a channels-last -> contiguous copy (``.contiguous()``), with effective bandwidth (bytes read +
  written / time);
- the whole ``ss2d_bwd`` with its copies made by PyTorch (the previous launcher) or by the Triton copy
  (the default), with dB/dC by partial sums (default) or atomics; every variant's gradients are compared
  with the default's (max relative difference), so a wrong variant is reported, not timed silently.

GPU times (``*_ms``) replay the call from a CUDA graph (as the compiled training step does: no launch
overhead); ``bwd_eager_ms`` launches it eagerly (host-bound when the launches take longer than the
kernels) and ``bwd_host_us`` is the host time per eager call.

    PYTHONPATH=src python bench/ss2d_copy_gpu.py                     # on a GPU, about a minute
    PYTHONPATH=src TRITON_INTERPRET=1 python bench/ss2d_copy_gpu.py --tiny   # CPU smoke run

Writes ``bench/results/ss2d_copy_gpu_<gpu>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from geomamba.ops.triton import SS2DOptions
from geomamba.ops.triton import ss2d_launch as launch
from geomamba.ops.triton.copy import transposed
from train_speed import result_header, slug, write_result

DEV = "cuda" if torch.cuda.is_available() else "cpu"
# (d_inner, H, W) of the flagship's SS2D scans at 256x256 input
SHAPES = [(128, 64, 64), (256, 64, 64), (256, 32, 32), (512, 32, 32), (512, 16, 16), (1024, 16, 16)]


def _torch_strided_copy_(dst, src, add=None):
    return dst.copy_(src if add is None else src.float() + add.float())


@contextlib.contextmanager
def torch_copies():
    """The launcher's copies made by PyTorch (``copy_`` of transposed views), as before the Triton copy."""
    saved = launch.strided_copy_, launch.transposed
    launch.strided_copy_ = _torch_strided_copy_
    launch.transposed = lambda t, dtype=None: t.transpose(-1, -2).contiguous()
    try:
        yield
    finally:
        launch.strided_copy_, launch.transposed = saved


def bench(fn, reps: int, graph: bool = False) -> float:
    """Median milliseconds of ``fn``: triton's ``do_bench`` on a GPU (``graph``: replayed from a CUDA graph,
    GPU time without the launch overhead), wall clock under the interpreter."""
    if DEV == "cuda":
        import triton.testing

        if graph:
            return float(triton.testing.do_bench_cudagraph(fn, rep=reps, return_mode="median"))
        return float(triton.testing.do_bench(fn, warmup=5, rep=reps, return_mode="median"))
    import time

    fn()
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def host_us(fn, calls: int = 20 if DEV == "cuda" else 1) -> float:
    """Microseconds of host time per call (launches queued without waiting for the GPU)."""
    import time

    fn()
    if DEV == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - t) / calls * 1e6
    if DEV == "cuda":
        torch.cuda.synchronize()
    return host


def ss2d_inputs(batch, dm, h, w, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    k, n, length = 4, 1, h * w

    def r(*s, scale=1.0):
        return torch.randn(*s, device=DEV, generator=g) * scale

    bf = torch.bfloat16
    x = r(batch, dm, h, w).to(bf)
    delta = (r(batch, k, dm, length, scale=0.5) - 1.0).to(bf)
    A = -torch.rand(k * dm, n, device=DEV, generator=g) - 0.5
    B, C = r(batch, k, n, length).to(bf), r(batch, k, n, length).to(bf)
    D, bias = r(k * dm), r(k * dm, scale=0.1)
    dy = r(batch, dm, h, w).to(bf)
    return dy, x, delta, A, B, C, D, bias


def _rel(a, b):
    return float((a.float() - b.float()).norm() / (b.float().norm() + 1e-30))


def measure(batch: int, dm: int, h: int, w: int, reps: int) -> dict:
    """One SS2D shape: the transposes alone and the whole backward in each variant."""
    dy, x, delta, A, B, C, D, bias = ss2d_inputs(batch, dm, h, w)
    nbytes = 2 * x.numel() * x.element_size()
    graph = DEV == "cuda"
    t_torch = bench(lambda: x.transpose(-1, -2).contiguous(), reps, graph)
    t_triton = bench(lambda: transposed(x), reps, graph)
    xcl = x.contiguous(memory_format=torch.channels_last)
    t_cl = bench(lambda: xcl.contiguous(), reps, graph)
    row = {
        "shape": [batch, dm, h, w],
        "transpose_ms": {"torch": round(t_torch, 4), "triton": round(t_triton, 4)},
        "transpose_gbps": {
            "torch": round(nbytes / t_torch / 1e6, 1),
            "triton": round(nbytes / t_triton / 1e6, 1),
        },
        "channels_last_to_contiguous_ms": round(t_cl, 4),
    }
    args_ = (dy, x, delta, A, B, C, D, bias, 4)
    base = launch.backward_options(x)
    variants = {
        "default": (base, False),
        "torch_copies": (base, True),
        "dbc_atomic": (SS2DOptions(**{**base.__dict__, "dbc_atomic": True}), False),
    }
    ref = launch.ss2d_bwd(*args_, options=base)
    for key in ("bwd_ms", "bwd_eager_ms", "bwd_host_us", "bwd_rel_diff"):
        row[key] = {}
    for name, (opts, use_torch) in variants.items():
        with torch_copies() if use_torch else contextlib.nullcontext():
            grads = launch.ss2d_bwd(*args_, options=opts)

            def fn(o=opts):
                return launch.ss2d_bwd(*args_, options=o)

            row["bwd_ms"][name] = round(bench(fn, reps, graph), 4)
            row["bwd_eager_ms"][name] = round(bench(fn, reps), 4)
            row["bwd_host_us"][name] = round(host_us(fn), 1)
        row["bwd_rel_diff"][name] = max(_rel(g, r) for g, r in zip(grads, ref) if g is not None)
    print(
        f"{row['shape']!s:22s} transpose torch {t_torch:.4f} ms triton {t_triton:.4f} ms | CL->CF {t_cl:.4f} | "
        + " ".join(
            f"bwd {k} {v:.4f} ms (eager {row['bwd_eager_ms'][k]:.4f}, host {row['bwd_host_us'][k]:.0f} us)"
            for k, v in row["bwd_ms"].items()
        )
        + f" | max rel diff {max(row['bwd_rel_diff'].values()):.2e}",
        flush=True,
    )
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=50, help="milliseconds of timing per variant (do_bench rep)")
    ap.add_argument("--tiny", action="store_true", help="one small shape (CPU smoke run)")
    ap.add_argument("--out-dir", default="bench/results")
    args = ap.parse_args(argv)
    shapes = [(8, 8, 8)] if args.tiny else SHAPES
    batch = 2 if args.tiny else args.batch
    dev = torch.device(DEV)
    rows = [measure(batch, dm, h, w, args.reps) for dm, h, w in shapes]
    totals = {k: round(sum(r["bwd_ms"][k] for r in rows), 4) for k in rows[0]["bwd_ms"]}
    out = {**result_header("ss2d_copy_gpu", dev, argv), "batch": batch, "rows": rows, "bwd_ms_sum": totals}
    name = slug(out["device"].get("name", "cpu")) if DEV == "cuda" else "cpu"
    path = write_result(out, args.out_dir, f"ss2d_copy_gpu_{name}")
    print("bwd totals (ms, one call per shape):", totals, f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
