"""GPU diagnosis of the transposed column tiles (``SS2DOptions(col_t3=True)``) in the fused SS2D backward.

Round 2 saw wrong backward gradients from some transposed tiles on an H100 (triton 3.6) while the
forward was right. For each case (map, d_state, backward tile) and option set, prints the relative
error of every gradient against the gather addressing (``col_t3=False``, fp32 inputs), so that the
failing (tile, warps, merge) combinations can be told apart; ``--case`` runs one case once (for
``compute-sanitizer``).

    PYTHONPATH=src python bench/t3_bwd_diag.py [--out diag.json] [--case 0 --only t3]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from geomamba.ops.triton import ScanConfig, SS2DOptions, ss2d_bwd

S = ScanConfig
# (batch, d_inner, H, W, N, backward tile): the failures seen in round 2, and one that passed
CASES = [
    (2, 8, 20, 3, 4, S(1, 128, 2)),
    (2, 16, 32, 32, 1, S(2, 512, 4)),
    (2, 16, 16, 16, 1, S(2, 512, 4)),
]
OPTIONS = {
    "t3": SS2DOptions(col_t3=True),
    "t3_atomic_k": SS2DOptions(col_t3=True, seq_k=False),
    "t3_dbc_atomic": SS2DOptions(col_t3=True, dbc_atomic=True),
    "t3_1col": SS2DOptions(col_t3=True, columns=1),
}
NAMES = ["dx", "ddelta", "dA", "dB", "dC", "dD", "dbias"]


def inputs(batch, dm, h, w, n, k=4):
    g = torch.Generator(device="cuda").manual_seed(0)

    def r(*s):
        return torch.randn(*s, device="cuda", generator=g)

    length = h * w
    return (
        r(batch, dm, h, w), r(batch, k, dm, length) * 0.5 - 1.0, -torch.exp(r(k * dm, n) * 0.5),
        r(batch, k, n, length), r(batch, k, n, length), r(k * dm), r(k * dm) * 0.3,
    )  # fmt: skip


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def run_case(i, only=None):
    batch, dm, h, w, n, cfg = CASES[i]
    ins = inputs(batch, dm, h, w, n)
    dy = torch.randn_like(ins[0])
    ref = ss2d_bwd(dy, *ins, 4, config=cfg, options=SS2DOptions(col_t3=False))
    out = {}
    for name, opts in OPTIONS.items():
        if only and name != only:
            continue
        for warps in sorted({1, cfg.num_warps, 4}) if name == "t3" else [cfg.num_warps]:
            c = S(cfg.bd, cfg.chunk, warps)
            try:
                g = ss2d_bwd(dy, *ins, 4, config=c, options=opts)
                torch.cuda.synchronize()
                out[f"{name}_w{warps}"] = {nm: rel(a, b) for nm, a, b in zip(NAMES, g, ref, strict=True)}
            except Exception as err:
                out[f"{name}_w{warps}"] = f"{type(err).__name__}: {str(err)[:200]}"
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--case", type=int, default=None)
    p.add_argument("--only", default=None)
    args = p.parse_args(argv)
    res = {}
    for i in range(len(CASES)) if args.case is None else [args.case]:
        _, _, h, w, n, cfg = CASES[i]
        key = f"{h}x{w}_N{n}_bd{cfg.bd}_ch{cfg.chunk}"
        res[key] = run_case(i, args.only)
        for v, errs in res[key].items():
            bad = errs if isinstance(errs, str) else {k: f"{e:.0e}" for k, e in errs.items() if e > 1e-4}
            print(f"{key:24} {v:18} {bad or 'ok'}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
