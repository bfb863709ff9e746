"""The fused SS2D launchers' layout copies on the GPU: the 2-D tiled copies against the 3-D tiled
``permuted_copy_`` that writes / reads the channels-last map.

For the flagship's three SS2D maps (batch 16, D = d_inner 256 / 512 / 1024, 64x64 / 32x32 / 16x16, bf16),
replayed from CUDA graphs (GPU time), with the bytes each copy must move over its time:

* ``merge_cf``: ``y = acc + accT^T`` channels-first (``strided_copy_``, the default before the
  channels-last output) and ``dyT``: ``transposed(dy)``: the two copies the channels-last path replaces;
* ``merge_cl``: the same sum into a channels-last y, and ``split``: a channels-last dy into its
  channels-first copy and dy^T in one pass (``permuted_copy_``), for each ``(C, H, W)`` tile and warps of
  a small sweep (checked bit for bit against PyTorch).

    PYTHONPATH=src:bench python bench/copy3_gpu.py [OUT.json]
"""

from __future__ import annotations

import json
import sys

import torch

from _sweep import bench, best_overall, copy_gbs, header
from geomamba.ops.triton.copy import permuted_copy_, strided_copy_, transposed

SHAPES = [("stage1", 16, 256, 64, 64), ("stage2", 16, 512, 32, 32), ("stage3", 16, 1024, 16, 16)]
TILES = [
    (32, 16, 16, 4),
    (32, 16, 16, 8),
    (16, 32, 32, 4),
    (16, 32, 32, 8),
    (32, 32, 32, 8),
    (64, 16, 16, 8),
    (32, 16, 32, 4),
    (32, 32, 16, 4),
    (16, 16, 64, 4),
    (16, 64, 16, 4),
    (64, 32, 32, 16),
]


def run_shape(name, batch, c, h, w):
    bf16, dev = torch.bfloat16, "cuda"
    acc = torch.randn(batch, c, h, w, device=dev).to(bf16)
    accT = torch.randn(batch, c, w, h, device=dev).to(bf16)
    dy_cl = torch.randn(batch, c, h, w, device=dev).to(bf16).contiguous(memory_format=torch.channels_last)
    want_y = (accT.transpose(-1, -2).float() + acc.float()).to(bf16)
    y_cf = torch.empty(batch, c, h, w, device=dev, dtype=bf16)
    y_cl = torch.empty_like(y_cf, memory_format=torch.channels_last)
    dy_cf, dyT = torch.empty_like(y_cf), torch.empty(batch, c, w, h, device=dev, dtype=bf16)
    elem = acc.numel() * 2  # bytes of one map
    row = dict(shape=name, batch=batch, C=c, H=h, W=w, map_mb=elem / 2**20)

    def merge_cf():
        strided_copy_(y_cf, accT.transpose(-1, -2), add=acc, tiled=True)

    def transpose_dy():
        transposed(acc, tiled=True)

    merge_cf()
    assert torch.equal(y_cf, want_y)
    row["merge_cf_ms"] = bench(merge_cf, graphs=True)
    row["transpose_ms"] = bench(transpose_dy, graphs=True)
    row["merge_cf_tbs"] = 3 * elem / row["merge_cf_ms"] / 1e9
    row["transpose_tbs"] = 2 * elem / row["transpose_ms"] / 1e9
    print(
        f"{name}: 2-D merge {row['merge_cf_ms'] * 1e3:.1f} us ({row['merge_cf_tbs']:.2f} TB/s), "
        f"transpose {row['transpose_ms'] * 1e3:.1f} us ({row['transpose_tbs']:.2f} TB/s)",
        flush=True,
    )
    tiles = []
    for bc, bh, bw, warps in TILES:
        kw = dict(tiled=True, tile=(bc, bh, bw), num_warps=warps)

        def merge(kw=kw):
            permuted_copy_(y_cl, accT.transpose(-1, -2), add=acc, **kw)

        def split(kw=kw):
            permuted_copy_(dy_cf, dy_cl, dst2=dyT.transpose(-1, -2), **kw)

        try:
            y_cl.zero_(), dy_cf.zero_(), dyT.zero_()
            merge(), split()
        except Exception as exc:  # a tile that does not compile is reported, not timed
            print(name, (bc, bh, bw, warps), "failed", type(exc).__name__, str(exc)[:300], flush=True)
            continue
        ok = (
            torch.equal(y_cl, want_y)
            and torch.equal(dy_cf, dy_cl)
            and torch.equal(dyT, dy_cl.transpose(-1, -2))
        )
        t = dict(tile=[bc, bh, bw], warps=warps, exact=ok)
        t["merge_ms"], t["split_ms"] = bench(merge, graphs=True), bench(split, graphs=True)
        t["merge_tbs"], t["split_tbs"] = 3 * elem / t["merge_ms"] / 1e9, 3 * elem / t["split_ms"] / 1e9
        tiles.append(t)
        print(
            f"{name} {(bc, bh, bw)} w{warps}: merge {t['merge_ms'] * 1e3:.1f} us ({t['merge_tbs']:.2f} TB/s) "
            f"split {t['split_ms'] * 1e3:.1f} us ({t['split_tbs']:.2f} TB/s) exact {ok}",
            flush=True,
        )
    row["tiles"] = tiles
    best = min(tiles, key=lambda t: t["merge_ms"] + t["split_ms"])
    row["best"] = dict(tile=best["tile"], warps=best["warps"])
    print(
        f"{name}: best {best['tile']} w{best['warps']}: merge + split "
        f"{(best['merge_ms'] + best['split_ms']) * 1e3:.1f} us against 2-D merge + transpose "
        f"{(row['merge_cf_ms'] + row['transpose_ms']) * 1e3:.1f} us",
        flush=True,
    )
    return row


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "copy3_gpu.json"
    copy_tbs = copy_gbs(bench) / 1e3
    print(f"copy bandwidth {copy_tbs:.2f} TB/s", flush=True)
    rows = [run_shape(*shape) for shape in SHAPES]
    best, ms = best_overall(
        rows, "tiles", lambda t: (*t["tile"], t["warps"]), lambda t: t["merge_ms"] + t["split_ms"]
    )
    print("best overall", best, f"{ms * 1e3:.1f} us", flush=True)
    json.dump(
        header([], copy_tbs=copy_tbs, best_overall=list(best), rows=rows), open(out_path, "w"), indent=1
    )


if __name__ == "__main__":
    main()
