"""Parameters and FLOPs of CMDBNet and its ablation variants at 256x256 (CPU), against the seed's figures.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add) on one
eval-mode forward pass of a (1, 3, 256, 256) input; GMACs = GFLOPs / 2 (the convention of thop/fvcore,
which most papers call "FLOPs"). FlopCounterMode counts matmuls and convolutions only: the selective scan
(while it has no FLOP formula of its own) and element-wise ops are not in the count; the scan's share is
estimated analytically (``8 N + 2`` FLOPs per scanned element) and reported separately.

    PYTHONPATH=src python bench/cmdbnet_flops.py [--size 256] [--models cmdbnet cmdbnet_cnn_only ...]

Writes ``bench/results/cmdbnet_flops.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from geomamba.layers.ss2d import SS2DCore
from geomamba.models import create_model

SEED = {"params_m": 34.8, "gflops": 6.9, "cnn_m": 21.3, "mamba_m": 8.5, "fusion_m": 3.2, "boundary_m": 1.8}
DEFAULT_MODELS = [
    ("cmdbnet", {}),
    ("cmdbnet", {"size": 224}),
    ("cmdbnet", {"low_memory": True}),
    ("cmdbnet_no_boundary", {}),
    ("cmdbnet_no_fusion", {}),
    ("cmdbnet_cnn_only", {}),
    ("cmdbnet_mamba_only", {}),
]


def scan_flops_estimate(model: torch.nn.Module) -> tuple[list[int], list]:
    """Analytic FLOPs of every selective scan: K * d_inner * L * (8 N + 2), from forward hooks."""
    total = [0]

    def hook(mod: SS2DCore, inputs, output):
        _, d, h, w = inputs[0].shape
        total[0] += inputs[0].shape[0] * mod.directions * d * h * w * (8 * mod.d_state + 2)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, SS2DCore)]
    return total, handles


def measure(name: str, overrides: dict, size: int) -> dict:
    overrides = dict(overrides)
    size = overrides.pop("size", size)
    model = create_model(name, **overrides).eval()
    params = sum(p.numel() for p in model.parameters())
    aux = getattr(model, "aux_heads", None)
    aux_params = sum(p.numel() for p in aux.parameters()) if aux is not None else 0
    scan_total, handles = scan_flops_estimate(model)
    counter = FlopCounterMode(display=False, depth=1)
    with torch.no_grad(), counter:
        model(torch.randn(1, 3, size, size))
    for h in handles:
        h.remove()
    # top-level children ("CMDBNet.cnn"); a ModuleList is never called, so sum its items instead
    counts = {tuple(k.split(".")): sum(ops.values()) for k, ops in counter.get_flop_counts().items()}
    per_module = {}
    for child in dict(model.named_children()):
        keys = [k for k in counts if len(k) >= 2 and k[1] == child]
        if keys:
            depth = min(len(k) for k in keys)
            per_module[child] = sum(counts[k] for k in keys if len(k) == depth) / 1e9
    children = {
        n: sum(p.numel() for p in m.parameters()) / 1e6 for n, m in model.named_children() if m is not None
    }
    flops = counter.get_total_flops()
    return {
        "model": name,
        "overrides": overrides,
        "size": size,
        "params_m": params / 1e6,
        "params_inference_m": (params - aux_params) / 1e6,
        "params_by_module_m": children,
        "gflops_counted": flops / 1e9,
        "gmacs_counted": flops / 2e9,
        "gflops_by_module": per_module,
        "scan_gflops_estimate": scan_total[0] / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--models", nargs="*", help="registered names (default: cmdbnet and its ablations)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cmdbnet_flops.json")
    args = parser.parse_args()
    logging.getLogger("geomamba.models.pretrained").setLevel(logging.ERROR)
    torch.manual_seed(0)
    models = [(m, {}) for m in args.models] if args.models else DEFAULT_MODELS
    rows = [measure(name, overrides, args.size) for name, overrides in models]
    print(
        f"input 1x3xSxS (S = {args.size} unless @ says otherwise); seed: {SEED['params_m']} M params, {SEED['gflops']} G 'FLOPs'"
    )
    print(f"{'model':<34}{'params M':>10}{'infer. M':>10}{'GFLOPs':>9}{'GMACs':>8}{'scan GFLOPs*':>14}")
    for r in rows:
        label = f"{r['model']} @{r['size']}" + "".join(f" {k}={v}" for k, v in r["overrides"].items())
        print(
            f"{label:<34}{r['params_m']:>10.2f}{r['params_inference_m']:>10.2f}{r['gflops_counted']:>9.2f}"
            f"{r['gmacs_counted']:>8.2f}{r['scan_gflops_estimate']:>14.3f}"
        )
    print("* analytic estimate, not in the counted FLOPs (FlopCounterMode counts matmul/conv only)")
    for r in rows[:1]:
        print("by module (params M / GFLOPs):")
        for k, v in r["params_by_module_m"].items():
            print(f"  {k:<12}{v:>8.2f}{r['gflops_by_module'].get(k, 0.0):>9.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "size": args.size,
        "seed": SEED,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "scan_flops_formula": "K * d_inner * H_i * W_i * (8 * d_state + 2) per SS2D core",
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    assert all(math.isfinite(r["gflops_counted"]) for r in rows)


if __name__ == "__main__":
    main()
