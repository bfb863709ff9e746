"""Fully convolutional change-detection baselines of Daudt, Le Saux and Boulch (ICIP 2018).

``fc_ef`` (early fusion: the two dates stacked on channels into one U-Net), ``fc_siam_conc`` (a siamese
encoder, decoder skips concatenating both dates) and ``fc_siam_diff`` (siamese encoder, skips are the
absolute difference of the dates). Encoder: 4 levels of 3x3 conv (16, 32, 64, 128 channels; 2, 2, 3, 3
convs) each with BatchNorm, ReLU and dropout 0.2, max-pooling between levels; decoder: transposed conv
x2, concatenation with the skip, convs mirrored. Inputs of any size (up-sampled maps are padded to the
skip size by replication, as in the paper's code).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from geomamba.models._registry import register_model
from geomamba.models.base import split_bitemporal

__all__ = ["FCSiam", "fc_ef", "fc_siam_conc", "fc_siam_diff"]

_WIDTHS = (16, 32, 64, 128)
_CONVS = (2, 2, 3, 3)
_MODES = ("ef", "conc", "diff")


def _conv(cin: int, cout: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.Dropout2d(dropout)
    )


class _Encoder(nn.Module):
    """4 conv levels; returns the pre-pool skips and the pooled bottleneck."""

    def __init__(self, in_channels: int, dropout: float) -> None:
        super().__init__()
        levels, cin = [], in_channels
        for width, n in zip(_WIDTHS, _CONVS):
            levels.append(nn.Sequential(*[_conv(cin if j == 0 else width, width, dropout) for j in range(n)]))
            cin = width
        self.levels = nn.ModuleList(levels)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        skips = []
        for level in self.levels:
            x = level(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        return skips, x


class FCSiam(nn.Module):
    """FC-EF / FC-Siam-conc / FC-Siam-diff.

    Args:
        mode: ``"ef"``, ``"conc"`` or ``"diff"``.
        in_channels: bands per date.
        num_classes: output classes (2).
        dropout: dropout probability after every hidden conv (0.2 in the paper).

    Shapes:
        ``(B, 2, C, H, W)`` or two ``(B, C, H, W)`` -> logits ``(B, num_classes, H, W)``.
    """

    def __init__(
        self, *, mode: str = "diff", in_channels: int = 3, num_classes: int = 2, dropout: float = 0.2
    ) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"FCSiam mode must be one of {_MODES}, got {mode!r}")
        self.mode = mode
        self.encoder = _Encoder(2 * in_channels if mode == "ef" else in_channels, dropout)
        skip_factor = 2 if mode == "conc" else 1
        ups, decs = [], []
        for i in reversed(range(4)):
            width = _WIDTHS[i]
            ups.append(nn.ConvTranspose2d(width, width, 3, stride=2, padding=1, output_padding=1))
            out = _WIDTHS[i - 1] if i > 0 else num_classes
            convs = [_conv(width + skip_factor * width, width, dropout)]
            convs += [_conv(width, width, dropout) for _ in range(_CONVS[i] - 2)]
            if i > 0:
                convs.append(_conv(width, out, dropout))
            else:  # the last conv gives the logits: no BN/ReLU/dropout
                convs.append(nn.Conv2d(width, out, 3, padding=1))
            decs.append(nn.Sequential(*convs))
        self.ups, self.decoders = nn.ModuleList(ups), nn.ModuleList(decs)

    def forward(self, x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        a, b = split_bitemporal(x, b)
        if self.mode == "ef":
            skips, y = self.encoder(torch.cat([a, b], dim=1))
        else:
            skips_a, _ = self.encoder(a)
            skips_b, y = self.encoder(b)  # the decoder starts from the second date's bottleneck
            if self.mode == "conc":
                skips = [torch.cat([sa, sb], dim=1) for sa, sb in zip(skips_a, skips_b)]
            else:
                skips = [(sa - sb).abs() for sa, sb in zip(skips_a, skips_b)]
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            y = up(y)
            dh, dw = skip.shape[2] - y.shape[2], skip.shape[3] - y.shape[3]
            if dh or dw:
                y = F.pad(y, (0, dw, 0, dh), mode="replicate")
            y = dec(torch.cat([y, skip], dim=1))
        return y


@register_model(task="change")
def fc_ef(**kwargs) -> FCSiam:
    """FC-EF (Daudt et al. 2018): early-fusion U-Net. Paper: 1.35 M parameters (ours 1.35 M at 3 bands)."""
    return FCSiam(**{"mode": "ef", **kwargs})


@register_model(task="change")
def fc_siam_conc(**kwargs) -> FCSiam:
    """FC-Siam-conc (Daudt et al. 2018): siamese, concatenated skips. Paper: 1.55 M parameters."""
    return FCSiam(**{"mode": "conc", **kwargs})


@register_model(task="change")
def fc_siam_diff(**kwargs) -> FCSiam:
    """FC-Siam-diff (Daudt et al. 2018): siamese, absolute-difference skips. Paper: 1.35 M parameters."""
    return FCSiam(**{"mode": "diff", **kwargs})
