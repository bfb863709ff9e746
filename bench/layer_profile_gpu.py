"""Where the SS2D layer's GPU time goes: kernel times of the compiled layer's forward + backward.

For each of the flagship's three SS2D layers (batch 16, 256x256 input: 64x64 / 32x32 / 16x16 maps,
d_model 128 / 256 / 512, N = 1, K = 4, bf16 autocast) the Triton layer runs under ``torch.compile``, as the
compiled training step runs it; this script records

* the step replayed from a CUDA graph (GPU time, as ``scan_gpu.py --compile-layer`` times it);
* a ``torch.profiler`` trace of a few steps: every kernel's time per step, summed by kind (the scan
  kernels and their copies, inductor's fused kernels, matrix products, convolutions, other);
* isolated pieces, each forward + backward replayed from a CUDA graph: the dt projection
  ``(K, D, R) @ (B, K, R, L)`` (what fusing dt_proj into the scan would remove, with the scan's reads of
  delta and its ddelta write), the SS2D scan core, and the depthwise convolution. A piece whose capture
  fails is timed by ``do_bench`` instead (recorded as ``"do_bench <ms>"``, host launches included): on
  the H100 the core's did (autograd accumulating its leaf inputs' gradients asked the legacy stream to
  wait on the capturing one); ``scan_gpu.py`` times the core's kernels from graphs.

Prints a table and writes ``bench/results/layer_profile_gpu_<gpu>.json``.

    PYTHONPATH=src python bench/layer_profile_gpu.py [--steps 5] [--out PATH] [--layout image]

``--layout image`` runs the layer with delta/B/C in image order (``layers.ss2d.CUDA_SCAN_LAYOUT``, the
layout before the "lines" one; JSON name suffix ``_image``).
    PYTHONPATH=src python bench/layer_profile_gpu.py --tiny     # CPU smoke run of the script
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

import geomamba.layers.ss2d as ss2d_layer
from _sweep import bench, header
from geomamba.layers.ss2d import SS2D
from geomamba.ops.ss2d_scan import ss2d_scan

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = [("stage1", 16, 128, 64, 64), ("stage2", 16, 256, 32, 32), ("stage3", 16, 512, 16, 16)]
KINDS = [  # (kind, pattern on the kernel name), first match wins
    ("scan", r"scan_(fwd|bwd)|^_copy_kernel"),  # (the before-JSON matched aten direct_copy_kernel here too)
    ("inductor", r"^triton_"),
    ("matmul", r"gemm|nvjet|cutlass|xmma|cublas|splitK|sm90_|Kernel2"),
    ("conv", r"conv|cudnn|dgrad|wgrad|depthwise"),
]


def kind_of(name: str) -> str:
    for kind, pat in KINDS:
        if re.search(pat, name, re.IGNORECASE):
            return kind
    return "other"


def _autocast(dev):
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")


def kernel_profile(step, steps: int, dev) -> dict:
    """Kernel time per step (microseconds) by kernel name and by kind, from a profiler trace of ``steps``
    calls of ``step`` (CPU ops on a CPU: the smoke run)."""
    acts = [torch.profiler.ProfilerActivity.CPU]
    if dev.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    run, how = step, "eager calls"
    if dev.type == "cuda":
        try:
            run, how = _graph_replay(step), "CUDA-graph replays"
        except RuntimeError as exc:
            print(f"profile: capture failed ({_why(exc)}); profiling eager calls", file=sys.stderr)
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(steps):
            run()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    want = torch.autograd.DeviceType.CUDA if dev.type == "cuda" else torch.autograd.DeviceType.CPU
    per_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.device_type != want or (dev.type == "cpu" and not e.name.startswith("aten::")):
            continue
        row = per_name[e.name]
        row[0] += e.time_range.elapsed_us() / steps
        row[1] += 1 / steps
    kernels = sorted(
        (
            dict(name=n[:160], kind=kind_of(n), us=round(t, 2), calls=round(c, 2))
            for n, (t, c) in per_name.items()
        ),
        key=lambda r: -r["us"],
    )
    kinds: dict[str, float] = defaultdict(float)
    counts: dict[str, float] = defaultdict(float)
    for r in kernels:
        kinds[r["kind"]] += r["us"]
        counts[r["kind"]] += r["calls"]
    return dict(
        profiled=how,
        kernel_us=round(sum(kinds.values()), 2),
        launches=round(sum(counts.values()), 1),
        by_kind={k: dict(us=round(kinds[k], 2), calls=round(counts[k], 1)) for k in sorted(kinds)},
        kernels=kernels[:40],
    )


def _why(exc: BaseException) -> str:
    """The exception and the one it interrupted (a failed capture reports at its end, not where it broke)."""
    first = exc.__context__
    msg = f"{type(exc).__name__}: {str(exc)[:160]}"
    return msg if first is None else f"{type(first).__name__}: {str(first)[:300]} -> {msg}"


def _graph_replay(step):
    """``step`` captured into a CUDA graph (after a warm-up call on a side stream); returns its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def pieces(batch: int, d_model: int, h: int, w: int, dev, graphs: bool) -> dict:
    """Isolated forward + backward of the dt projection, the scan core and the depthwise conv (ms)."""
    d, k, n = 2 * d_model, 4, 1
    r, length, dt = -(-d_model // 16), h * w, torch.bfloat16 if dev.type == "cuda" else torch.float32
    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape, scale=1.0, dtype=dt):
        return (torch.randn(*shape, generator=g) * scale).to(dev, dtype).requires_grad_()

    wd, dts = rnd(k, d, r, scale=r**-0.5), rnd(batch, k, r, length)
    gd = torch.randn(batch, k, d, length, generator=g).to(dev, dt)

    def dt_proj():
        torch.autograd.backward(torch.matmul(wd, dts), gd)

    x = rnd(batch, d, h, w).detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    delta = rnd(batch, k, d, length, scale=0.5)
    bs, cs = rnd(batch, k, n, length), rnd(batch, k, n, length)
    a = -torch.rand(k * d, n, generator=g).add(0.5).to(dev).requires_grad_()
    dd = torch.ones(k * d, device=dev, requires_grad=True)
    bias = torch.full((k * d,), -2.0, device=dev, requires_grad=True)
    gy = torch.randn(batch, d, h, w, generator=g).to(dev, dt).contiguous(memory_format=torch.channels_last)
    backend = "triton" if dev.type == "cuda" else "ref"

    def core():
        torch.autograd.backward(ss2d_scan(x, delta, a, bs, cs, dd, bias, k, backend), gy)

    conv = torch.nn.Conv2d(d, d, 3, padding=1, groups=d).to(dev).to(memory_format=torch.channels_last)

    def dwconv():
        with _autocast(dev):
            out = F.silu(conv(x))
        torch.autograd.backward(out, gy)

    return {
        name: _timed(name, fn, graphs)
        for name, fn in (("dt_proj", dt_proj), ("core", core), ("dwconv", dwconv))
    }


