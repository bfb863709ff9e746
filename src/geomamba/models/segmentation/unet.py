"""U-Net (Ronneberger et al., MICCAI 2015) for segmentation, with BatchNorm and padded convolutions.

Encoder: a double 3x3 conv-BN-ReLU at widths ``c, 2c, 4c, 8c, 16c`` with 2x2 max-pooling in between;
decoder: 2x2 transposed conv (halving the width), concatenation with the skip, double conv; a 1x1 conv
classifies. Padded convs keep the input size; for sizes that are not multiples of 16 the up-sampled map
is zero-padded to its skip's size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import ConvNormAct

from geomamba.models._registry import register_model
from geomamba.models.segmentation._common import check_image

__all__ = ["UNet", "unet"]


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        ConvNormAct(in_channels, out_channels, 3), ConvNormAct(out_channels, out_channels, 3)
    )


class UNet(nn.Module):
    """Classic U-Net.

    Args:
        in_channels: input bands.
        num_classes: output classes (6).
        base_channels: width ``c`` of the first level (64 in the paper: 31.0 M parameters).
        depth: number of 2x down-samplings (4).

    Shapes: ``(B, in_channels, H, W)`` -> logits ``(B, num_classes, H, W)``, any H, W.
    """

    def __init__(
        self, *, in_channels: int = 3, num_classes: int = 6, base_channels: int = 64, depth: int = 4
    ):
        super().__init__()
        if min(in_channels, num_classes, base_channels, depth) < 1:
            raise ValueError(
                f"in_channels, num_classes, base_channels and depth must be >= 1, got {in_channels}, "
                f"{num_classes}, {base_channels}, {depth}"
            )
        self.in_channels = in_channels
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList(
            _double_conv(c_in, c_out) for c_in, c_out in zip([in_channels, *widths[:-1]], widths)
        )
        self.ups = nn.ModuleList(nn.ConvTranspose2d(c, c // 2, 2, stride=2) for c in reversed(widths[1:]))
        self.decoder = nn.ModuleList(_double_conv(c, c // 2) for c in reversed(widths[1:]))
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_channels, type(self).__name__)
        skips = []
        for i, block in enumerate(self.encoder):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.ups, self.decoder):
            skip = skips.pop()
            x = up(x)
            x = F.pad(x, (0, skip.shape[3] - x.shape[3], 0, skip.shape[2] - x.shape[2]))
            x = block(torch.cat([skip, x], dim=1))
        return self.classifier(x)


@register_model(task="segmentation")
def unet(**kwargs) -> UNet:
    """U-Net, base width 64 (the paper's size, 31.0 M parameters); ``base_channels=32`` gives 7.8 M."""
    return UNet(**kwargs)
