"""Probe: what inductor pays if the SS2D scan op took x's transpose and returned its two partial sums.

The fused "lines" kernels scan the column-major directions on ``xT`` (x transposed in each channel's plane)
and sum them into ``accT`` (column-major); the launchers copy x -> xT, merge ``y = acc + accT^T``, and in the
backward copy x -> xT and dy -> dyT and merge dx the same way (five tiled copies: 66 us of the 0.91 ms
compiled layer step at 32x32 on an H100, bench/NOTES_triton.md round 11). If instead the op took ``xT`` as
an input and returned ``(acc, accT)``, the layer's code would write ``xT`` and ``acc + accT^T`` and
torch.compile could fold the transposes into kernels it runs anyway (the conv's SiLU kernel, the
LayerNorm forward / backward, the SiLU backward).

This probe times the compiled layer (batch 16, the flagship's three maps, bf16 autocast, forward + backward
replayed from a CUDA graph) with the scan replaced by ops that do no work (``torch.empty_like`` outputs and
gradients), in the two forms: ``op`` (x -> y, as now) and ``split`` (x, xT -> acc, accT). The difference
is what inductor's kernels would pay for the transposes; the copies they replace are in the real layer's
profile (``real``, also timed here).

    PYTHONPATH=src:bench python bench/ss2d_split_probe_gpu.py [OUT.json]
"""

from __future__ import annotations

import json
import sys

import torch
from torch import Tensor

import geomamba.layers.ss2d as ss2d_layer
from _sweep import bench, header
from geomamba.layers.ss2d import SS2D, contiguous_keep_grad_format
from geomamba.ops.cross_scan import to_line_order
from layer_profile_gpu import kernel_profile


@torch.library.custom_op("probe::scan1", mutates_args=())
def scan1(x: Tensor, delta: Tensor, B: Tensor, C: Tensor) -> Tensor:
    return torch.empty_like(x)


@scan1.register_fake
def _(x, delta, B, C):
    return torch.empty_like(x)


@torch.library.custom_op("probe::scan1_bwd", mutates_args=())
def scan1_bwd(
    dy: Tensor, x: Tensor, delta: Tensor, B: Tensor, C: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return tuple(torch.empty_like(t) for t in (x, delta, B, C))


@scan1_bwd.register_fake
def _(dy, x, delta, B, C):
    return tuple(torch.empty_like(t) for t in (x, delta, B, C))


def _s1_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _s1_backward(ctx, dy):
    return scan1_bwd(dy.contiguous(), *ctx.saved_tensors)


scan1.register_autograd(_s1_backward, setup_context=_s1_setup)


@torch.library.custom_op("probe::scan2", mutates_args=())
def scan2(x: Tensor, xT: Tensor, delta: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(xT)


@scan2.register_fake
def _(x, xT, delta, B, C):
    return torch.empty_like(x), torch.empty_like(xT)


@torch.library.custom_op("probe::scan2_bwd", mutates_args=())
def scan2_bwd(
    dy: Tensor, dyT: Tensor, x: Tensor, xT: Tensor, delta: Tensor, B: Tensor, C: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return tuple(torch.empty_like(t) for t in (x, xT, delta, B, C))


@scan2_bwd.register_fake
def _(dy, dyT, x, xT, delta, B, C):
    return tuple(torch.empty_like(t) for t in (x, xT, delta, B, C))


def _s2_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _s2_backward(ctx, dy, dyT):
    return scan2_bwd(dy.contiguous(), dyT.contiguous(), *ctx.saved_tensors)


scan2.register_autograd(_s2_backward, setup_context=_s2_setup)


class ProbeSS2D(SS2D):
    mode = "real"

    def forward(self, x):
        x = self.in_proj(x)
        x = torch.nn.functional.silu(self.conv2d(x.permute(0, 3, 1, 2)))
        y = self.core(x) if self.mode == "real" else self._probe_core(x)
        return self.out_proj(self.out_norm(y.permute(0, 2, 3, 1)))

    def _probe_core(self, x):
        core = self.core
        k, r, n = core.directions, core.dt_rank, core.d_state
        b, d, h, w = x.shape
        x = contiguous_keep_grad_format(x)
        x_dbl = torch.matmul(core.x_proj_weight.to(x.dtype).reshape(-1, d), x.view(b, d, h * w))
        x_dbl = to_line_order(x_dbl.view(b, k, r + 2 * n, h * w), h, w)
        dts, bs, cs = torch.split(x_dbl, [r, n, n], dim=2)
        dts = torch.matmul(core.dt_projs_weight.to(dts.dtype), dts)
        bs, cs = bs.contiguous(), cs.contiguous()
        if self.mode == "op":
            return scan1(x, dts, bs, cs)
        xT = x.transpose(-1, -2).contiguous()
        acc, accT = scan2(x, xT, dts, bs, cs)
        return acc + accT.transpose(-1, -2)


SHAPES = [("stage1", 16, 128, 64, 64), ("stage2", 16, 256, 32, 32), ("stage3", 16, 512, 16, 16)]


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "ss2d_split_probe_gpu.json"
    modes = ["real", "op", "split", "split_nd"]
    dev = torch.device("cuda")
    rows = []
    assert ss2d_layer.CUDA_SCAN_LAYOUT == "lines"
    for name, batch, d_model, h, w in SHAPES:
        for mode in modes:
            torch.manual_seed(0)
            layer = ProbeSS2D(d_model, d_state=1, backend="triton").to(dev)
            layer.mode = mode.replace("_nd", "")
            # split_nd: inductor prefers n-d tiles and tiles reductions too (both off by default)
            nd = mode.endswith("_nd")
            for opt in ("prefer_nd_tiling", "tile_reductions"):
                if hasattr(torch._inductor.config.triton, opt):
                    setattr(torch._inductor.config.triton, opt, nd)
            x = torch.randn(batch, h, w, d_model, device=dev, requires_grad=True)
            compiled = torch.compile(layer)
            params = [x, *layer.parameters()]

            def step(compiled=compiled, x=x, params=params):
                for p in params:
                    p.grad = None
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = compiled(x)
                out.float().sum().backward()

            step()
            step()
            row = dict(shape=name, mode=mode, step_ms=bench(step, graphs=True))
            prof = kernel_profile(step, 3, dev)
            row["by_kind"] = prof["by_kind"]
            row["launches"] = prof["launches"]
            row["kernels"] = [(k["name"][:100], k["us"], k["calls"]) for k in prof["kernels"][:40]]
            rows.append(row)
            print(
                f"{name} {mode:6} step {row['step_ms']:.3f} ms launches {row['launches']} "
                + " ".join(f"{k}:{d['us']:.0f}" for k, d in prof["by_kind"].items()),
                flush=True,
            )
            for kname, us, calls in row["kernels"][:30]:
                if mode == "real" or kname.startswith("triton"):
                    print(f"     {us:7.2f} {calls:4.1f} {kname}", flush=True)
            torch._dynamo.reset()
    json.dump(header([], rows=rows), open(out_path, "w"), indent=1)


if __name__ == "__main__":
    main()
