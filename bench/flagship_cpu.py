"""CPU latency, parameters and FLOPs of the subtask-Mamba network (and, with --ablations, of every
ablation variant).

    PYTHONPATH=src python bench/flagship_cpu.py                 # latency of subtask_mamba, one 256x256 pair
    PYTHONPATH=src python bench/flagship_cpu.py --ablations     # + params / GFLOPs of each ablation variant

FLOPs of the main model are counted directly at --size; those of the variants are fitted exactly from
32x32 and 64x64 counts (see _variant_flops; --exact-ablations counts them directly, slowly).

Prints a table and writes bench/results/flagship_cpu.json (device, versions, command, figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import geomamba
from geomamba.ops import selective_scan
from geomamba.ops.selective_scan import resolve_backend

# The author's ablation table (seed 000): the default, 2 encoder, 3 decoder, 4 difference variants,
# plus the two alternative SS2D cores.
ABLATIONS = [
    {"version": "en_sicnn_inmlp-de_ca_sa-di_so_fo_m"},
    {"version": "en_sicnn_simlp"},
    {"version": "en_incnn_inmlp"},
    {"version": "de_ca"},
    {"version": "de_sa"},
    {"version": "de"},
    {"version": "di_so_m"},
    {"version": "di_fo_m"},
    {"version": "di_m"},
    {"version": "di_so_fo"},
    {"core": "shared"},
    {"core": "separate"},
]


def _variant_flops(model, batch: int, bands: int, size: int, *, exact: bool) -> int:
    """FLOPs at ``size`` x ``size``. Counting runs the interim per-token scan loop under the FLOP counter,
    which takes minutes at 256x256 on a CPU; every counted op of this network is either per pixel (linear
    in H*W) or on pooled 1x1 maps (constant), so ``flops = a * H*W + c`` is fitted exactly from counts at
    32x32 and 64x64 unless ``exact``. The default model's fit is checked against its direct count."""
    if exact:
        return geomamba.summary(model, (batch, 2, bands, size, size), print_table=False).flops
    f32, f64 = (geomamba.summary(model, (batch, 2, bands, s, s), print_table=False).flops for s in (32, 64))
    a, rem = divmod(f64 - f32, 64 * 64 - 32 * 32)
    if rem:
        return geomamba.summary(model, (batch, 2, bands, size, size), print_table=False).flops
    return a * size * size + (f32 - a * 32 * 32)


def _ss2d_forward_name() -> str:
    """The function that runs the SS2D scan forward on CPU tensors (backend ``"auto"``)."""
    be = resolve_backend("auto", "cpu", torch.float32)
    fn = be.ss2d_fwd
    return f"{be.name}: " + (
        f"{fn.__module__}.{fn.__name__}" if fn is not None else "composed (reorder + scan + merge)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="subtask_mamba")
    parser.add_argument("--size", type=int, default=256, help="input H = W")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--bands", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--ablations", action="store_true", help="also count params/FLOPs of every variant")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency runs")
    parser.add_argument(
        "--exact-ablations", action="store_true", help="count variant FLOPs at --size directly (slow)"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "flagship_cpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = (args.batch, 2, args.bands, args.size, args.size)

    model = geomamba.create_model(args.model, in_channels=args.bands).eval()
    s = geomamba.summary(model, size)
    x = torch.randn(*size)
    times = []
    with torch.inference_mode():
        for i in range(0 if args.no_latency else args.warmup + args.repeats):
            t0 = time.perf_counter()
            model(x)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    median = round(statistics.median(times), 4) if times else None
    print(f"{args.model} {size}: latency median {median} s over {len(times)} runs")

    variants = []
    if args.ablations:
        check = _variant_flops(model, args.batch, args.bands, args.size, exact=False)
        print(
            f"FLOPs from the 32/64 fit {check} vs counted directly {s.flops}: {'equal' if check == s.flops else 'DIFFER'}"
        )
        for cfg in ABLATIONS:
            m = geomamba.create_model(args.model, in_channels=args.bands, **cfg).eval()
            flops = _variant_flops(m, args.batch, args.bands, args.size, exact=args.exact_ablations)
            row = {
                "variant": cfg.get("version", f"core={cfg.get('core')}"),
                "version": m.version,
                "code": m.ablation.code,
                "core": m.ablation.core,
                "params": sum(p.numel() for p in m.parameters()),
                "gflops": round(flops / 1e9, 3),
                "gmacs": round(flops / 2e9, 3),
            }
            variants.append(row)
            print(
                f"{row['variant']:40s} code {row['code']}  {row['params'] / 1e6:8.3f} M  {row['gflops']:8.2f} GFLOPs"
            )

    result = {
        "benchmark": "flagship_cpu",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "platform": platform.platform(),
            "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()],
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "geomamba": geomamba.__version__,
        },
        "scan_implementation": f"{selective_scan.__module__}.{selective_scan.__name__}",
        "ss2d_forward": _ss2d_forward_name(),
        "model": args.model,
        "input_size": list(size),
        "latency_s": {"runs": [round(t, 4) for t in times], "median": median},
        "params": s.total_params,
        "gflops": round(s.gflops, 3),
        "gmacs": round(s.macs / 1e9, 3),
        "breakdown": [
            {"module": m.name, "params": m.params, "gflops": round(m.flops / 1e9, 4)} for m in s.modules
        ],
        "ablations": variants,
        "ablation_flops_method": "exact count"
        if args.exact_ablations
        else "a*H*W + c fitted from 32x32 and 64x64",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
