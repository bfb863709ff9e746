"""GPU probe of the transposed column-major tile (the round-1 ``T3`` path) step by step.

Each probe kernel loads a ``(R, TO, TI)`` tile of ``R`` images ``(TI, W)`` in memory order, flattens it
to ``(R, TO*TI)`` in column-major sequence order with ``tl.reshape`` and then, by step: 0 stores it;
1 scans it (``tl.associative_scan``, the kernels' combine) and stores; 2 reshapes the scan back to
``(R, TO, TI)`` and stores it at the image positions; 3 the same with ``tl.atomic_add`` into zeros;
4 multiplies the scan by a second reshaped tile first (layouts mixed as in the kernels). Then the
fused SS2D forward/backward of each variant (gather/transpose x atomics/one program per block) at
13 x 9 and 16 x 48 against the gather path. Prints a table; writes JSON (``--out``).

    PYTHONPATH=src python bench/colmajor_probe.py --out probe.json
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import triton
import triton.language as tl

from geomamba.ops.triton import SS2DOptions, ss2d_bwd, ss2d_fwd
from geomamba.ops.triton._common import combine_fwd


@triton.jit
def _probe(
    x_ptr, a_ptr, c_ptr, out_ptr, W, R: tl.constexpr, TO: tl.constexpr, TI: tl.constexpr, STEP: tl.constexpr
):
    CH: tl.constexpr = TO * TI
    rr = tl.arange(0, R)
    w = tl.arange(0, TO)
    h = tl.arange(0, TI)
    p = rr[:, None, None] * (TI * W) + w[None, :, None] + h[None, None, :] * W
    flat = rr[:, None] * CH + tl.arange(0, CH)[None, :]
    v = tl.reshape(tl.load(x_ptr + p), (R, CH))
    if STEP == 0:
        tl.store(out_ptr + flat, v)
    else:
        a = tl.reshape(tl.load(a_ptr + p), (R, CH))
        _, s = tl.associative_scan((a, v), 1, combine_fwd)
        if STEP == 1:
            tl.store(out_ptr + flat, s)
        elif STEP == 2:
            tl.store(out_ptr + p, tl.reshape(s, (R, TO, TI)))
        elif STEP == 3:
            tl.atomic_add(out_ptr + p, tl.reshape(s, (R, TO, TI)), sem="relaxed")
        else:
            c = tl.reshape(tl.load(c_ptr + p), (R, CH))
            tl.atomic_add(out_ptr + p, tl.reshape(s * c, (R, TO, TI)), sem="relaxed")


def probe_tile(r, to, ti, warps, step):
    w = to + 3
    x, a, c = (
        torch.randn(r, ti, w, device="cuda"),
        torch.rand(r, ti, w, device="cuda"),
        torch.randn(r, ti, w, device="cuda"),
    )
    seq = lambda t: t[:, :, :to].transpose(1, 2).reshape(r, to * ti)  # noqa: E731
    xs, as_, cs = seq(x), seq(a), seq(c)
    s, h = torch.empty_like(xs), torch.zeros(r, device="cuda")
    for t in range(to * ti):
        h = as_[:, t] * h + xs[:, t]
        s[:, t] = h
    flat = step < 2
    out = torch.zeros(r, to * ti, device="cuda") if flat else torch.zeros(r, ti, w, device="cuda")
    _probe[(1,)](x, a, c, out, w, r, to, ti, step, num_warps=warps)
    if step == 0:
        ref = xs
    elif step == 1:
        ref = s
    else:
        ref = torch.zeros_like(out)
        ref[:, :, :to] = (s * cs if step == 4 else s).reshape(r, to, ti).transpose(1, 2)
    return ((out - ref).norm() / ref.norm()).item()


def ss2d_variants(h, w, dm=8, batch=2, k=4):
    torch.manual_seed(0)
    length = h * w
    ins = [
        torch.randn(batch, dm, h, w, device="cuda"),
        torch.randn(batch, k, dm, length, device="cuda") * 0.5 - 1.0,
        -torch.exp(torch.randn(k * dm, 1, device="cuda") * 0.5),
        torch.randn(batch, k, 1, length, device="cuda"),
        torch.randn(batch, k, 1, length, device="cuda"),
        torch.randn(k * dm, device="cuda"),
        torch.randn(k * dm, device="cuda") * 0.3,
    ]
    dy = torch.randn_like(ins[0])
    base = SS2DOptions(col_t3=False, seq_k=True, dbc_atomic=False)
    y0, g0 = ss2d_fwd(*ins, k, options=base), ss2d_bwd(dy, *ins, k, options=base)
    rows = []
    for name, o in [
        ("gather_atomic", SS2DOptions(col_t3=False, seq_k=False, dbc_atomic=True)),
        ("t3_seqk", SS2DOptions(col_t3=True, seq_k=True, dbc_atomic=False)),
        ("t3_atomic", SS2DOptions(col_t3=True, seq_k=False, dbc_atomic=True)),
        ("t3_onecol", SS2DOptions(col_t3=True, columns=1, seq_k=False, dbc_atomic=True)),
    ]:
        y, g = ss2d_fwd(*ins, k, options=o), ss2d_bwd(dy, *ins, k, options=o)
        err = {"y": ((y - y0).norm() / y0.norm()).item()}
        for nm, a, b in zip(["dx", "ddelta", "dA", "dB", "dC", "dD", "dbias"], g, g0, strict=True):
            err[nm] = ((a - b).norm() / b.norm()).item()
        rows.append(dict(shape=f"{h}x{w}", variant=name, errors=err))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--tile", default=None, help="only this tile, R,TO,TI,WARPS (e.g. for compute-sanitizer)")
    p.add_argument("--skip-ss2d", action="store_true")
    args = p.parse_args(argv)
    res = {"triton": triton.__version__, "torch": torch.__version__, "device": torch.cuda.get_device_name()}
    tiles = []
    only = [tuple(int(v) for v in args.tile.split(","))] if args.tile else None
    for r, to, ti, warps in only or [
        (2, 8, 16, 1),
        (2, 16, 16, 2),
        (4, 8, 16, 2),
        (2, 4, 64, 2),
        (1, 8, 16, 1),
        (2, 8, 16, 2),
        (4, 16, 16, 4),
    ]:
        row = dict(R=r, TO=to, TI=ti, warps=warps)
        for step in range(5):
            try:
                row[f"step{step}"] = probe_tile(r, to, ti, warps, step)
            except Exception as err:  # a compile failure is a result here
                row[f"step{step}"] = f"{type(err).__name__}: {err}"[:200]
        tiles.append(row)
        print(row, flush=True)
    res["tiles"] = tiles
    res["ss2d"] = [] if args.skip_ss2d else ss2d_variants(13, 9) + ss2d_variants(16, 48)
    for r in res["ss2d"]:
        print(r["shape"], r["variant"], {k: f"{v:.1e}" for k, v in r["errors"].items()}, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
