"""Peak memory of predicting a large GeoTIFF pair (default 20,000 x 20,000 pixels, 3 bands) with a tiny model.

Writes the pair window by window (tiled, deflate), saves a checkpoint of a tiny untrained change model,
then runs the prediction in a fresh Python process (as ``geomamba predict`` would run, with its progress
bar) and reports that process's peak resident memory (``ru_maxrss``) and its time. Target: < 2 GB.

    PYTHONPATH=src python bench/predict_memory.py [--size 20000] [--window 512] [--threads 1]
        [--workdir DIR [--reuse]] [--keep]

Prints a summary and writes ``bench/results/predict_memory_<size>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from geomamba.models import register_model, split_bitemporal

MODEL = "bench_tiny_change_net"


class _TinyChangeNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 2, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3 * in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, num_classes, 3, padding=1),
        )

    def forward(self, x, b=None):
        a, b = split_bitemporal(x, b)
        return self.body(torch.cat([a, b, (a - b).abs()], 1))


@register_model(name=MODEL, task="change")
def bench_tiny_change_net(in_channels: int = 3, num_classes: int = 2, width: int = 8) -> _TinyChangeNet:
    return _TinyChangeNet(in_channels, num_classes, width)


def write_pair(folder: Path, size: int, rows: int = 1024) -> tuple[Path, Path]:
    """Two ``size`` x ``size`` 3-band uint8 GeoTIFFs written ``rows`` rows at a time (bounded memory)."""
    from affine import Affine
    from rasterio.crs import CRS

    from geomamba.data.io import RasterWriter

    paths = []
    cols = np.arange(size, dtype=np.int64)
    for k, name in enumerate(("A.tif", "B.tif")):
        path = folder / name
        with RasterWriter(
            path,
            height=size,
            width=size,
            count=3,
            dtype="uint8",
            crs=CRS.from_epsg(32650),
            transform=Affine(0.5, 0, 400000, 0, -0.5, 3500000),
        ) as dst:
            for r in range(0, size, rows):
                h = min(rows, size - r)
                rr = np.arange(r, r + h, dtype=np.int64)[:, None]
                base = (
                    (rr // 37 + cols[None] // 53 + 40 * k * ((rr // 500 + cols // 700) % 2)) % 200
                ).astype(np.uint8)
                dst.write(np.stack([base, base // 2 + 30, 255 - base]), r, 0)
        paths.append(path)
    return paths[0], paths[1]


def _has_pair(a: Path, b: Path, size: int) -> bool:
    from geomamba.data.io import raster_info

    try:
        return all(raster_info(p).size == (size, size) for p in (a, b))
    except Exception:
        return False


def write_checkpoint(path: Path) -> Path:
    from geomamba import __version__
    from geomamba.engine.checkpoint import atomic_save
    from geomamba.engine.config import config_to_dict, parse_config
    from geomamba.engine.module import ChangeDetectionModule

    cfg = parse_config(
        {"model": {"name": MODEL}, "data": {"mean": [100.0, 80.0, 150.0], "std": [50.0, 25.0, 50.0]}}
    )
    module = ChangeDetectionModule(config_to_dict(cfg))
    meta = {"version": __version__, "task": "change", "config": config_to_dict(cfg), "history": []}
    meta["data"] = {"dtype": "uint8", "bands": 3}
    return atomic_save({"state_dict": module.state_dict(), "geomamba": meta}, path)


def _predict(args: argparse.Namespace) -> None:
    """Child process: the prediction alone, then its own peak RSS on stdout as JSON."""
    from geomamba.engine.predict import predict_paths
    from geomamba.engine.train import setup_logging

    torch.set_num_threads(args.threads)
    setup_logging()
    t0 = time.perf_counter()
    predict_paths(
        args.checkpoint,
        args.a,
        args.b,
        args.out,
        window=args.window,
        overlap=args.overlap,
        block=args.block,
        window_batch=args.window_batch,
        device="cpu",
        progress=True,
    )
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak_rss_bytes": rss}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=20000)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--block", type=int, default=None, help="pixels per block (default 4 x window)")
    p.add_argument(
        "--window-batch", type=int, default=None, help="windows per forward pass (default: eval.window_batch)"
    )
    p.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--workdir", help="folder for the pair and the output (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    p.add_argument("--reuse", action="store_true", help="reuse the pair of an earlier run in --workdir")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--a", help=argparse.SUPPRESS)
    p.add_argument("--b", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _predict(args)
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="predict_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    a, b = work / "A.tif", work / "B.tif"
    if args.reuse and _has_pair(a, b, args.size):
        print(f"reusing the {args.size}x{args.size} pair in {work}")
    else:
        a, b = write_pair(work, args.size)
        gen_s = time.perf_counter() - t0
        print(
            f"wrote {args.size}x{args.size} pair in {gen_s:.0f} s ({a.stat().st_size / 2**20:.0f} MiB each)"
        )
    ckpt = write_checkpoint(work / "tiny.ckpt")
    out = work / "change.tif"
    cmd = [sys.executable, __file__, "--child", "--checkpoint", str(ckpt), "--a", str(a), "--b", str(b)]
    cmd += ["--out", str(out), "--window", str(args.window), "--overlap", str(args.overlap)]
    cmd += ["--threads", str(args.threads)] + (["--block", str(args.block)] if args.block else [])
    cmd += ["--window-batch", str(args.window_batch)] if args.window_batch else []
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, check=True, text=True)
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    peak = max(child["peak_rss_bytes"], rss_children)
    from geomamba.data.io import raster_info
    from geomamba.engine.config import EvalConfig

    info = raster_info(out)
    result = {
        "size": args.size,
        "pixels": args.size * args.size,
        "window": args.window,
        "overlap": args.overlap,
        "block": args.block or 4 * args.window,
        "window_batch": args.window_batch or EvalConfig().window_batch,
        "threads": args.threads,
        "predict_seconds": round(child["seconds"], 1),
        "peak_rss_mib": round(peak / 2**20, 1),
        "target_mib": 2048,
        "output": {"height": info.height, "width": info.width, "dtype": info.dtype, "crs": str(info.crs)},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    status = "OK" if peak < 2 * 2**30 else "OVER TARGET"
    print(
        f"peak RSS {result['peak_rss_mib']:.0f} MiB for {args.size}x{args.size} ({status}, target < 2048 MiB)"
    )
    res_dir = Path(__file__).resolve().parent / "results"
    res_dir.mkdir(exist_ok=True)
    suffix = f"_wb{args.window_batch}" if args.window_batch else ""
    (res_dir / f"predict_memory_{args.size}{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    if not args.keep and not args.workdir:
        for f in work.iterdir():
            f.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()
