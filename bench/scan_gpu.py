"""GPU benchmark of the Triton selective scan and fused SS2D scan against the memory-bandwidth limit.

Measures, in one run: the device-to-device copy bandwidth (bytes read + written / time of a large
``copy_``); the plain scan forward and backward (bf16 inputs, G = 4) at the flagship's three stages
(batch 16, 256x256 input: L = 4096, 1024, 256 with d_inner 256, 512, 1024, so D = 4 * d_inner) and one
large shape, N = 1 and N = 16, with the minimal bytes each kernel must move:

    forward:  read u, delta, B, C; write y
    backward: read u, delta, B, C, dout; write du, ddelta, dB, dC

so that effective bandwidth = bytes / time (forward and backward as autograd runs them: the forward
returns its chunk-entry states, the backward reads them; the forward without states and the recomputing
backward are recorded too); the fused SS2D core and the routed pair (route.py: what the
backend runs) against the backend's composed path (reorders + Triton plain scan + cross_merge), forward
and backward; and the SS2D layer forward + backward through the dispatcher: reference backend, Triton
with every SS2D composed, Triton routed. Prints a table and writes ``bench/results/scan_gpu_<gpu>.json``.

Timing: ``triton.testing.do_bench`` (each call launched from the host: a kernel shorter than its launch
path is timed as the launch path), or with ``--graphs`` ``do_bench_cudagraph`` (the calls replayed from a
CUDA graph: GPU time alone, as in the compiled training step's CUDA graphs; the reference layer too).
The layer steps accumulate their gradients from step to step (``.backward()`` on gradients left from the
last step: one fp32 add per parameter and one for the input); ``--compile-layer`` with ``--graphs`` also
times both layers with the gradients set to None before each step, as a training step after
``optimizer.zero_grad()`` runs them (``*_fresh_grads_ms``).

    PYTHONPATH=src python bench/scan_gpu.py [--sweep] [--graphs] [--out PATH]
    PYTHONPATH=src TRITON_INTERPRET=1 python bench/scan_gpu.py --tiny   # CPU smoke run of the script
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch
import triton

from geomamba.layers.ss2d import SS2D
from geomamba.ops.cross_scan import to_line_order
from geomamba.ops.selective_scan._backends import get_backend
from geomamba.ops.selective_scan.naive import selective_scan_naive
from geomamba.ops.ss2d_scan import composed_ss2d_bwd, composed_ss2d_fwd
from geomamba.ops.triton import ScanConfig, selective_scan_bwd, selective_scan_fwd, ss2d_bwd, ss2d_fwd
from geomamba.ops.triton.route import ENV_FUSED, fused_ss2d, ss2d_bwd_routed, ss2d_fwd_routed

RESULTS = Path(__file__).resolve().parent / "results"
GRAPHS = {"on": False}  # --graphs: time replays of CUDA graphs


def bench(fn, reps: int = 100) -> float:
    """Median milliseconds of ``fn`` (CUDA events through triton's do_bench, or replays of a CUDA graph
    with ``--graphs``; host clock on CPU)."""
    if torch.cuda.is_available():
        if GRAPHS["on"]:
            return float(triton.testing.do_bench_cudagraph(fn, rep=reps, return_mode="median"))
        return float(triton.testing.do_bench(fn, warmup=25, rep=reps, return_mode="median"))
    fn()
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_bandwidth(dev, numel: int) -> float:
    """Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written (always timed by
    ``do_bench``: one long kernel, its launch is negligible; replayed from graphs it measured 2,430 GB/s
    on an H100 where do_bench measured 2,973)."""
    src = torch.randn(numel, device=dev, dtype=torch.float32).to(torch.bfloat16)
    dst = torch.empty_like(src)
    graphs, GRAPHS["on"] = GRAPHS["on"], False
    try:
        ms = bench(lambda: dst.copy_(src))
    finally:
        GRAPHS["on"] = graphs
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9


def scan_inputs(batch, dim, length, n, groups, dtype, dev):
    return dict(
        u=torch.randn(batch, dim, length, device=dev, dtype=dtype),
        delta=(torch.randn(batch, dim, length, device=dev) * 0.5 - 1.0).to(dtype),
        A=-torch.exp(torch.randn(dim, n, device=dev) * 0.5),
        B=torch.randn(batch, groups, n, length, device=dev, dtype=dtype),
        C=torch.randn(batch, groups, n, length, device=dev, dtype=dtype),
        D=torch.ones(dim, device=dev),
        delta_bias=torch.randn(dim, device=dev) * 0.1,
    )


def scan_bytes(batch, dim, length, n, groups, es):
    per_seq, per_bc = batch * dim * length * es, batch * groups * n * length * es
    return 3 * per_seq + 2 * per_bc, 5 * per_seq + 4 * per_bc


def _plain_row(name, shape, args, dy, cfg, copy_gbs):
    """As autograd runs them: the forward returns its chunk-entry states (where it stores any) and the
    backward reads them; also the forward without states and the backward that recomputes them."""
    batch, dim, length, n, groups = shape
    t_f = bench(lambda: selective_scan_fwd(*args, config=cfg, return_states=True))
    _, _, st = selective_scan_fwd(*args, config=cfg, return_states=True)
    t_b = bench(lambda: selective_scan_bwd(dy, *args, None, config=cfg, states=st))
    t_f0 = bench(lambda: selective_scan_fwd(*args, config=cfg))
    t_b0 = bench(lambda: selective_scan_bwd(dy, *args, None, config=cfg))
    fwd_b, bwd_b = scan_bytes(batch, dim, length, n, groups, 2)
    return dict(
        shape=name, batch=batch, D=dim, L=length, N=n, G=groups, dtype="bf16",
        config=None if cfg is None else [cfg.bd, cfg.chunk, cfg.num_warps],
        states_shape=list(st.shape), fwd_nostates_ms=t_f0, bwd_recompute_ms=t_b0,
        fwd_ms=t_f, bwd_ms=t_b, fwd_bytes=fwd_b, bwd_bytes=bwd_b,
        fwd_gbs=fwd_b / t_f / 1e6, bwd_gbs=bwd_b / t_b / 1e6,
        fwd_pct_copy=100 * fwd_b / t_f / 1e6 / copy_gbs, bwd_pct_copy=100 * bwd_b / t_b / 1e6 / copy_gbs,
    )  # fmt: skip


def plain_scan_rows(shapes, dev, copy_gbs, sweep_configs=None):
    rows = []
    for name, *shape in shapes:
        x = scan_inputs(*shape, torch.bfloat16, dev)
        args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], None, x["delta_bias"], True)
        dy = torch.randn_like(x["u"])
        for cfg in [None, *(sweep_configs or [])]:
            rows.append(_plain_row(name, shape, args, dy, cfg, copy_gbs))
    return rows


def ss2d_inputs(batch, dm, h, w, n, k, dtype, dev):
    length = h * w
    return dict(
        x=torch.randn(batch, dm, h, w, device=dev, dtype=dtype),
        delta=(torch.randn(batch, k, dm, length, device=dev) * 0.5 - 1.0).to(dtype),
        A=-torch.exp(torch.randn(k * dm, n, device=dev) * 0.5),
        B=torch.randn(batch, k, n, length, device=dev, dtype=dtype),
        C=torch.randn(batch, k, n, length, device=dev, dtype=dtype),
        D=torch.ones(k * dm, device=dev),
        delta_bias=torch.randn(k * dm, device=dev) * 0.1,
    )


def _core_row(name, shape, dev, copy_gbs, cfg=None):
    """Fused kernels, the composed path exactly as the backend runs it (reorders of x, delta, B, C, dy and
    the gradients, Triton plain scan), and the routed pair (what the backend runs for this shape)."""
    batch, dm, h, w, n, k = shape
    s = ss2d_inputs(batch, dm, h, w, n, k, torch.bfloat16, dev)
    length = h * w
    fargs = (s["x"], s["delta"], s["A"], s["B"], s["C"], s["D"], s["delta_bias"], k)
    dy = torch.randn_like(s["x"])
    be = get_backend("triton")
    t_f = bench(lambda: ss2d_fwd(*fargs, config=cfg))
    t_b = bench(lambda: ss2d_bwd(dy, *fargs, config=cfg))
    t_cf = bench(lambda: composed_ss2d_fwd(be, *fargs))
    t_cb = bench(lambda: composed_ss2d_bwd(be, dy, *fargs))
    t_rf = bench(lambda: ss2d_fwd_routed(*fargs))
    t_rb = bench(lambda: ss2d_bwd_routed(dy, *fargs))
    # the "lines" layout (what SS2DCore gives on CUDA): delta/B/C's column-major directions column-major
    largs = (s["x"], *(to_line_order(s[key], h, w).contiguous() if key in ("delta", "B", "C") else s[key]
                       for key in ("delta", "A", "B", "C", "D", "delta_bias")), k)  # fmt: skip
    # as the op runs it: the forward stores the chunk-entry states, the backward reads them
    t_lf = bench(lambda: ss2d_fwd(*largs, config=cfg, layout="lines", return_states=True))
    states = ss2d_fwd(*largs, config=cfg, layout="lines", return_states=True)[1]
    t_lb = bench(lambda: ss2d_bwd(dy, *largs, config=cfg, layout="lines", states=states))
    t_lbr = bench(lambda: ss2d_bwd(dy, *largs, config=cfg, layout="lines"))
    es = 2
    fwd_b = (2 * batch * dm * length + batch * k * dm * length + 2 * batch * k * n * length) * es
    bwd_b = (3 * batch * dm * length + 2 * batch * k * dm * length + 4 * batch * k * n * length) * es
    return dict(
        shape=name, batch=batch, d_inner=dm, H=h, W=w, N=n, K=k, dtype="bf16",
        config=None if cfg is None else [cfg.bd, cfg.chunk, cfg.num_warps, cfg.num_stages],
        fused_fwd_ms=t_f, fused_bwd_ms=t_b, composed_fwd_ms=t_cf, composed_bwd_ms=t_cb,
        fused_lines_fwd_ms=t_lf, fused_lines_bwd_ms=t_lb, fused_lines_speedup_fwd_bwd=(t_cf + t_cb) / (t_lf + t_lb),
        fused_lines_bwd_recompute_ms=t_lbr, fused_lines_states_shape=list(states.shape),
        routed_fwd_ms=t_rf, routed_bwd_ms=t_rb,
        routed_fused=[fused_ss2d(h, w, n, backward=False), fused_ss2d(h, w, n, backward=True)],
        fused_speedup_fwd=t_cf / t_f, fused_speedup_bwd=t_cb / t_b,
        fused_speedup_fwd_bwd=(t_cf + t_cb) / (t_f + t_b), routed_speedup_fwd_bwd=(t_cf + t_cb) / (t_rf + t_rb),
        fused_fwd_pct_copy=100 * fwd_b / t_f / 1e6 / copy_gbs,
        fused_bwd_pct_copy=100 * bwd_b / t_b / 1e6 / copy_gbs,
    )  # fmt: skip


def ss2d_core_rows(shapes, dev, copy_gbs, sweep_configs=None):
    """Fused SS2D core vs the backend's composed path and the routed pair, forward and backward, bf16."""
    return [
        _core_row(name, tuple(shape), dev, copy_gbs, cfg)
        for name, *shape in shapes
        for cfg in [None, *(sweep_configs or [])]
    ]


