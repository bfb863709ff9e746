"""Frequency-adaptive dilated convolution (FADC, Chen et al., CVPR 2024) for channels-first maps.

``Y(p) = sum_k W_k * X(p + D(p) * dp_k)`` over the K = k*k taps ``dp_k`` of a k x k kernel, with a
per-pixel dilation ``D(p) = 1 + (max_dilation - 1) * sigmoid(f(X)(p))`` in ``[1, max_dilation]``
predicted by a 3x3 conv ``f`` (AdaDR). It is a deformable convolution with offsets ``(D(p) - 1) * dp_k``
(with ``D = 1`` a plain conv), computed with the same values by a ``sampler`` (the ``sampler`` argument):
by default on CUDA (eager and compiled, training and inference) and for inference on CPU, one bilinear
``grid_sample`` of the taps and one matrix product in the autocast dtype (``geomamba.ops.dilated_taps``:
the custom op ``geomamba::dilated_tap_conv``), where torchvision's kernel computes everything in fp32 with
SIMT GEMMs (forward+backward 1.4-1.9x faster on an H100, ``bench/fadc_gpu.py``; the flagship's compiled
training step 383.2 vs 373.2 pairs/s, ``bench/fadc_ab.py``; several times faster than torchvision's CPU
kernel for inference); for CPU training, ``torchvision.ops.deform_conv2d``.

Optional parts (switches):
- ``adakern`` (AdaKern): the kernel is split into its low-frequency part (the spatial mean of each
  k x k kernel) and the high-frequency rest; both are rescaled per output channel by
  ``2 * sigmoid(fc(avgpool(X)))`` (1 at initialisation, so the layer starts as a plain FADC).
- ``freq_select`` (FreqSelect): the input is split by FFT into frequency bands (square low-pass masks
  at ``1 / (2 c)`` of the sampling rate for each cutoff ``c``) and each band is reweighted by a
  predicted per-pixel gate ``2 * sigmoid(conv3x3(X))`` (1 at initialisation: the bands sum back to X).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torchvision.ops import deform_conv2d

from geomamba.ops.dilated_taps import dilated_tap_conv, tap_conv

__all__ = ["SAMPLERS", "FrequencyAdaptiveDilatedConv", "FrequencySelection", "dilated_tap_conv"]

SAMPLERS = ("auto", "taps", "composed", "deform")


class FrequencySelection(nn.Module):
    """FFT band decomposition with per-pixel band gates (FADC's FreqSelect).

    Args:
        channels: C.
        cutoffs: band edges as divisors c of the Nyquist band: low-pass i keeps ``|f| < 1 / (2 c_i)``
            (cycles per pixel) on both axes. Bands: the lowest low-pass, the differences of consecutive
            low-passes, and the high-frequency rest (``len(cutoffs) + 1`` bands, summing to the input).

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int, *, cutoffs: tuple[int, ...] = (8, 4, 2)) -> None:
        super().__init__()
        if not cutoffs or any(c < 1 for c in cutoffs):
            raise ValueError(f"cutoffs must be positive integers, got {cutoffs!r}")
        self.cutoffs = tuple(sorted(cutoffs, reverse=True))  # lowest band first
        self.gate = nn.Conv2d(channels, len(self.cutoffs) + 1, 3, padding=1)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def bands(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The ``len(cutoffs) + 1`` frequency bands of ``x``, lowest first; they sum to ``x``."""
        h, w = x.shape[-2:]
        xf = torch.fft.fft2(x.float(), norm="ortho")
        fy = torch.fft.fftfreq(h, device=x.device).abs()[:, None]
        fx = torch.fft.fftfreq(w, device=x.device).abs()[None, :]
        lows = []
        for c in self.cutoffs:
            mask = ((fy < 0.5 / c) & (fx < 0.5 / c)).to(xf.dtype)
            lows.append(torch.fft.ifft2(xf * mask, norm="ortho").real)
        out = [lows[0]] + [lows[i] - lows[i - 1] for i in range(1, len(lows))] + [x.float() - lows[-1]]
        return [b.to(x.dtype) for b in out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = 2.0 * torch.sigmoid(self.gate(x))  # (B, bands, H, W)
        return sum(gates[:, i : i + 1] * band for i, band in enumerate(self.bands(x)))


class FrequencyAdaptiveDilatedConv(nn.Module):
    """FADC: a k x k convolution whose dilation is predicted per pixel (stride 1, 'same' output size).

    Args:
        in_channels, out_channels: channels.
        kernel_size: odd k (3: K = 9 taps).
        max_dilation: upper bound of the predicted dilation D(p) (lower bound 1).
        init_dilation: D(p) everywhere at initialisation (the predictor starts with zero weights).
        adakern: enable AdaKern (dynamic low/high-frequency kernel scaling).
        freq_select: enable FreqSelect (frequency-band reweighting of the input).
        bias: add a bias to the output.
        sampler: how the dilated taps are sampled (same values): ``"taps"`` (the tap sampler with its
            explicit backward, ``geomamba.ops.dilated_taps.tap_conv``), ``"composed"`` (the same composed of
            PyTorch ops, differentiated by autograd), ``"deform"`` (``torchvision.ops.deform_conv2d``) or
            ``"auto"``: ``"taps"`` on CUDA and for CPU inference, ``"deform"`` for CPU training.

    Shapes: ``(B, C_in, H, W) -> (B, C_out, H, W)``. ``forward(x, dilation=...)`` fixes D to a number or
    a ``(B, 1, H, W)`` tensor instead of predicting it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        max_dilation: float = 4.0,
        init_dilation: float = 2.0,
        adakern: bool = False,
        freq_select: bool = False,
        bias: bool = False,
        sampler: str = "auto",
    ) -> None:
        super().__init__()
        if sampler not in SAMPLERS:
            raise ValueError(f"FADC sampler must be one of {SAMPLERS}, got {sampler!r}")
        self.sampler = sampler
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        if not 1.0 < init_dilation < max_dilation:
            raise ValueError(
                f"need 1 < init_dilation < max_dilation, got init_dilation={init_dilation}, "
                f"max_dilation={max_dilation}"
            )
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.max_dilation = float(max_dilation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.dilation_predictor = nn.Conv2d(in_channels, 1, 3, padding=1)
        nn.init.zeros_(self.dilation_predictor.weight)
        frac = (init_dilation - 1.0) / (max_dilation - 1.0)
        nn.init.constant_(self.dilation_predictor.bias, math.log(frac / (1.0 - frac)))
        self.adakern = nn.Conv2d(in_channels, 2 * out_channels, 1) if adakern else None
        if self.adakern is not None:
            nn.init.zeros_(self.adakern.weight)
            nn.init.zeros_(self.adakern.bias)
        self.freq_select = FrequencySelection(in_channels) if freq_select else None
        c = kernel_size // 2
        taps = torch.tensor([(i - c, j - c) for i in range(kernel_size) for j in range(kernel_size)])
        self.register_buffer("taps", taps.float().reshape(1, -1, 1, 1), persistent=False)  # (1, 2K, 1, 1)

    def predict_dilation(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel dilation ``(B, 1, H, W)`` in ``[1, max_dilation]``."""
        return 1.0 + (self.max_dilation - 1.0) * torch.sigmoid(self.dilation_predictor(x))

    def forward(self, x: torch.Tensor, dilation: float | torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"FrequencyAdaptiveDilatedConv expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        b, _, h, w = x.shape
        if dilation is None:
            d = self.predict_dilation(x)
        else:
            d = torch.as_tensor(dilation, dtype=x.dtype, device=x.device)
        feats = self.freq_select(x) if self.freq_select is not None else x
        pad = self.kernel_size // 2
        sampler = self.sampler
        if sampler == "auto":
            # the tap sampler on CUDA (eager and compiled: 383.2 vs 373.2 pairs/s for deform_conv2d in the
            # flagship's compiled training step on an H100, bench/results/fadc_ab_*_v2_*.json) and for CPU
            # inference; deform_conv2d for CPU training
            cpu_training = x.device.type == "cpu" and torch.is_grad_enabled()
            sampler = "deform" if cpu_training else "taps"

        def conv(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
            if sampler == "taps":
                return tap_conv(feats, d, weight, bias)
            if sampler == "composed":
                return dilated_tap_conv(feats, d, weight, bias)
            offset = ((d.to(x.dtype) - 1.0) * self.taps.to(x.dtype)).expand(b, -1, h, w).contiguous()
            return deform_conv2d(feats, offset, weight, bias, padding=(pad, pad))

        if self.adakern is None:
            return conv(self.weight, self.bias)
        low = self.weight.mean(dim=(2, 3), keepdim=True).expand_as(self.weight)
        both = conv(torch.cat([low, self.weight - low]), None)
        scale = 2.0 * torch.sigmoid(self.adakern(x.mean(dim=(2, 3), keepdim=True)))  # (B, 2*C_out, 1, 1)
        y_low, y_high = (both * scale).chunk(2, dim=1)
        y = y_low + y_high
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)
