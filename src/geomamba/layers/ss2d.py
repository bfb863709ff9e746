"""SS2D: VMamba's 2-D selective-scan layer.

``SS2DCore`` is the state-space part alone, on a channels-first map ``(B, D, H, W) -> (B, D, H, W)``:
per-direction ``x_proj`` (D -> dt_rank + 2N) and ``dt_proj`` (dt_rank -> D) applied pointwise on the
image layout (batched matmuls), then :func:`geomamba.ops.ss2d_scan`: K directional selective scans (row-major,
column-major, both reversed) with per-direction ``A_log`` and ``D``, mapped back and summed. This is the
same function as cross-scan -> projections -> selective scan -> cross-merge, without the K copies of
the map when the backend fuses the reordering.
``SS2D`` wraps it: ``in_proj -> depthwise 3x3 conv -> SiLU -> SS2DCore -> LayerNorm -> (SiLU(z) gate)
-> out_proj``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm

from geomamba.ops.cross_scan import to_line_order
from geomamba.ops.dt_proj import dt_proj
from geomamba.ops.dwconv_silu import dwconv_silu, uses_triton
from geomamba.ops.ss2d_scan import memory_format_of, ss2d_scan

__all__ = [
    "CUDA_SCAN_LAYOUT",
    "SS2D",
    "X_PROJ_BMM",
    "Y_CHANNELS_LAST",
    "SS2DCore",
    "contiguous_keep_grad_format",
]

# The layout of delta/B/C that SS2DCore hands ss2d_scan on CUDA: "lines" (the column-major directions
# column-major, read as rows by the fused kernels) or "image" (the layout before; benchmarks set it to
# compare the two: bench/layer_profile_gpu.py --layout).
CUDA_SCAN_LAYOUT = "lines"

# x_proj on CUDA as a batched product with the weight broadcast (True), or torch.matmul (False: it folds the
# batch into one product over a transposed copy of x, and returns the gradient of x channels-last, which the
# depthwise conv's backward then adds transposed). A switch for bench/layer_variants_gpu.py.
X_PROJ_BMM = True

# On CUDA, SS2DCore's output in the channels-last memory format (True: the fused kernels' merge of the K > 1
# directions writes it so, and SS2D's LayerNorm over the channels reads contiguous rows; its gradient comes
# back channels-last and the scan's backward splits it into its channels-first and transposed copies in one
# pass), or channels-first (False: the LayerNorm reduces over a strided axis; always for K = 1, where no
# merge runs and channels-last would cost a copy). A switch for bench/layer_variants_gpu.py (suffix _ycf),
# which measured it (README, NOTES_triton round 15).
Y_CHANNELS_LAST = True


class _ContiguousKeepGradFormat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.fmt = memory_format_of(x)
        return x.contiguous()

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=ctx.fmt)


def contiguous_keep_grad_format(x: torch.Tensor) -> torch.Tensor:
    """``x.contiguous()`` whose gradient comes back in x's memory format (channels-last for a
    channels-last x), so that the convolution that made x gets its gradient in its own layout: with a
    contiguous gradient cuDNN's backward converts it first (an unfused strided copy: 58 us of the 1.24 ms
    compiled SS2D layer step at 32x32 on an H100, bench/layer_profile_gpu.py); this way torch.compile
    writes it in that layout from the kernel that computes it."""
    return _ContiguousKeepGradFormat.apply(x)


class SS2DCore(nn.Module):
    """Selective-scan core: ``(B, d_inner, H, W) -> (B, d_inner, H, W)`` (channels-first).

    Args:
        d_inner: channels D of the scanned map.
        d_state: state size N (1 = VMamba v2 / ChangeMamba; 16 = classic Mamba).
        dt_rank: rank of the delta projection; ``"auto"`` = ceil(d_inner / 16).
        directions: K = 4 (row, column, both reversed), 2 or 1.
        dt_min, dt_max, dt_init_floor: log-uniform initialisation range of delta.
        backend: selective-scan backend (``"auto"``, ``"ref"``, ``"triton"``), see ``geomamba.ops``.
        fuse_dt_proj: on CUDA (backend other than ``"ref"``), hand dt_proj's input and weight to the scan
            (``ss2d_scan(..., dt_weight=...)``): the Triton kernels project delta tile by tile, so the
            ``(B, K, d_inner, H*W)`` delta is neither written nor saved for the backward (activation
            memory: -36% kept by the layer), at a cost in speed (H100, batch 16: the compiled layer's step
            +3% / +17% / +41% at 64x64 / 32x32 / 16x16; README, bench/NOTES_triton.md round 12).

    Parameters: ``x_proj_weight (K, dt_rank + 2N, D)``, ``dt_projs_weight (K, D, dt_rank)``,
    ``dt_projs_bias (K, D)``, ``A_logs (K*D, N)`` and ``Ds (K*D,)``; the last two carry
    ``_no_weight_decay = True`` (VMamba's convention, for optimisers that honour it).
    """

    def __init__(
        self,
        d_inner: int,
        *,
        d_state: int = 1,
        dt_rank: int | str = "auto",
        directions: int = 4,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_scale: float = 1.0,
        backend: str = "auto",
        fuse_dt_proj: bool = False,
    ) -> None:
        super().__init__()
        if directions not in (1, 2, 4):
            raise ValueError(f"directions must be 1, 2 or 4, got {directions}")
        self.d_inner, self.d_state, self.directions, self.backend = d_inner, d_state, directions, backend
        self.fuse_dt_proj = fuse_dt_proj
        self.dt_rank = math.ceil(d_inner / 16) if dt_rank == "auto" else int(dt_rank)
        k, r, n = directions, self.dt_rank, d_state
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * n, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, r))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner))
        self.A_logs = nn.Parameter(torch.empty(k * d_inner, n))
        self.Ds = nn.Parameter(torch.empty(k * d_inner))
        self.A_logs._no_weight_decay = True
        self.Ds._no_weight_decay = True
        self._dt_init = (dt_min, dt_max, dt_init_floor, dt_scale)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        dt_min, dt_max, floor, scale = self._dt_init
        nn.init.uniform_(self.x_proj_weight, -(self.d_inner**-0.5), self.d_inner**-0.5)
        std = self.dt_rank**-0.5 * scale
        nn.init.uniform_(self.dt_projs_weight, -std, std)
        with torch.no_grad():
            dt = torch.exp(
                torch.rand_like(self.dt_projs_bias) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            ).clamp(min=floor)
            self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
            a = torch.arange(1, self.d_state + 1, dtype=torch.float32)
            self.A_logs.copy_(torch.log(a).expand_as(self.A_logs))  # S4D-real
            self.Ds.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, d_inner, H, W) -> (B, d_inner, H, W)`` in x's dtype (on CUDA in the channels-last memory
        format for K > 1, ``Y_CHANNELS_LAST``; the values do not depend on it)."""
        if x.dim() != 4 or x.shape[1] != self.d_inner:
            raise ValueError(
                f"SS2DCore expects x of shape (B, d_inner={self.d_inner}, H, W), got {tuple(x.shape)}"
            )
        k, r, n = self.directions, self.dt_rank, self.d_state
        b, d, h, w = x.shape
        # the state-space parameters stay fp32 (fp64 in a float64 module) whatever x's dtype
        sdt = torch.float64 if self.A_logs.dtype == torch.float64 else torch.float32
        bias = self.dt_projs_bias.to(sdt)
        w_x = self.x_proj_weight.to(x.dtype).reshape(-1, d)
        layout, dt_w = "image", None
        if x.device.type == "cpu":
            # The reference backend's image-layout scan reads x and delta channels-last, as they are: x
            # (channels-last from the convolutions) is not copied, delta is laid out (B, K, L, D) in memory
            # (the same (B, K, D, L) values) and, in fp32/fp64, takes the delta bias inside its product
            # (one pass fewer in the scan).
            x_dbl = torch.matmul(w_x, x.flatten(2))  # (B, K*(R+2N), L)
            dts, bs, cs = torch.split(x_dbl.view(b, k, r + 2 * n, h * w), [r, n, n], dim=2)
            lhs, rhs = dts.transpose(-1, -2), self.dt_projs_weight.to(dts.dtype).transpose(-1, -2)
            if dts.dtype == sdt:  # (B, K, L, R) @ (K, R, D) + bias (K, 1, D)
                nb, bias3 = b, bias.unsqueeze(1)
                if nb == 1:
                    out = torch.baddbmm(bias3, lhs[0], rhs).unsqueeze(0)
                else:
                    out = torch.baddbmm(
                        bias3.repeat(nb, 1, 1), lhs.reshape(nb * k, *lhs.shape[2:]), rhs.repeat(nb, 1, 1)
                    ).unflatten(0, (nb, k))
                dts, bias = out.transpose(-1, -2), None
            else:
                dts = torch.matmul(lhs, rhs).transpose(-1, -2)
        else:
            # One copy at most (x arrives channels-last from a conv on a permuted map), then every tensor
            # the scan reads is made contiguous by its matmul: einsum would copy x for its bmm and return
            # delta (K times the size of x) as a strided view that the scan kernels copy again.
            # The projections' outputs are put in the "lines" layout (the column-major directions'
            # positions column-major): a transpose of the R + 2N projected rows only, after which dt_proj
            # writes delta so and the fused kernels read every direction's delta/B/C as rows and return
            # their gradients so (no transposed copies of delta or of its gradient; ops.ss2d_scan).
            x = contiguous_keep_grad_format(x)
            if X_PROJ_BMM:  # (B, K*(R+2N), D) @ (B, D, L): reads x as it is, channels-first
                x_dbl = torch.bmm(w_x.expand(b, -1, -1), x.view(b, d, h * w))
            else:  # matmul folds the batch into an (B*L, D) @ (D, K*(R+2N)) product on a transposed copy of x
                x_dbl = torch.matmul(w_x, x.view(b, d, h * w))
            layout = CUDA_SCAN_LAYOUT
            x_dbl = x_dbl.view(b, k, r + 2 * n, h * w)
            if layout == "lines":
                x_dbl = to_line_order(x_dbl, h, w)
            dts, bs, cs = torch.split(x_dbl, [r, n, n], dim=2)
            if self.fuse_dt_proj and layout == "lines" and self.backend != "ref":
                dt_w = self.dt_projs_weight  # projected inside the scan (K, D, R) @ (B, K, R, L)
            else:
                dts = dt_proj(self.dt_projs_weight, dts)  # (K, D, R) @ (B, K, R, L), one-pass backward
        return ss2d_scan(
            x,
            dts,
            -torch.exp(self.A_logs.to(sdt)),
            bs,
            cs,
            self.Ds.to(sdt),
            None if bias is None else bias.reshape(-1),
            k,
            self.backend,
            layout,
            dt_w,
            channels_last=x.is_cuda and Y_CHANNELS_LAST and k > 1,
        )


class SS2D(nn.Module):
    """The SS2D layer: ``in_proj -> dwconv 3x3 -> SiLU -> SS2DCore -> LayerNorm -> gate -> out_proj``.

    Input and output ``(B, H, W, C)`` when ``channels_last`` (default) else ``(B, C, H, W)``; any H, W.
    Inside, ``d_inner = int(ssm_ratio * C)`` channels are scanned channels-first ``(B, d_inner, H, W)``.

    Args:
        d_model: channels C.
        d_state: state size N (default 1, VMamba v2; 16 = classic Mamba).
        ssm_ratio: d_inner = ssm_ratio * C.
        dt_rank: rank of the delta projection; ``"auto"`` = ceil(C / 16).
        directions: 4, 2 or 1 scan directions.
        d_conv: odd depthwise conv kernel (0 disables the conv).
        gate: multiply by SiLU(z) from a second in_proj half (Mamba's gate); off in VMamba v2.
        dropout: dropout after out_proj.
        channels_last: layout of input and output (see above).
        backend: selective-scan backend (``"auto"``, ``"ref"``, ``"triton"``).
        fuse_dt_proj: dt_proj inside the scan kernels on CUDA (see :class:`SS2DCore`).
        conv_backend: ``"torch"`` (default): ``F.silu(conv2d(...))`` (cuDNN on CUDA); ``"triton"``: on CUDA
            (fp16 / bf16 / fp32) the depthwise conv + SiLU as one Triton kernel from in_proj's channels-last
            tokens to the scan's channels-first map, its backward as two plus the library's wgrad
            (``ops.dwconv_silu``; elsewhere the reference). Measured on an H100 (bf16, batch 16): the conv
            alone 1.9-2.2x faster, the compiled layer's step within 1% of the default, 10% less activation
            memory (README, bench/NOTES_triton.md rounds 13-14).
    """

    def __init__(
        self,
        d_model: int,
        *,
        d_state: int = 1,
        ssm_ratio: float = 2.0,
        dt_rank: int | str = "auto",
        directions: int = 4,
        d_conv: int = 3,
        gate: bool = False,
        dropout: float = 0.0,
        channels_last: bool = True,
        backend: str = "auto",
        fuse_dt_proj: bool = False,
        conv_backend: str = "torch",
    ) -> None:
        super().__init__()
        if conv_backend not in ("torch", "triton"):
            raise ValueError(f"SS2D: conv_backend must be 'torch' or 'triton', got {conv_backend!r}")
        self.conv_backend = conv_backend
        d_inner = int(ssm_ratio * d_model)
        if d_inner < 1:
            raise ValueError(f"SS2D: ssm_ratio * d_model must be >= 1, got {ssm_ratio} * {d_model}")
        if d_conv > 0 and d_conv % 2 == 0:
            raise ValueError(f"SS2D: d_conv must be odd (same-size depthwise conv) or 0, got {d_conv}")
        self.d_model, self.d_inner = d_model, d_inner
        self.channels_last, self.gate = channels_last, gate
        self.in_proj = nn.Linear(d_model, d_inner * (2 if gate else 1), bias=False)
        self.conv2d = (
            nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner)
            if d_conv > 0
            else nn.Identity()
        )
        rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.core = SS2DCore(
            d_inner,
            d_state=d_state,
            dt_rank=rank,
            directions=directions,
            backend=backend,
            fuse_dt_proj=fuse_dt_proj,
        )
        self.out_norm = LayerNorm(d_inner, eps=1e-5)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _conv_silu(self, x: torch.Tensor) -> torch.Tensor:
        """in_proj's tokens ``(B, H, W, d_inner)`` -> ``SiLU(conv(x))`` ``(B, d_inner, H, W)``."""
        conv = self.conv2d
        if self.conv_backend == "triton" and isinstance(conv, nn.Conv2d) and uses_triton(x):
            return dwconv_silu(x, conv.weight, conv.bias)
        return F.silu(conv(x.permute(0, 3, 1, 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C) -> (B, H, W, C)`` (channels_last) or ``(B, C, H, W) -> (B, C, H, W)``."""
        axis = 3 if self.channels_last else 1
        if x.dim() != 4 or x.shape[axis] != self.d_model:
            layout = "(B, H, W, C)" if self.channels_last else "(B, C, H, W)"
            raise ValueError(f"SS2D expects x of shape {layout} with C={self.d_model}, got {tuple(x.shape)}")
        if not self.channels_last:
            x = x.permute(0, 2, 3, 1)
        x = self.in_proj(x)
        z = None
        if self.gate:
            x, z = x.chunk(2, dim=-1)
        x = self._conv_silu(x)
        y = self.out_norm(self.core(x).permute(0, 2, 3, 1))
        if z is not None:
            y = y * F.silu(z)
        y = self.dropout(self.out_proj(y))
        return y if self.channels_last else y.permute(0, 3, 1, 2)