def layer_rows(shapes, dev, ref_reps, compile_layer=False):
    """SS2D layer forward + backward (bf16 autocast) through the dispatcher: the reference backend, the
    Triton backend with every SS2D composed (GEOMAMBA_SS2D_FUSED=never) and routed (the default rule);
    ``compile_layer``: also the routed layer under ``torch.compile``."""
    rows = []
    for name, batch, d_model, h, w, n in shapes:
        torch.manual_seed(0)
        layer = SS2D(d_model, d_state=n, backend="ref").to(dev)
        x = torch.randn(batch, h, w, d_model, device=dev, requires_grad=True)

        def step(layer=layer, x=x):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                out = layer(x)
            out.float().sum().backward()

        def fresh_grads(fn, layer=layer, x=x):
            """``fn`` after setting the gradients to None, as a training step that zeroes them by
            ``optimizer.zero_grad()`` (set_to_none, PyTorch's default) runs it: the backward writes them
            instead of adding to the previous step's (one fp32 add per parameter and one for x)."""

            def run():
                for t in (x, *layer.parameters()):
                    t.grad = None
                fn()

            return run

        row = dict(shape=name, batch=batch, d_model=d_model, H=h, W=w, N=n)
        step()  # warm-up
        if GRAPHS["on"]:
            try:
                row["reference_ms"] = bench(step, reps=50)
                if compile_layer:
                    row["reference_fresh_grads_ms"] = bench(fresh_grads(step), reps=50)
            except RuntimeError as exc:  # not capturable: timed by the host clock below
                row["reference_graph_error"] = f"{type(exc).__name__}: {exc}"[:300]
        ms = []
        for _ in range(ref_reps):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            ms.append((time.perf_counter() - t0) * 1e3)
        row["reference_host_clock_ms"] = statistics.median(ms)
        row.setdefault("reference_ms", row["reference_host_clock_ms"])
        layer.core.backend = "triton"
        old = os.environ.get(ENV_FUSED)
        try:
            os.environ[ENV_FUSED] = "never"
            row["triton_composed_ms"] = bench(step, reps=50)
            os.environ[ENV_FUSED] = "auto"
            row["triton_routed_ms"] = bench(step, reps=50)
        finally:
            os.environ.pop(ENV_FUSED, None) if old is None else os.environ.__setitem__(ENV_FUSED, old)
        row["speedup_vs_reference"] = row["reference_ms"] / row["triton_routed_ms"]
        row["routed_vs_composed"] = row["triton_composed_ms"] / row["triton_routed_ms"]
        if compile_layer:  # the layer as the compiled training step runs it (inductor fuses the
            compiled = torch.compile(layer)  # projections' epilogues, norm, gate around the scan op)

            def cstep(compiled=compiled, x=x):
                with torch.autocast(dev.type, dtype=torch.bfloat16):
                    out = compiled(x)
                out.float().sum().backward()

            t0 = time.perf_counter()
            cstep()
            cstep()
            row["triton_compiled_compile_s"] = time.perf_counter() - t0
            row["triton_compiled_ms"] = bench(cstep, reps=50)
            row["compiled_speedup_vs_reference"] = row["reference_ms"] / row["triton_compiled_ms"]
            if "reference_fresh_grads_ms" in row:
                row["triton_compiled_fresh_grads_ms"] = bench(fresh_grads(cstep), reps=50)
                row["compiled_speedup_vs_reference_fresh_grads"] = (
                    row["reference_fresh_grads_ms"] / row["triton_compiled_fresh_grads_ms"]
                )
        rows.append(row)
    return rows


