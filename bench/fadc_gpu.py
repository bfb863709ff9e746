"""FADC's deformable convolution on a GPU: torchvision's ``deform_conv2d`` vs ``dilated_tap_conv``
(one ``grid_sample`` of the taps and one matrix product, autograd) and ``tap_conv`` (the same as the custom
op FADC runs on CUDA, columns saved, explicit backward), forward and forward+backward, at the flagship's
three difference-module shapes (issue 9 diagnosis).

    PYTHONPATH=src python bench/fadc_gpu.py --batch 32     # on a GPU, under a minute

Writes ``bench/results/fadc_gpu_<gpu>.json`` and prints a table (ms per call, median of CUDA-event timings).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from torchvision.ops import deform_conv2d

from geomamba.ops.dilated_taps import dilated_tap_conv, tap_conv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import slug, write_result

ROOT = Path(__file__).resolve().parent.parent


def timed(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def measure(c: int, s: int, batch: int, taps: torch.Tensor, dev: torch.device) -> dict:
    """Both implementations at ``(batch, c, s, s)``, fp32 and bf16 autocast, with random dilations in [1, 4]."""
    torch.manual_seed(0)
    x = torch.randn(batch, c, s, s, device=dev, requires_grad=True)
    d = (1 + 3 * torch.rand(batch, 1, s, s, device=dev)).requires_grad_()
    w = (torch.randn(c, c, 3, 3, device=dev) / (3 * c**0.5)).requires_grad_()

    def tv():
        off = ((d - 1.0) * taps).expand(batch, -1, s, s).contiguous()
        return deform_conv2d(x, off, w, None, padding=(1, 1))

    def tap():
        return dilated_tap_conv(x, d, w)

    def op():
        return tap_conv(x, d, w)

    rec: dict = {"channels": c, "size": s, "batch": batch}
    variants = (
        ("deform_conv2d", tv),
        ("dilated_tap_conv", tap),
        ("tap_conv_op", op),
    )
    for name, fn in variants:
        for amp in (False, True):
            tag = f"{name}/{'bf16' if amp else 'fp32'}"

            def fwd(fn=fn, amp=amp):
                with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=amp):
                    fn()

            def fwd_bwd(fn=fn, amp=amp):
                with torch.autocast("cuda", torch.bfloat16, enabled=amp):
                    y = fn()
                y.float().square().mean().backward()
                x.grad = d.grad = w.grad = None

            rec[f"{tag}/fwd_ms"] = round(timed(fwd), 3)
            rec[f"{tag}/fwd_bwd_ms"] = round(timed(fwd_bwd), 3)
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
        a, b = tv().float(), tap().float()
    rec["bf16_max_rel_diff"] = float((a - b).abs().max() / a.abs().max())
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("fadc_gpu needs a CUDA GPU")
        return 2
    dev = torch.device("cuda")
    taps = torch.tensor([(i - 1, j - 1) for i in range(3) for j in range(3)], dtype=torch.float32)
    taps = taps.reshape(1, -1, 1, 1).to(dev)
    rows = []
    for c, s in ((128, 64), (256, 32), (512, 16)):
        rec = measure(c, s, args.batch, taps, dev)
        rows.append(rec)
        print(json.dumps(rec), flush=True)
    name = torch.cuda.get_device_name(dev)
    out = {
        "benchmark": "fadc_gpu",
        "command": "python " + " ".join(sys.argv),
        "device": name,
        "versions": {"torch": torch.__version__},
        "rows": rows,
    }
    path = write_result(out, args.out_dir, f"fadc_gpu_{slug(name)}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
