"""The compiled SS2D layer's step under variants of its convolution's layout and of the scan's partial sums.

The flagship's three SS2D layers (batch 16, 64x64 / 32x32 / 16x16, d_model 128 / 256 / 512, N = 1, K = 4,
bf16 autocast, ``torch.compile``), forward + backward replayed from a CUDA graph, with a kernel profile
by kind (``layer_profile_gpu.kernel_profile``) and the output / gradient errors against the first variant:

* ``cl`` (the layer as it is): in_proj -> depthwise conv on the channels-last map -> SiLU, then
  ``SS2DCore`` copies it channels-first (one inductor kernel with the SiLU);
* ``cf``: in_proj writes the map channels-first (one matmul on the transposed tokens), cuDNN's NCHW conv;
* ``taps_cl`` / ``taps_cf``: the depthwise 3x3 conv as nine shifted products in PyTorch ops, fused by
  inductor with the SiLU and the layout change (channels-last / channels-first input);
* suffix ``_fp32``: the fused SS2D kernels keep their partial sums of y / dx in fp32
  (``SS2DOptions.partials_fp32``);
* suffix ``_dt``: dt_proj inside the fused kernels (``SS2DCore.fuse_dt_proj``) instead of its own matmul;
* ``tconv``: the depthwise conv + SiLU as the Triton kernels of ``ops.dwconv_silu``
  (``SS2D(conv_backend="triton")``); ``cl`` is the default ``conv_backend="torch"``;
* suffix ``_mm``: dt_proj's backward as autograd's two matrix products (``dt_proj_reference``) instead of
  the one-pass Triton kernel of ``ops.dt_proj``;
* suffix ``_xmm``: x_proj as ``torch.matmul`` (one product over a transposed copy of x) instead of the
  batched product on the channels-first map (``layers.ss2d.X_PROJ_BMM``);
* suffix ``_ycf``: SS2DCore's output channels-first (the LayerNorm reduces over a strided axis) instead of
  channels-last from the fused merge (``layers.ss2d.Y_CHANNELS_LAST``);
* suffix ``_nomix``: inductor's ``triton.mix_order_reduction`` off for the compile (its LayerNorm backward then
  sums the weight / bias gradients in its own reduction kernels, not by partial sums + aten ``sum``).

Each row also records the peak memory allocated by one forward (what the backward keeps) and the step.

    PYTHONPATH=src:bench python bench/layer_variants_gpu.py [VARIANTS] [OUT.json]
    (default: cl,cf,taps_cl,taps_cf; bench/results/layer_variants_gpu_*_{conv,partials,dt}.json)
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import torch
import torch.nn.functional as F
import triton

import geomamba.layers.ss2d as ss2d_mod
from _sweep import bench, rel_error
from geomamba.layers.ss2d import SS2D
from geomamba.ops.dt_proj import dt_proj, dt_proj_reference
from geomamba.ops.triton import ss2d_launch as sl
from layer_profile_gpu import kernel_profile


def taps_conv(x, weight, bias, channels_dim):
    """depthwise 3x3, padding 1, as 9 shifted products (fp32 accumulation); x channels at channels_dim."""
    if channels_dim == 3:  # (B, H, W, D)
        xp = F.pad(x, (0, 0, 1, 1, 1, 1))
        h, w = x.shape[1], x.shape[2]
        wv = weight.view(-1, 3, 3).float()
        acc = bias.float()
        for i in range(3):
            for j in range(3):
                acc = acc + xp[:, i : i + h, j : j + w, :].float() * wv[:, i, j]
        return acc
    xp = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[2], x.shape[3]
    wv = weight.view(-1, 3, 3).float()
    acc = bias.float().view(-1, 1, 1)
    for i in range(3):
        for j in range(3):
            acc = acc + xp[:, :, i : i + h, j : j + w].float() * wv[:, i, j].view(-1, 1, 1)
    return acc


# the variant options after its base name (docstring)
SUFFIXES = {"fp32", "dt", "mm", "xmm", "ycf", "nomix"}


class VSS2D(SS2D):
    variant = "cl"

    def forward(self, x):
        variant = "_".join(p for p in self.variant.split("_") if p not in SUFFIXES)
        b, h, w, c = x.shape
        dt = torch.bfloat16 if x.is_cuda else x.dtype
        if variant in ("cl", "tconv"):
            x = self._conv_silu(self.in_proj(x))
        elif variant == "cf":
            x = torch.matmul(self.in_proj.weight, x.reshape(b, h * w, c).transpose(1, 2)).view(b, -1, h, w)
            x = F.silu(self.conv2d(x))
        elif variant == "taps_cl":
            x = self.in_proj(x)
            x = F.silu(taps_conv(x, self.conv2d.weight, self.conv2d.bias, 3)).to(dt).permute(0, 3, 1, 2)
        elif variant == "taps_cf":
            x = torch.matmul(self.in_proj.weight, x.reshape(b, h * w, c).transpose(1, 2)).view(b, -1, h, w)
            x = F.silu(taps_conv(x, self.conv2d.weight, self.conv2d.bias, 1)).to(dt)
        else:
            raise ValueError(variant)
        y = self.out_norm(self.core(x).permute(0, 2, 3, 1))
        return self.out_proj(y)


SHAPES = [("stage1", 16, 128, 64, 64), ("stage2", 16, 256, 32, 32), ("stage3", 16, 512, 16, 16)]


def main():
    variants = sys.argv[1].split(",") if len(sys.argv) > 1 else ["cl", "cf", "taps_cl", "taps_cf"]
    out_path = sys.argv[2] if len(sys.argv) > 2 else "layer_variants_gpu.json"
    dev = torch.device("cuda")
    rows = []
    for name, batch, d_model, h, w in SHAPES:
        ref_out = None
        for v in variants:
            torch.manual_seed(0)
            layer = VSS2D(d_model, d_state=1, backend="triton").to(dev)
            layer.variant = v
            layer.conv_backend = "triton" if v.startswith("tconv") else "torch"
            for key in ("forward_lines", "backward_lines"):
                opts = sl.SS2D_DEFAULTS[key]
                sl.SS2D_DEFAULTS[key] = dataclasses.replace(opts, partials_fp32="fp32" in set(v.split("_")))
            flags = set(v.split("_")) & SUFFIXES
            layer.core.fuse_dt_proj = "dt" in flags
            ss2d_mod.dt_proj = dt_proj_reference if "mm" in flags else dt_proj
            ss2d_mod.X_PROJ_BMM = "xmm" not in flags
            ss2d_mod.Y_CHANNELS_LAST = "ycf" not in flags
            x = torch.randn(batch, h, w, d_model, device=dev, requires_grad=True)
            compiled = torch.compile(
                layer, options={"triton.mix_order_reduction": False} if "nomix" in flags else None
            )
            params = [x, *layer.parameters()]  # (the correctness check's gradients)

            def step(compiled=compiled, x=x):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = compiled(x)
                out.float().sum().backward()

            t0 = time.perf_counter()
            try:
                step()
                step()
            except Exception as exc:  # a variant that fails to compile or run is reported, not timed
                print(name, v, "failed", type(exc).__name__, str(exc)[:400], flush=True)
                continue
            cs = time.perf_counter() - t0
            row = dict(shape=name, variant=v, compile_s=round(cs, 1))
            row["step_ms"] = bench(step, graphs=True)
            torch.cuda.synchronize()
            for p in params:
                p.grad = None
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                kept = compiled(x)
            row["fwd_kept_mb"] = round((torch.cuda.memory_allocated() - base) / 2**20, 1)
            kept.float().sum().backward()
            row["step_peak_mb"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
            del kept
            prof = kernel_profile(step, 3, dev)
            # correctness against the first variant
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = compiled(x)
            grads = torch.autograd.grad(out.float().sum(), params)
            errs = {}
            if ref_out is None:
                ref_out = (out.detach().float(), [g.float() for g in grads])
            else:
                errs["out"] = rel_error(out.detach().float(), ref_out[0])
                errs["grads_max"] = max(rel_error(a.float(), b) for a, b in zip(grads, ref_out[1]))
            row["errs"] = errs
            row["by_kind"] = prof["by_kind"]
            row["launches"] = prof["launches"]
            row["top"] = [(k["name"][:90], k["us"], k["calls"]) for k in prof["kernels"][:25]]
            rows.append(row)
            print(
                f"{name} {v:8} step {row['step_ms']:.3f} kept {row['fwd_kept_mb']} MB peak {row['step_peak_mb']} MB "
                f"launches {row['launches']} errs {errs} kinds "
                + " ".join(f"{k}:{d['us']:.0f}" for k, d in prof["by_kind"].items()),
                flush=True,
            )
            torch._dynamo.reset()
    json.dump(
        dict(
            device=torch.cuda.get_device_name(),
            torch=torch.__version__,
            triton=triton.__version__,
            command=" ".join(["python", *sys.argv]),
            rows=rows,
        ),
        open(out_path, "w"),
        indent=1,
    )
    for r in rows:
        print(r["shape"], r["variant"])
        for t in r["top"][:14]:
            print(f"   {t[1]:7.2f} {t[2]:4.1f} {t[0]}")


if __name__ == "__main__":
    main()
