"""Launch the fused SS2D kernels with their default options once per case, for ``compute-sanitizer``.

Our kernels use no shared memory themselves: every shared-memory hazard that ``racecheck`` reports is in
code Triton generated (layout conversions). Round 2 found 40 of them in the transposed-tile backward.

    compute-sanitizer --tool racecheck python bench/racecheck_defaults.py --phase forward
"""

from __future__ import annotations

import argparse
import sys

import torch

from geomamba.ops.triton import ss2d_bwd, ss2d_fwd

# (batch, d_inner, H, W, N): the maps of the GPU tests and the flagship's (tiny batch and width)
CASES = [(1, 2, 13, 9, 1), (1, 2, 20, 3, 4), (1, 2, 16, 16, 1), (1, 2, 32, 32, 1), (1, 2, 64, 64, 1)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phase", choices=["forward", "backward"], required=True)
    args = p.parse_args(argv)
    for batch, dm, h, w, n in CASES:
        k, length = 4, h * w
        x = torch.randn(batch, dm, h, w, device="cuda")
        ins = (
            x, torch.randn(batch, k, dm, length, device="cuda") * 0.5 - 1.0, -torch.rand(k * dm, n, device="cuda") - 0.1,
            torch.randn(batch, k, n, length, device="cuda"), torch.randn(batch, k, n, length, device="cuda"),
            torch.randn(k * dm, device="cuda"), torch.randn(k * dm, device="cuda"),
        )  # fmt: skip
        if args.phase == "forward":
            ss2d_fwd(*ins, k)
        else:
            ss2d_bwd(torch.randn_like(x), *ins, k)
        torch.cuda.synchronize()
        print(f"{args.phase} {h}x{w} N={n} done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
