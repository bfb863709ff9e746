"""The SS2D layer's depthwise conv + SiLU on the GPU: Triton kernels (``ops.dwconv_silu``) against PyTorch.

For the flagship's three SS2D layers (batch 16, 64x64 / 32x32 / 16x16 maps, d_inner 256 / 512 / 1024, 3x3,
bf16), forward and forward + backward replayed from CUDA graphs (GPU time):

* ``torch``: ``F.silu(conv2d(x.permute(0, 3, 1, 2))).contiguous()`` under ``torch.compile`` (cuDNN's
  channels-last depthwise convolution, its dgrad and wgrad, inductor's SiLU / layout / bias-gradient
  kernels), as the layer ran it before;
* ``triton`` with each tile ``(P pixels, CB channels, warps)`` of a small sweep, checked against the fp64
  reference (relative errors of y, dx, dweight, dbias).

Also the bytes the Triton path must move (x and y once forward; dy, x, the SiLU gradient written and read
back, dx; and
the library's wgrad reads gs and x again) backward) over its time. Prints a table and writes JSON.

    PYTHONPATH=src:bench python bench/dwconv_gpu.py [OUT.json]
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F

from _sweep import bench, best_overall, header, rel_error
from geomamba.ops.dwconv_silu import dwconv_silu_reference
from geomamba.ops.triton import dwconv

SHAPES = [("stage1", 16, 256, 64, 64), ("stage2", 16, 512, 32, 32), ("stage3", 16, 1024, 16, 16)]
TILES = [
    (64, 64, 4),
    (32, 64, 4),
    (128, 32, 4),
    (64, 32, 2),
    (32, 32, 2),
    (128, 64, 8),
    (16, 128, 4),
    (32, 128, 4),
]


def torch_path(x, w, b):
    return F.silu(
        F.conv2d(x.permute(0, 3, 1, 2), w.to(x.dtype), b.to(x.dtype), padding=1, groups=x.shape[-1])
    )


def run_shape(name, batch, c, h, w, dev):
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, h, w, c, generator=g).to(dev, torch.bfloat16).requires_grad_()
    wt = (torch.randn(c, 1, 3, 3, generator=g) / 3).to(dev).requires_grad_()
    bs = torch.randn(c, generator=g).to(dev).requires_grad_()
    dy = torch.randn(batch, c, h, w, generator=g).to(dev, torch.bfloat16)
    elems = batch * c * h * w
    ref_in = [t.detach().double().requires_grad_() for t in (x, wt, bs)]
    ref = dwconv_silu_reference(*ref_in)
    ref_g = torch.autograd.grad(ref, ref_in, dy.double())

    compiled = torch.compile(torch_path)

    def t_fwd():
        with torch.no_grad():
            compiled(x, wt, bs).contiguous()

    def t_step():
        x.grad = wt.grad = bs.grad = None  # (no accumulation kernels: the Triton path returns fresh ones)
        y = compiled(x, wt, bs).contiguous()
        torch.autograd.backward(y, dy)

    t_step()
    t_fwd()
    row = dict(shape=name, batch=batch, C=c, H=h, W=w)
    row["torch_fwd_ms"] = bench(t_fwd, graphs=True)
    row["torch_step_ms"] = bench(t_step, graphs=True)
    print(f"{name} torch fwd {row['torch_fwd_ms']:.4f} fwd+bwd {row['torch_step_ms']:.4f} ms", flush=True)
    tiles = []
    for tile in TILES:
        try:
            y = dwconv.dwconv_silu_fwd(x.detach(), wt, bs, tile=tile)
            dx, dw, db = dwconv.dwconv_silu_bwd(dy, x.detach(), wt, bs, tile=tile)
        except Exception as exc:  # a tile that does not compile is reported, not timed
            print(name, tile, "failed", type(exc).__name__, str(exc)[:300], flush=True)
            continue
        errs = dict(
            y=rel_error(y.float(), ref),
            dx=rel_error(dx.float(), ref_g[0]),
            dweight=rel_error(dw, ref_g[1]),
            dbias=rel_error(db, ref_g[2]),
        )
        fwd = bench(lambda tile=tile: dwconv.dwconv_silu_fwd(x.detach(), wt, bs, tile=tile), graphs=True)
        bwd = bench(lambda tile=tile: dwconv.dwconv_silu_bwd(dy, x.detach(), wt, bs, tile=tile), graphs=True)
        fwd_bytes, bwd_bytes = 4 * elems, 12 * elems
        tiles.append(
            dict(
                tile=list(tile),
                fwd_ms=fwd,
                bwd_ms=bwd,
                step_ms=fwd + bwd,
                fwd_tbs=fwd_bytes / fwd / 1e9,
                bwd_tbs=bwd_bytes / bwd / 1e9,
                errs=errs,
            )
        )
        print(
            f"{name} triton {tile} fwd {fwd:.4f} bwd {bwd:.4f} step {fwd + bwd:.4f} ms "
            f"({fwd_bytes / fwd / 1e9:.2f} / {bwd_bytes / bwd / 1e9:.2f} TB/s) errs "
            + " ".join(f"{k} {v:.1e}" for k, v in errs.items()),
            flush=True,
        )
    row["triton"] = tiles
    best = min(tiles, key=lambda t: t["step_ms"])
    row["best_tile"] = best["tile"]
    print(
        f"{name}: best tile {best['tile']} step {best['step_ms']:.4f} ms vs torch {row['torch_step_ms']:.4f} "
        f"({row['torch_step_ms'] / best['step_ms']:.2f}x)",
        flush=True,
    )
    torch._dynamo.reset()
    return row


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "dwconv_gpu.json"
    dev = torch.device("cuda")
    rows = [run_shape(*shape, dev) for shape in SHAPES]
    # one default for all maps: least summed time over the shapes
    best = {
        f"{phase}_tile": best_overall(
            rows, "triton", lambda t: tuple(t["tile"]), lambda t, p=phase: t[f"{p}_ms"]
        )[0]
        for phase in ("fwd", "bwd")
    }
    print("best overall", best, flush=True)
    json.dump(
        header([], best_overall={k: list(v) for k, v in best.items()}, rows=rows),
        open(out_path, "w"),
        indent=1,
    )


if __name__ == "__main__":
    main()
