"""Shared parts of the GPU tile sweeps (``r4_sweep_gpu.py``, ``bwd_sweep_gpu.py``, ``n16_sweep_gpu.py``,
``ss2d_sweep_gpu.py``): every variant is run once first in parallel worker processes, so that Triton's
disk cache holds its compiled kernels before the timing (compiling dominates a sweep's wall time); the
result header; the device-to-device copy bandwidth the rows are compared with."""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import torch
import triton


def run_job(fn: Callable, job) -> tuple[str, float, str | None]:
    """Worker body: ``fn(job)`` once; returns (repr(job), seconds, error or None). A failure is reported,
    not raised (the variant's row then records its own error)."""
    t0 = time.perf_counter()
    try:
        fn(job)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return repr(job), time.perf_counter() - t0, None
    except Exception as err:
        return repr(job), time.perf_counter() - t0, f"{type(err).__name__}: {err}"


def precompile(worker: Callable, jobs: list, workers: int) -> list:
    """Runs ``worker`` (a module-level function: ``run_job`` of the script's job) over ``jobs`` in
    ``workers`` spawned processes on CUDA; nothing on a CPU or with one worker. Prints the failures."""
    if not torch.cuda.is_available() or workers <= 1:
        return []
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        log = list(ex.map(worker, jobs))
    for job, _sec, err in log:
        if err:
            print("compile error", job, err, file=sys.stderr)
    return log


def header(log: list, **extra) -> dict:
    """Device, versions, the command line, ``extra`` and the compile log of a sweep's JSON."""
    return {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "command": " ".join(sys.argv),
        **extra,
        "compile_log": [dict(job=j, seconds=s, error=e) for j, s, e in log],
    }


def bench(fn: Callable, rep: int = 80, graphs: bool = False) -> float:
    """Median milliseconds of ``fn``: ``triton.testing.do_bench`` (20 ms warm-up, ``rep`` ms), or with
    ``graphs`` ``do_bench_cudagraph`` (replays of a CUDA graph: GPU time alone); on a CPU the host clock of
    one call (the smoke runs)."""
    if torch.cuda.is_available():
        if graphs:
            return float(triton.testing.do_bench_cudagraph(fn, rep=rep, return_mode="median"))
        return float(triton.testing.do_bench(fn, warmup=20, rep=rep, return_mode="median"))
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def best_overall(rows: list, entries: str, key_of: Callable, ms_of: Callable) -> tuple:
    """The one tile for all shapes of a sweep: ``(key, summed ms)`` of the least time summed over the
    shapes; ``rows[i][entries]`` lists a shape's timed tiles, ``key_of(t)`` names a tile, ``ms_of(t)`` is
    its time."""
    total: dict = {}
    for r in rows:
        for t in r[entries]:
            total[key_of(t)] = total.get(key_of(t), 0.0) + ms_of(t)
    best = min(total, key=total.get)
    return best, total[best]


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a - b| / |b|`` (Frobenius norms, in fp64)."""
    return ((a.double() - b.double()).norm() / (b.double().norm() + 1e-30)).item()


def copy_gbs(bench: Callable) -> float:
    """Device-to-device copy bandwidth (bytes read + written / time of a 512 MB bf16 ``copy_``); 1.0 on a
    CPU (the CPU smoke runs)."""
    if not torch.cuda.is_available():
        return 1.0
    src = torch.randn(1 << 28, device="cuda").to(torch.bfloat16)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 2 / (bench(lambda: dst.copy_(src)) * 1e-3) / 1e9


def scan_inputs(batch, dim, length, n=1, groups=4, dtype=torch.bfloat16, seed=0):
    """The sweeps' plain-scan inputs ``[u, delta, A, B, C, D, z=None, delta_bias]`` (delta centred on -1:
    softplus ~0.3) and a ``dy`` of u's shape, seeded, on the GPU when there is one."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device=dev).manual_seed(seed)

    def r(*s):
        return torch.randn(*s, device=dev, generator=g)

    args = [
        r(batch, dim, length).to(dtype),
        (r(batch, dim, length) * 0.5 - 1.0).to(dtype),
        -torch.exp(r(dim, n) * 0.5),
        r(batch, groups, n, length).to(dtype),
        r(batch, groups, n, length).to(dtype),
        torch.ones(dim, device=dev),
        None,
        r(dim) * 0.1,
    ]
    return args, r(batch, dim, length).to(dtype)


def ss2d_inputs(batch, dm, h, w, seed=1):
    """The SS2D sweeps' inputs ``[x, delta, A, B, C, D, delta_bias]`` (bf16 maps, K = 4, N = 1, delta
    centred on -1) and a ``dy`` of x's shape, seeded, on the GPU when there is one."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device=dev).manual_seed(seed)

    def r(*s):
        return torch.randn(*s, device=dev, generator=g)

    k, length, bf = 4, h * w, torch.bfloat16
    ins = [
        r(batch, dm, h, w).to(bf),
        (r(batch, k, dm, length) * 0.5 - 1.0).to(bf),
        -torch.exp(r(k * dm, 1) * 0.5),
        r(batch, k, 1, length).to(bf),
        r(batch, k, 1, length).to(bf),
        torch.ones(k * dm, device=dev),
        r(k * dm) * 0.1,
    ]
    return ins, r(batch, dm, h, w).to(bf)
