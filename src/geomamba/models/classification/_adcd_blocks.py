"""Building blocks of ADCD-Net: a per-modality MobileNetV3-style encoder and the semantic-sequence MLP.

The inverted-residual units are torchvision's MobileNetV3 ``InvertedResidual`` (expansion 1x1 conv,
depthwise kxk conv, squeeze-excitation, projection 1x1 conv, residual when the shape allows; hard-swish,
and MobileNetV3's initialisation: convs Kaiming-normal (fan out), BatchNorm 1/0). BatchNorm keeps
PyTorch's default momentum 0.1 rather than MobileNetV3's 0.01: MS+PAN training sets are small (thousands
of labelled pixels), and stage II runs stage I in eval mode on its running statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig
from torchvision.ops.misc import Conv2dNormActivation

__all__ = ["ModalityEncoder", "SemanticSequenceHead"]

_NORM = partial(nn.BatchNorm2d, eps=0.001)


class ModalityEncoder(nn.Module):
    """Stem conv + one MobileNetV3 inverted-residual unit per depth.

    Args:
        in_channels: bands of the modality (4 for MS, 1 for PAN).
        widths: output channels of each unit (multiples of 8, as MobileNetV3 rounds to 8).
        stem_width: channels of the 3x3 stem conv (a multiple of 8).
        expand: expansion ratio of the units' hidden width.
        downsample: number of stride-2 steps (the stem first, then the first units), e.g. 2 for a PAN at
            4x the MS resolution, 0 for the MS.
        kernel_size: depthwise kernel (3).
        se: squeeze-excitation in every unit.

    Shapes: ``(B, in_channels, S, S)`` -> list of ``(B, widths[i], S / 2**downsample, S / 2**downsample)``
    (the units after the stride-2 ones keep the size; S must be divisible by ``2**downsample``).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        widths: Sequence[int],
        stem_width: int = 16,
        expand: float = 4.0,
        downsample: int = 0,
        kernel_size: int = 3,
        se: bool = True,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or any(w % 8 for w in (*widths, stem_width)):
            raise ValueError(
                f"widths {widths} and stem_width {stem_width} must be multiples of 8 (MobileNetV3)"
            )
        if not 0 <= downsample <= 1 + len(widths):
            raise ValueError(
                f"downsample {downsample} needs more units: at most 1 + {len(widths)} stride-2 steps"
            )
        self.widths, self.downsample = widths, downsample
        self.stem = Conv2dNormActivation(
            in_channels,
            stem_width,
            kernel_size=3,
            stride=2 if downsample >= 1 else 1,
            norm_layer=_NORM,
            activation_layer=nn.Hardswish,
        )
        units, cin = [], stem_width
        for i, cout in enumerate(widths):
            stride = 2 if i < downsample - 1 else 1
            hidden = max(8, round(cin * expand / 8) * 8)
            cfg = InvertedResidualConfig(cin, kernel_size, hidden, cout, se, "HS", stride, 1, 1.0)
            units.append(InvertedResidual(cfg, _NORM))
            cin = cout
        self.units = nn.ModuleList(units)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for unit in self.units:
            x = unit(x)
            feats.append(x)
        return feats


class SemanticSequenceHead(nn.Module):
    """MLP semantic sequence of a feature map: pool -> flatten -> Linear -> GELU -> Linear -> tokens.

    Args:
        channels: C of the input map.
        tokens: T, tokens of the sequence.
        dim: token width.
        hidden: hidden width of the MLP.
        pool_size: the map is average-pooled to ``pool_size x pool_size`` before flattening.

    Shapes: ``(B, C, H, W)`` -> ``(hidden (B, hidden), sequence (B, T, dim))``.
    """

    def __init__(
        self, channels: int, *, tokens: int, dim: int, hidden: int = 256, pool_size: int = 2
    ) -> None:
        super().__init__()
        if tokens < 1 or dim < 1:
            raise ValueError(f"tokens and dim must be >= 1, got {tokens}, {dim}")
        self.tokens, self.dim, self.pool_size = tokens, dim, pool_size
        self.fc1 = nn.Linear(channels * pool_size * pool_size, hidden)
        self.fc2 = nn.Linear(hidden, tokens * dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.gelu(self.fc1(F.adaptive_avg_pool2d(x, self.pool_size).flatten(1)))
        return h, self.fc2(h).view(-1, self.tokens, self.dim)
