"""The fused SS2D "lines" kernels with chunk-entry states: backward tiles, and the forward's state stores.

At the flagship's three SS2D maps (batch 16, K = 4, N = 1, bf16; 64x64 / 32x32 / 16x16 with d_inner
256 / 512 / 1024), GPU time of CUDA-graph replays:

* ``--bwd-tiles``: for each backward tile, the backward reading the states that the forward stored for
  that tile's chunk, the same tile recomputing them, the forward storing them, and the gradients' error
  against the default backward (what chose ``ss2d_launch._BWD_LINES_N1_BY_PIXELS``);
* ``--fwd-states``: the forward storing its states by masked sums per chunk segment
  (``ss2d_launch.STATES_BY_SUM = True``, the default) or by masked per-element stores, and storing none;
* ``--fwd-tiles``: the forward (storing the default backward's states) with each tile of chunk >= the
  states' interval, its output and states against the default tile's.
* ``--dt-tiles``: dt_proj fused (``dt_weight``, rank d_model / 16 = 8 / 16 / 32): the forward per tile
  against ``project_dt`` + the forward on the projected delta, the backward per tile (chunk 64, reading
  the states) against the backward on the projected delta; both phases' errors against the unfused
  ones, and the time of dt_proj's gradients from ddelta (``ss2d_scan._dt_grads``, the same either way).
  (What chose ``ss2d_launch._FWD_LINES_DT_N1_BY_PIXELS`` / ``_BWD_LINES_DT_N1_BY_PIXELS``.)

Writes ``bench/results/ss2d_lines_{bwd_sweep,fwd_states,fwd_sweep,dt_sweep}_gpu_<gpu>.json`` (or ``--out``).

    PYTHONPATH=src:bench python bench/ss2d_lines_sweep_gpu.py --bwd-tiles | --fwd-states | --fwd-tiles | --dt-tiles
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from pathlib import Path

import torch

import geomamba.ops.triton.ss2d_launch as sl
from _sweep import bench, header, rel_error
from geomamba.ops.cross_scan import to_line_order
from geomamba.ops.triton import ScanConfig, ss2d_bwd, ss2d_fwd
from scan_gpu import ss2d_inputs

MAPS = ((256, 64), (512, 32), (1024, 16))
TILES = [(4, 64, 1, 3), (2, 64, 1, 3), (8, 64, 1, 3), (4, 64, 2, 3), (4, 128, 1, 3), (2, 128, 1, 3),
         (4, 128, 2, 3), (8, 128, 2, 3), (2, 256, 1, 3), (4, 256, 2, 3), (4, 32, 1, 3), (8, 64, 2, 3)]  # fmt: skip


def _time(fn, *args, **kwargs) -> float:
    return bench(functools.partial(fn, *args, **kwargs), graphs=True)


def _lines_args(dm, h):
    s = ss2d_inputs(16, dm, h, h, 1, 4, torch.bfloat16, "cuda")
    keys = ("delta", "A", "B", "C", "D", "delta_bias")
    rest = (to_line_order(s[k], h, h).contiguous() if k in ("delta", "B", "C") else s[k] for k in keys)
    return (s["x"], *rest, 4), torch.randn_like(s["x"])


def bwd_tiles() -> list[dict]:
    rows, default_chunk = [], sl._states_chunk
    for dm, h in MAPS:
        args, dy = _lines_args(dm, h)
        ref = ss2d_bwd(dy, *args, layout="lines")
        for tile in TILES:
            cfg = ScanConfig(*tile)
            sl._states_chunk = lambda *a, c=cfg.chunk: c  # states stored for this tile's chunk
            st = ss2d_fwd(*args, layout="lines", return_states=True)[1]
            grads = ss2d_bwd(dy, *args, layout="lines", states=st, config=cfg)
            err = max(rel_error(g, r) for g, r in zip(grads, ref) if r is not None)
            row = dict(
                dm=dm, h=h, tile=tile, st=list(st.shape), err=err,
                bwd_states_ms=_time(ss2d_bwd, dy, *args, layout="lines", states=st, config=cfg),
                bwd_recompute_ms=_time(ss2d_bwd, dy, *args, layout="lines", config=cfg),
                fwd_states_ms=_time(ss2d_fwd, *args, layout="lines", return_states=True),
            )  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
        sl._states_chunk = default_chunk
    return rows


def fwd_states() -> list[dict]:
    rows = []
    for dm, h in MAPS:
        args, _ = _lines_args(dm, h)
        row, sts = dict(dm=dm, h=h), {}
        for by_sum in (True, False):
            sl.STATES_BY_SUM = by_sum
            sts[by_sum] = ss2d_fwd(*args, layout="lines", return_states=True)[1]
            row[f"fwd_states_sum{int(by_sum)}_ms"] = _time(
                ss2d_fwd, *args, layout="lines", return_states=True
            )
        sl.STATES_BY_SUM = True
        row["states_equal"] = bool(torch.equal(sts[True], sts[False]))
        row["fwd_none_ms"] = _time(ss2d_fwd, *args, layout="lines")
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def fwd_tiles() -> list[dict]:
    rows = []
    for dm, h in MAPS:
        args, _ = _lines_args(dm, h)
        sc = sl._states_chunk(1, dm, h, h, 4, "lines")
        y0, st0 = ss2d_fwd(*args, layout="lines", return_states=True)
        cfg0 = sl._ss2d_launch_geometry(1, dm, h, h, False, None, sl.SS2D_DEFAULTS["forward_lines"])[1]
        row = dict(dm=dm, h=h, tile="default", cfg=str(cfg0))
        row["ms"] = _time(ss2d_fwd, *args, layout="lines", return_states=True)
        print(json.dumps(row), flush=True)
        rows.append(row)
        for tile in TILES:
            cfg = ScanConfig(*tile)
            if cfg.chunk < sc or cfg.chunk % sc:
                continue
            y, st = ss2d_fwd(*args, layout="lines", return_states=True, config=cfg)
            row = dict(
                dm=dm, h=h, tile=tile, err_y=rel_error(y, y0), err_states=rel_error(st, st0),
                ms=_time(ss2d_fwd, *args, layout="lines", return_states=True, config=cfg),
            )  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


# (a first run also had forward 8 x 64, 16 x 64 / 2 warps, 16 x 128, 32 x 64 and backward 4 x 64, 8 x 64 /
# 2 warps, 16 x 64 / 1 and 4 warps, 32 x 64: none better; bench/NOTES_triton.md round 12)
DT_FWD_TILES = [None, (4, 256, 4, 3), (16, 64, 1, 3), (16, 64, 4, 3), (16, 256, 4, 3)]
DT_BWD_TILES = [None, (8, 64, 1, 3), (16, 64, 2, 3)]


def dt_tiles() -> list[dict]:
    from geomamba.ops.ss2d_scan import _dt_grads, project_dt

    rows = []
    for dm, h in MAPS:
        args, dy = _lines_args(dm, h)
        x, delta, rest = args[0], args[1], args[2:]
        r = dm // 32  # dt_rank = ceil(d_model / 16), d_model = dm / 2
        dts = (torch.randn(x.shape[0], 4, r, h * h, device="cuda") * 0.5).to(x.dtype)
        dt_w = torch.randn(4, dm, r, device="cuda") * r**-0.5
        delta = project_dt(dts, dt_w)
        y0, st = ss2d_fwd(x, delta, *rest, layout="lines", return_states=True)
        g0 = ss2d_bwd(dy, x, delta, *rest, layout="lines", states=st)
        base = dict(dm=dm, h=h, r=r)

        def unfused_fwd(x=x, dts=dts, dt_w=dt_w, rest=rest):
            return ss2d_fwd(x, project_dt(dts, dt_w), *rest, layout="lines", return_states=True)

        base["fwd_unfused_ms"] = _time(unfused_fwd)
        base["fwd_kernel_unfused_ms"] = _time(ss2d_fwd, x, delta, *rest, layout="lines", return_states=True)
        base["bwd_unfused_ms"] = _time(ss2d_bwd, dy, x, delta, *rest, layout="lines", states=st)
        base["dt_grads_ms"] = _time(_dt_grads, g0[1], dts, dt_w)
        print(json.dumps(base), flush=True)
        rows.append(base)
        kw = dict(layout="lines", dt_weight=dt_w)
        for tile in DT_FWD_TILES:
            cfg = None if tile is None else ScanConfig(*tile)
            y, st_dt = ss2d_fwd(x, dts, *rest, **kw, return_states=True, config=cfg)
            row = dict(dm=dm, h=h, phase="fwd", tile=tile or "default", err_y=rel_error(y, y0),
                       err_states=rel_error(st_dt, st),
                       ms=_time(ss2d_fwd, x, dts, *rest, **kw, return_states=True, config=cfg))  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
        for tile in DT_BWD_TILES:
            cfg = None if tile is None else ScanConfig(*tile)
            g = ss2d_bwd(dy, x, dts, *rest, **kw, states=st, config=cfg)
            err = max(rel_error(a, b) for a, b in zip(g, g0) if b is not None)
            row = dict(dm=dm, h=h, phase="bwd", tile=tile or "default", err=err,
                       ms=_time(ss2d_bwd, dy, x, dts, *rest, **kw, states=st, config=cfg))  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--bwd-tiles", action="store_true", help="backward tiles reading the states")
    mode.add_argument("--fwd-states", action="store_true", help="the forward's ways of storing the states")
    mode.add_argument("--fwd-tiles", action="store_true", help="forward tiles (storing the states)")
    mode.add_argument("--dt-tiles", action="store_true", help="tiles with dt_proj fused, against unfused")
    p.add_argument("--out", type=Path, default=None, help="JSON path")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("ss2d_lines_sweep_gpu.py needs a CUDA GPU (it times the Triton kernels)")
    if args.dt_tiles:
        rows, name = dt_tiles(), "dt_sweep"
    else:
        rows = bwd_tiles() if args.bwd_tiles else fwd_tiles() if args.fwd_tiles else fwd_states()
        name = "bwd_sweep" if args.bwd_tiles else "fwd_sweep" if args.fwd_tiles else "fwd_states"
    slug = re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name().lower()).strip("_")
    path = args.out or Path(__file__).resolve().parent / "results" / f"ss2d_lines_{name}_gpu_{slug}.json"
    path.write_text(json.dumps(header([], rows=rows), indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
