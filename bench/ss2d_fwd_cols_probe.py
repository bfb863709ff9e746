"""Probe of the fused SS2D forward's column-major directions (session 2026-11-24, tenth; the native and
walked column tiles it times were removed again in the next commit: neither was faster).

``directions``: the forward with K = 1 (row only), 2 (row + column) and 4 directions, t3 and gather,
a few tiles, and the plain forward on the four directions' flat sequences (what rows would cost);
``native``: ``SS2DOptions(col_native=True)`` (whole-column image tiles, scans down and across) against
``col_t3``; ``walk``: ``SS2DOptions(col_walk=True)`` (all columns per tile, rows walked one by one,
twice). GPU time of graph replays, bf16, batch 16, N = 1; errors against the composed path.

    PYTHONPATH=src python bench/ss2d_fwd_cols_probe.py {directions,native,walk} OUT.json
"""

from __future__ import annotations

import json
import sys

from _sweep import bench, rel_error, ss2d_inputs
from geomamba.ops.ss2d_scan import composed_ss2d_fwd
from geomamba.ops.triton import ScanConfig as S
from geomamba.ops.triton import SS2DOptions, selective_scan_fwd, ss2d_fwd
from geomamba.ops.triton.route import _triton_backend

MAPS = {"32x32": (16, 512, 32, 32), "16x16": (16, 1024, 16, 16), "64x64": (16, 256, 64, 64)}
TILES = {
    "directions": [None, S(2, 256, 2), S(4, 256, 4), S(2, 512, 4, 2)],
    "native": [None, S(1, 256, 2), S(2, 256, 2), S(2, 512, 4), S(1, 512, 2), S(2, 1024, 4), S(4, 512, 4),
               S(1, 1024, 4), S(2, 1024, 8), S(1, 128, 1), S(2, 128, 2)],
    "walk": [None, S(1, 256, 1), S(2, 256, 2), S(4, 256, 4), S(1, 256, 1, 2), S(2, 256, 2, 2), S(2, 512, 4, 2),
             S(4, 256, 4, 2), S(2, 256, 2, 3), S(1, 256, 2, 2), S(8, 256, 4, 2), S(4, 512, 4, 3)],
}  # fmt: skip


def main(which: str, out: str) -> None:
    be, rows = _triton_backend(), []
    opts = {
        "directions": {"t3": SS2DOptions(col_t3=True), "gather": SS2DOptions()},
        "native": {"t3": SS2DOptions(col_t3=True), "native": SS2DOptions(col_native=True)},
        "walk": {"t3": SS2DOptions(col_t3=True), "walk": SS2DOptions(col_walk=True)},
    }[which]
    for name, (batch, dm, h, w) in MAPS.items():
        ins, _ = ss2d_inputs(batch, dm, h, w)
        x, delta, A, B, C, D, bias = ins
        for k in (1, 2, 4) if which == "directions" else (2, 4):
            sub = [x, delta[:, :k].contiguous(), A[: k * dm], B[:, :k].contiguous(), C[:, :k].contiguous()]
            sub += [D[: k * dm], bias[: k * dm]]
            ref = composed_ss2d_fwd(be, *sub, k)
            for oname, o in opts.items():
                tiles = TILES[which] if oname != "t3" or which == "directions" else [None]
                for cfg in tiles:
                    row = dict(
                        map=name, K=k, opt=oname, cfg=None if cfg is None else list(cfg.__dict__.values())[:4]
                    )
                    try:
                        row["err"] = rel_error(ss2d_fwd(*sub, k, config=cfg, options=o), ref)
                        row["ms"] = bench(
                            lambda c=cfg, o=o, s=sub, k=k: ss2d_fwd(*s, k, config=c, options=o), 60, True
                        )
                    except Exception as err:
                        row["error"] = repr(err)[:200]
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        if which == "directions":  # the four directions as flat rows through the plain forward
            flat = [
                x.flatten(2).repeat(1, 4, 1).contiguous(),
                delta.flatten(1, 2),
                A,
                B,
                C,
                D,
                None,
                bias,
                True,
            ]
            ms = bench(lambda f=flat: selective_scan_fwd(*f), 60, True)
            rows.append(dict(map=name, plain_K4=True, ms=ms))
    with open(out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