def _timed(name: str, fn, graphs: bool) -> float | str:
    """``bench(fn)`` replayed from a CUDA graph; a capture that fails is tried once more (a kernel's first
    launch may load its module inside the capture), then timed by ``do_bench`` (noted in the value)."""
    for attempt in range(2):
        try:
            return bench(fn, graphs=graphs)
        except RuntimeError as exc:
            print(
                f"{name}: capture {attempt + 1} failed: {_why(exc)}",
                file=sys.stderr,
            )
            torch.cuda.synchronize()
    return f"do_bench {bench(fn):.4f}"


def layer_row(name, batch, d_model, h, w, dev, steps: int, graphs: bool) -> dict:
    torch.manual_seed(0)
    layer = SS2D(d_model, d_state=1, backend="triton" if dev.type == "cuda" else "ref").to(dev)
    x = torch.randn(batch, h, w, d_model, device=dev, requires_grad=True)
    compiled = torch.compile(layer) if dev.type == "cuda" else layer

    def step():
        with _autocast(dev):
            out = compiled(x)
        out.float().sum().backward()

    t0 = time.perf_counter()
    step()
    step()
    row = dict(
        shape=name, batch=batch, d_model=d_model, H=h, W=w, compile_s=round(time.perf_counter() - t0, 1)
    )
    row["step_ms"] = bench(step, graphs=graphs)
    row["profile"] = kernel_profile(step, steps, dev)
    row["pieces_ms"] = pieces(batch, d_model, h, w, dev, graphs)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="profiled steps per shape")
    p.add_argument("--tiny", action="store_true", help="tiny shapes on any device (smoke test of the script)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/...<gpu>.json)")
    p.add_argument(
        "--layout",
        choices=["lines", "image"],
        default="lines",
        help="delta/B/C layout the layer uses on CUDA",
    )
    args = p.parse_args(argv)
    ss2d_layer.CUDA_SCAN_LAYOUT = args.layout
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    graphs = dev.type == "cuda"
    shapes = [("tiny", 2, 16, 8, 8)] if args.tiny else SHAPES
    rows = [layer_row(*s, dev, args.steps, graphs) for s in shapes]
    print(
        f"{'shape':8} {'step ms':>8} {'kernels ms':>10} {'launches':>8}  by kind (ms)  |  pieces fwd+bwd (ms)"
    )
    for r in rows:
        prof = r["profile"]
        kinds = " ".join(f"{k} {v['us'] / 1e3:.3f}" for k, v in prof["by_kind"].items())
        pcs = " ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r["pieces_ms"].items()
        )
        print(
            f"{r['shape']:8} {r['step_ms']:8.3f} {prof['kernel_us'] / 1e3:10.3f} {prof['launches']:8.0f}  {kinds}  |  {pcs}"
        )
    gpu = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    suffix = "_image" if args.layout == "image" else ""
    slug = re.sub(r"[^a-z0-9]+", "_", gpu.lower()).strip("_")
    out = args.out or RESULTS / f"layer_profile_gpu_{slug}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    timing = "step and pieces: CUDA-graph replays (median ms); kernels: profiler, us per step"
    out.write_text(json.dumps({**header([], timing=timing), "layout": args.layout, "rows": rows}, indent=1))
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
