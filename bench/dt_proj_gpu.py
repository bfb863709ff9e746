"""SS2D's dt_proj backward on the GPU: the one-pass Triton kernel (``ops.dt_proj``) against autograd's two
matrix products.

For the flagship's three SS2D layers (batch 16, K = 4, L = 64x64 / 32x32 / 16x16, D = d_inner 256 / 512 /
1024, R = dt_rank 8 / 16 / 32, bf16, dts a split of x_proj's output as in ``SS2DCore``), replayed from CUDA
graphs (GPU time):

* ``torch``: ``torch.matmul(weight, dts)`` forward + backward under ``torch.compile`` (cuBLAS; ddelta read
  by both products), and its backward alone (step minus forward);
* ``triton``: the same forward, backward by ``dt_proj_bwd`` with each tile ``(DC, LB, warps, stages)`` of a small
  sweep (and pipeline stages) and programs per SM, checked against fp64 products; the backward alone, with the bytes it must move (ddelta once, dts,
  ddts) over its time.

    PYTHONPATH=src:bench python bench/dt_proj_gpu.py [OUT.json]
"""

from __future__ import annotations

import json
import sys

import torch

from _sweep import bench, best_overall, header, rel_error
from geomamba.ops.dt_proj import dt_proj, dt_proj_reference
from geomamba.ops.triton import dt_proj as kernel

SHAPES = [("stage1", 16, 4, 256, 8, 4096), ("stage2", 16, 4, 512, 16, 1024), ("stage3", 16, 4, 1024, 32, 256)]
TILES = [
    (512, 32, 8, 3),
    (512, 32, 8, 4),
    (512, 64, 8, 3),
    (256, 64, 8, 3),
    (256, 64, 8, 4),
    (256, 32, 8, 4),
    (128, 64, 4, 4),
]
WAVES = [1, 2, 4]


def run_shape(name, batch, k, d, r, length):
    g = torch.Generator(device="cpu").manual_seed(0)
    wide = torch.randn(batch, k, r + 2, length, generator=g).cuda().to(torch.bfloat16)
    dts = wide[:, :, :r].requires_grad_(False)
    wt = (torch.randn(k, d, r, generator=g) / r**0.5).cuda().to(torch.bfloat16)
    dd = torch.randn(batch, k, d, length, generator=g).cuda().to(torch.bfloat16)
    want_x = torch.matmul(wt.double().transpose(-1, -2), dd.double())
    want_w = torch.matmul(dd.double(), dts.double().transpose(-1, -2)).sum(0)
    row = dict(shape=name, batch=batch, K=k, D=d, R=r, L=length)
    for path, fn in (("torch", dt_proj_reference), ("triton_op", dt_proj)):
        wl, xl = wt.clone().requires_grad_(), dts.clone().requires_grad_()
        compiled = torch.compile(fn)

        def fwd(compiled=compiled, wl=wl, xl=xl):
            with torch.no_grad():
                compiled(wl, xl)

        def step(compiled=compiled, wl=wl, xl=xl):
            wl.grad = xl.grad = None
            torch.autograd.backward(compiled(wl, xl), dd)

        step()
        fwd()
        row[f"{path}_fwd_ms"] = bench(fwd, graphs=True)
        row[f"{path}_step_ms"] = bench(step, graphs=True)
        row[f"{path}_bwd_ms"] = row[f"{path}_step_ms"] - row[f"{path}_fwd_ms"]
        row[f"{path}_errs"] = dict(
            ddts=rel_error(xl.grad.float(), want_x), dweight=rel_error(wl.grad.float(), want_w)
        )
        print(
            f"{name} {path:9} fwd {row[f'{path}_fwd_ms']:.4f} step {row[f'{path}_step_ms']:.4f} "
            f"bwd {row[f'{path}_bwd_ms']:.4f} ms errs {row[f'{path}_errs']}",
            flush=True,
        )
        torch._dynamo.reset()
    nbytes = 2 * (dd.numel() + 2 * dts.numel())
    tiles = []
    for tile, waves in ((t, w) for t in TILES for w in WAVES):
        try:
            gx, gw = kernel.dt_proj_bwd(dd, wt, dts, tile=tile, waves=waves)
        except Exception as exc:  # a tile that does not compile is reported, not timed
            print(name, tile, waves, "failed", type(exc).__name__, str(exc)[:300], flush=True)
            continue
        errs = dict(ddts=rel_error(gx.float(), want_x), dweight=rel_error(gw.float(), want_w))
        ms = bench(
            lambda tile=tile, w=waves: kernel.dt_proj_bwd(dd, wt, dts, tile=tile, waves=w), graphs=True
        )
        tiles.append(dict(tile=list(tile), waves=waves, bwd_ms=ms, tbs=nbytes / ms / 1e9, errs=errs))
        print(
            f"{name} kernel {tile} waves {waves} {ms:.4f} ms ({nbytes / ms / 1e9:.2f} TB/s) errs {errs}",
            flush=True,
        )
    row["kernel"] = tiles
    best = min(tiles, key=lambda t: t["bwd_ms"])
    row["best_tile"], row["best_waves"] = best["tile"], best["waves"]
    print(
        f"{name}: kernel best {best['tile']} waves {best['waves']} {best['bwd_ms']:.4f} ms; backward torch {row['torch_bwd_ms']:.4f} "
        f"vs op {row['triton_op_bwd_ms']:.4f} ms",
        flush=True,
    )
    return row


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "dt_proj_gpu.json"
    rows = [run_shape(*shape) for shape in SHAPES]
    best, _ = best_overall(rows, "kernel", lambda t: (*t["tile"], t["waves"]), lambda t: t["bwd_ms"])
    print("best overall", best, flush=True)
    json.dump(header([], best_overall=list(best), rows=rows), open(out_path, "w"), indent=1)


if __name__ == "__main__":
    main()
