"""GPU benchmark of the Triton selective scan and fused SS2D scan against the memory-bandwidth limit.

Measures, in one run: the device-to-device copy bandwidth (bytes read + written / time of a large
``copy_``); the plain scan forward and backward (bf16 inputs, G = 4) at the flagship's three stages
(batch 16, 256x256 input: L = 4096, 1024, 256 with d_inner 256, 512, 1024, so D = 4 * d_inner) and one
large shape, N = 1 and N = 16, with the minimal bytes each kernel must move:

    forward:  read u, delta, B, C; write y
    backward: read u, delta, B, C, dout; write du, ddelta, dB, dC

so that effective bandwidth = bytes / time; the fused SS2D core against cross_scan + Triton scan +
cross_merge (forward + backward); and the SS2D layer forward + backward on the fused Triton path against
the reference path of the tree. Prints a table and writes ``bench/results/scan_gpu_<gpu>.json``.

    PYTHONPATH=src python bench/scan_gpu.py [--sweep] [--out PATH]
    PYTHONPATH=src TRITON_INTERPRET=1 python bench/scan_gpu.py --tiny   # CPU smoke run of the script
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch
import triton

from geomamba.layers.ss2d import SS2D
from geomamba.ops.cross_scan import cross_merge, cross_scan
from geomamba.ops.selective_scan.naive import selective_scan_naive
from geomamba.ops.triton import ScanConfig, selective_scan_bwd, selective_scan_fwd, ss2d_bwd, ss2d_fwd
from geomamba.ops.triton.functional import triton_selective_scan, triton_ss2d_scan

RESULTS = Path(__file__).resolve().parent / "results"


def bench(fn, reps: int = 100) -> float:
    """Median milliseconds of ``fn`` (CUDA events through triton's do_bench; host clock on CPU)."""
    if torch.cuda.is_available():
        return float(triton.testing.do_bench(fn, warmup=25, rep=reps, return_mode="median"))
    fn()
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_bandwidth(dev, numel: int) -> float:
    """Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written."""
    src = torch.randn(numel, device=dev, dtype=torch.float32).to(torch.bfloat16)
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src))
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
    batch, dim, length, n, groups = shape
    t_f = bench(lambda: selective_scan_fwd(*args, config=cfg))
    t_b = bench(lambda: selective_scan_bwd(dy, *args, None, config=cfg))
    fwd_b, bwd_b = scan_bytes(batch, dim, length, n, groups, 2)
    return dict(
        shape=name, batch=batch, D=dim, L=length, N=n, G=groups, dtype="bf16",
        config=None if cfg is None else [cfg.bd, cfg.chunk, cfg.num_warps],
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


def _unfused(s, dy, k, h, w):
    """cross_scan + Triton scan + cross_merge: forward and backward callables."""
    batch, dm, length = s["x"].shape[0], s["x"].shape[1], h * w
    dseq = s["delta"].reshape(batch, k * dm, length)  # the unfused x_proj would give scan order directly
    rest = (s["A"], s["B"], s["C"], s["D"], None, s["delta_bias"], True)

    def fwd():
        xs = cross_scan(s["x"], k).reshape(batch, k * dm, length)
        y, _ = selective_scan_fwd(xs, dseq, *rest)
        return cross_merge(y.view(batch, k, dm, length), h, w)

    def bwd():
        xs = cross_scan(s["x"], k).reshape(batch, k * dm, length)  # saved by the forward in a real graph
        dys = cross_scan(dy, k).reshape(batch, k * dm, length)  # cross_merge's backward
        g = selective_scan_bwd(dys, xs, dseq, *rest)
        return cross_merge(g[0].view(batch, k, dm, length), h, w)  # cross_scan's backward

    return fwd, bwd


def _core_row(name, shape, dev, copy_gbs, cfg=None):
    batch, dm, h, w, n, k = shape
    s = ss2d_inputs(batch, dm, h, w, n, k, torch.bfloat16, dev)
    length = h * w
    fargs = (s["x"], s["delta"], s["A"], s["B"], s["C"], s["D"], s["delta_bias"], k)
    dy = torch.randn_like(s["x"])
    t_f = bench(lambda: ss2d_fwd(*fargs, config=cfg))
    t_b = bench(lambda: ss2d_bwd(dy, *fargs, config=cfg))
    unfused_fwd, unfused_bwd = _unfused(s, dy, k, h, w)
    t_uf = bench(unfused_fwd)
    t_xs = bench(lambda: cross_scan(s["x"], k).contiguous())
    t_ub = bench(unfused_bwd) - t_xs  # the forward's saved xs is not recomputed in a real graph
    es = 2
    fwd_b = (2 * batch * dm * length + batch * k * dm * length + 2 * batch * k * n * length) * es
    bwd_b = (3 * batch * dm * length + 2 * batch * k * dm * length + 4 * batch * k * n * length) * es
    return dict(
        shape=name, batch=batch, d_inner=dm, H=h, W=w, N=n, K=k, dtype="bf16",
        config=None if cfg is None else [cfg.bd, cfg.chunk, cfg.num_warps], fused_fwd_ms=t_f, fused_bwd_ms=t_b, unfused_fwd_ms=t_uf, unfused_bwd_ms=t_ub,
        speedup_fwd_bwd=(t_uf + t_ub) / (t_f + t_b),
        fused_fwd_pct_copy=100 * fwd_b / t_f / 1e6 / copy_gbs,
        fused_bwd_pct_copy=100 * bwd_b / t_b / 1e6 / copy_gbs,
    )  # fmt: skip


def ss2d_core_rows(shapes, dev, copy_gbs, sweep_configs=None):
    """Fused SS2D core vs cross_scan + Triton scan + cross_merge, forward and backward, bf16."""
    return [
        _core_row(name, tuple(shape), dev, copy_gbs, cfg)
        for name, *shape in shapes
        for cfg in [None, *(sweep_configs or [])]
    ]


def _fused_core_forward(core, x):
    """SS2DCore forward on the fused Triton SS2D op: x_proj/dt_proj on the image layout (no K copies)."""
    k, r, n = core.directions, core.dt_rank, core.d_state
    x_dbl = torch.einsum("bdl,kcd->bkcl", x.flatten(2), core.x_proj_weight.to(x.dtype))
    dts, bs, cs = torch.split(x_dbl, [r, n, n], dim=2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, core.dt_projs_weight.to(dts.dtype))
    return triton_ss2d_scan(
        x, dts, -torch.exp(core.A_logs.float()), bs, cs, core.Ds.float(),
        core.dt_projs_bias.reshape(-1).float(), k,
    )  # fmt: skip


def layer_rows(shapes, dev, ref_reps):
    """SS2D layer forward + backward (bf16 autocast): reference path of the tree vs Triton paths."""
    import geomamba.layers.ss2d as ss2d_mod

    rows = []
    for name, batch, d_model, h, w, n in shapes:
        torch.manual_seed(0)
        layer = SS2D(d_model, d_state=n, backend="ref").to(dev)
        x = torch.randn(batch, h, w, d_model, device=dev, requires_grad=True)

        def step(layer=layer, x=x):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                out = layer(x)
            out.float().sum().backward()

        row = dict(shape=name, batch=batch, d_model=d_model, H=h, W=w, N=n)
        orig_scan, orig_fwd = ss2d_mod.selective_scan, ss2d_mod.SS2DCore.forward
        try:
            step()  # warm-up
            ms = []
            for _ in range(ref_reps):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                step()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                ms.append((time.perf_counter() - t0) * 1e3)
            row["reference_ms"] = statistics.median(ms)
            row["reference_path"] = "tree SS2D(backend='ref') (interim tree: the naive per-token loop)"
            ss2d_mod.selective_scan = lambda *a, backend="auto", **kw: triton_selective_scan(*a, **kw)
            row["triton_unfused_ms"] = bench(step, reps=50)
            ss2d_mod.SS2DCore.forward = _fused_core_forward
            row["triton_fused_ms"] = bench(step, reps=50)
        finally:
            ss2d_mod.selective_scan, ss2d_mod.SS2DCore.forward = orig_scan, orig_fwd
        row["speedup_vs_reference"] = row["reference_ms"] / row["triton_fused_ms"]
        row["fused_vs_unfused"] = row["triton_unfused_ms"] / row["triton_fused_ms"]
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
    args = p.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu-interpreter"
    if args.tiny:
        scan_shapes = [("tiny", 1, 8, 64, 1, 4), ("tiny_n16", 1, 4, 32, 16, 1)]
        core_shapes = [("tiny", 1, 4, 4, 4, 1, 4)]
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
            ("stage1_n16", 16, 256, 64, 64, 16, 4),
        ]
        lay_shapes = [("stage1", 16, 128, 64, 64, 1), ("stage3", 16, 512, 16, 16, 1)]
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
    layer = [] if args.skip_layer else layer_rows(lay_shapes, dev, ref_reps=1)
    naive_ms = naive_forward_ms(dev) if not args.tiny else None

    print("\nplain scan, bf16 inputs, G=4 (percent of the measured copy bandwidth)")
    print(f"{'shape':12} {'N':>3} {'config':>14} {'fwd ms':>8} {'fwd %':>6} {'bwd ms':>8} {'bwd %':>6}")
    for r in plain:
        cfg = "default" if r["config"] is None else "x".join(map(str, r["config"]))
        print(
            f"{r['shape']:12} {r['N']:>3} {cfg:>14} {r['fwd_ms']:8.3f} {r['fwd_pct_copy']:6.1f}"
            f" {r['bwd_ms']:8.3f} {r['bwd_pct_copy']:6.1f}"
        )
    print("\nSS2D core (K=4, bf16): fused vs cross_scan + Triton scan + cross_merge")
    for r in core:
        cfg = "default" if r["config"] is None else "x".join(map(str, r["config"]))
        print(
            f"{r['shape']:12} N={r['N']:<3} {cfg:>9} fused fwd {r['fused_fwd_ms']:.3f} bwd {r['fused_bwd_ms']:.3f} ms"
            f" ({r['fused_fwd_pct_copy']:.0f}% / {r['fused_bwd_pct_copy']:.0f}%)  unfused fwd"
            f" {r['unfused_fwd_ms']:.3f} bwd {r['unfused_bwd_ms']:.3f} ms  speedup {r['speedup_fwd_bwd']:.2f}x"
        )
    if layer:
        print("\nSS2D layer forward+backward (bf16 autocast)")
        for r in layer:
            print(
                f"{r['shape']:12} reference {r['reference_ms']:.1f} ms  triton unfused {r['triton_unfused_ms']:.2f}"
                f"  fused {r['triton_fused_ms']:.2f} ms  vs reference {r['speedup_vs_reference']:.0f}x"
                f"  fused vs unfused {r['fused_vs_unfused']:.2f}x"
            )
    if naive_ms is not None:
        print(f"\nper-token PyTorch loop, forward at stage1 (16, 1024, 4096, N=1): {naive_ms:.0f} ms")
    out = dict(
        device=gpu, torch=torch.__version__, triton=triton.__version__, python=platform.python_version(),
        command=" ".join([Path(sys.executable).name, *sys.argv]), copy_gbs=copy_gbs,
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