def naive_forward_ms(dev):
    x = scan_inputs(16, 1024, 4096, 1, 4, torch.bfloat16, dev)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], None, x["delta_bias"], True)
    selective_scan_naive(*[a[..., :64] if torch.is_tensor(a) and a.dim() >= 3 else a for a in args])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    selective_scan_naive(*args)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out", type=Path, default=None, help="JSON path (default bench/results/scan_gpu_<gpu>.json)"
    )
    p.add_argument("--sweep", action="store_true", help="also time a few tile configurations per shape")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test of the script, CPU ok)")
    p.add_argument("--skip-layer", action="store_true", help="skip the SS2D layer comparison")
    p.add_argument(
        "--graphs", action="store_true", help="time replays of CUDA graphs (GPU time, no launches)"
    )
    p.add_argument(
        "--compile-layer",
        action="store_true",
        help="also time the Triton SS2D layer under torch.compile (against the eager reference layer)",
    )
    args = p.parse_args(argv)
    GRAPHS["on"] = args.graphs
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu-interpreter"
    if args.tiny:
        scan_shapes = [("tiny", 1, 8, 64, 1, 4), ("tiny_n16", 1, 4, 32, 16, 1)]
        core_shapes = [("tiny", 1, 4, 4, 4, 1, 4), ("tiny_colcopy", 1, 4, 32, 32, 1, 4)]
        lay_shapes = [("tiny", 1, 8, 4, 4, 1)]
        copy_numel = 1 << 16
    else:
        scan_shapes = [
            ("stage1", 16, 1024, 4096, 1, 4),
            ("stage2", 16, 2048, 1024, 1, 4),
            ("stage3", 16, 4096, 256, 1, 4),
            ("large", 4, 1024, 65536, 1, 4),
            ("stage1_n16", 16, 1024, 4096, 16, 4),
            ("stage3_n16", 16, 4096, 256, 16, 4),
        ]
        core_shapes = [
            ("stage1", 16, 256, 64, 64, 1, 4),
            ("stage2", 16, 512, 32, 32, 1, 4),
            ("stage3", 16, 1024, 16, 16, 1, 4),
            ("stage1_b32", 32, 128, 64, 64, 1, 4),
            ("stage2_b32", 32, 256, 32, 32, 1, 4),
            ("stage3_b32", 32, 512, 16, 16, 1, 4),
            ("stage3_n16", 16, 1024, 16, 16, 16, 4),
        ]
        lay_shapes = [
            ("stage1", 16, 128, 64, 64, 1),
            ("stage2", 16, 256, 32, 32, 1),
            ("stage3", 16, 512, 16, 16, 1),
        ]
        copy_numel = 1 << 28
    copy_gbs = copy_bandwidth(dev, copy_numel)
    print(f"device {gpu}  torch {torch.__version__}  triton {triton.__version__}  copy {copy_gbs:.0f} GB/s")
    sweep = None
    if args.sweep:
        sweep = [
            ScanConfig(*c)
            for c in [
                (4, 128, 4),
                (4, 256, 4),
                (8, 256, 4),
                (2, 256, 4),
                (4, 512, 4),
                (2, 256, 2),
                (8, 128, 4),
            ]
        ]
    plain = plain_scan_rows(scan_shapes[:1], dev, copy_gbs, sweep) + plain_scan_rows(
        scan_shapes[1:], dev, copy_gbs
    )
    if args.sweep and not args.tiny:
        sweep16 = [
            ScanConfig(*c) for c in [(1, 64, 4), (1, 128, 4), (2, 64, 4), (1, 32, 4), (1, 128, 8), (2, 32, 4)]
        ]
        plain += plain_scan_rows([s for s in scan_shapes if s[0] == "stage1_n16"], dev, copy_gbs, sweep16)
    core_sweep = None
    if args.sweep and not args.tiny:
        core_sweep = [ScanConfig(*c) for c in [(1, 256, 4), (4, 256, 4), (2, 512, 4), (2, 128, 4)]]
    core = ss2d_core_rows(core_shapes[:1], dev, copy_gbs, core_sweep) + ss2d_core_rows(
        core_shapes[1:], dev, copy_gbs
    )
    layer = (
        []
        if args.skip_layer or dev.type != "cuda"
        else layer_rows(lay_shapes, dev, ref_reps=1, compile_layer=args.compile_layer)
    )
    naive_ms = naive_forward_ms(dev) if not args.tiny else None

    print("\nplain scan, bf16 inputs, G=4 (percent of the measured copy bandwidth)")
    print(f"{'shape':12} {'N':>3} {'config':>14} {'fwd ms':>8} {'fwd %':>6} {'bwd ms':>8} {'bwd %':>6}")
    for r in plain:
        cfg = "default" if r["config"] is None else "x".join(map(str, r["config"]))
        print(
            f"{r['shape']:12} {r['N']:>3} {cfg:>14} {r['fwd_ms']:8.3f} {r['fwd_pct_copy']:6.1f}"
            f" {r['bwd_ms']:8.3f} {r['bwd_pct_copy']:6.1f}"
        )
    print("\nSS2D core (K=4, bf16): fused kernels and routed pair vs the backend's composed path")
    for r in core:
        cfg = "default" if r["config"] is None else "x".join(map(str, r["config"]))
        print(
            f"{r['shape']:12} N={r['N']:<3} {cfg:>9} fused {r['fused_fwd_ms']:.3f}/{r['fused_bwd_ms']:.3f} ms"
            f" composed {r['composed_fwd_ms']:.3f}/{r['composed_bwd_ms']:.3f} ms  fused speedup fwd"
            f" {r['fused_speedup_fwd']:.2f}x bwd {r['fused_speedup_bwd']:.2f}x  routed {r['routed_fused']}"
            f"  lines {r['fused_lines_fwd_ms']:.3f}/{r['fused_lines_bwd_ms']:.3f} ms"
            f" (bwd recomputing states {r['fused_lines_bwd_recompute_ms']:.3f})"
            f" ({r['fused_lines_speedup_fwd_bwd']:.2f}x composed)"
            f" {r['routed_fwd_ms']:.3f}/{r['routed_bwd_ms']:.3f} ms = {r['routed_speedup_fwd_bwd']:.2f}x"
        )
    if layer:
        print("\nSS2D layer forward+backward (bf16 autocast, through the dispatcher)")
        for r in layer:
            print(
                f"{r['shape']:12} reference {r['reference_ms']:.1f} ms (host clock {r['reference_host_clock_ms']:.1f})"
                f"  triton composed {r['triton_composed_ms']:.2f}"
                f"  routed {r['triton_routed_ms']:.2f} ms  vs reference {r['speedup_vs_reference']:.0f}x"
                f"  routed vs composed {r['routed_vs_composed']:.2f}x"
            )
            if "triton_compiled_ms" in r:
                print(
                    f"{'':12} torch.compile'd triton layer {r['triton_compiled_ms']:.2f} ms"
                    f"  vs eager reference {r['compiled_speedup_vs_reference']:.0f}x"
                )
            if "triton_compiled_fresh_grads_ms" in r:
                print(
                    f"{'':12} gradients set to None each step: reference {r['reference_fresh_grads_ms']:.1f} ms,"
                    f" compiled {r['triton_compiled_fresh_grads_ms']:.2f} ms"
                    f" = {r['compiled_speedup_vs_reference_fresh_grads']:.1f}x"
                )
    if naive_ms is not None:
        print(f"\nper-token PyTorch loop, forward at stage1 (16, 1024, 4096, N=1): {naive_ms:.0f} ms")
    out = dict(
        device=gpu, torch=torch.__version__, triton=triton.__version__, python=platform.python_version(),
        command=" ".join([Path(sys.executable).name, *sys.argv]), copy_gbs=copy_gbs, graphs=args.graphs,
        plain_scan=plain, ss2d_core=core, ss2d_layer=layer, naive_loop_forward_ms_stage1=naive_ms,
    )  # fmt: skip
    slug = re.sub(r"[^a-z0-9]+", "_", gpu.lower()).strip("_")
    path = args.out or RESULTS / f"scan_gpu_{slug}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
