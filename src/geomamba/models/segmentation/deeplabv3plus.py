"""DeepLabV3+ (Chen et al., ECCV 2018) on a ResNet backbone.

Encoder: a ResNet (default ResNet-50) at output stride 16 (the last stage dilated); ASPP on its last map:
a 1x1 branch, three 3x3 atrous branches (rates 6, 12, 18 at stride 16, doubled at stride 8) and an
image-pooling branch, concatenated and projected to 256 channels (dropout 0.1). Decoder: the ASPP map,
up-sampled to stride 4, is concatenated with the stride-4 ResNet map reduced to 48 channels (1x1 conv),
refined by two 3x3 convs and classified by a 1x1 conv; the logits are up-sampled to the input size.
As in the paper's best models the atrous and decoder 3x3 convs are depthwise separable
(``separable=False``: plain convs, DeepLabV3's ASPP). The image-pooling branch has no BatchNorm (its
map is 1x1, so BatchNorm would fail on a batch of one).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
from timm.layers import ConvNormAct, SeparableConvNormAct

from geomamba.models._registry import register_model
from geomamba.models.backbones.resnet import ResNetBackbone
from geomamba.models.pretrained import load_backbone_weights
from geomamba.models.segmentation._common import check_image, resize_to

__all__ = ["ASPP", "DeepLabV3Plus", "deeplabv3plus"]


def _conv3x3(in_channels: int, out_channels: int, *, dilation: int = 1, separable: bool) -> nn.Module:
    if separable:
        return SeparableConvNormAct(in_channels, out_channels, 3, dilation=dilation)
    return ConvNormAct(in_channels, out_channels, 3, dilation=dilation)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling.

    Args:
        in_channels: C_in.
        out_channels: C_out of every branch and of the output (256).
        rates: dilation rates of the 3x3 branches.
        separable: depthwise-separable 3x3 branches.
        dropout: dropout after the projection.

    Shapes: ``(B, C_in, H, W)`` -> ``(B, C_out, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        out_channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        separable: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [
                ConvNormAct(in_channels, out_channels, 1),
                *(_conv3x3(in_channels, out_channels, dilation=r, separable=separable) for r in rates),
            ]
        )
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True)
        )
        self.project = nn.Sequential(
            ConvNormAct(out_channels * (len(rates) + 2), out_channels, 1), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [branch(x) for branch in self.branches]
        parts.append(self.pool(x).expand(-1, -1, *x.shape[2:]))
        return self.project(torch.cat(parts, dim=1))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ segmentation network.

    Args:
        in_channels: input bands (a pretrained first conv is adapted).
        num_classes: output classes (6).
        backbone_depth: ResNet depth, 50 (default), 34 or 18.
        output_stride: 16 (default) or 8; the ASPP rates are doubled at 8.
        atrous_rates: ASPP rates at output stride 16.
        aspp_channels: width of the ASPP and of the decoder (256).
        low_level_channels: width of the reduced stride-4 map (48).
        separable: depthwise-separable atrous and decoder convs (True).
        resnet_layers, resnet_channels: ResNet blocks per stage and stage widths (tiny test variants).

    Shapes: ``(B, in_channels, H, W)`` -> logits ``(B, num_classes, H, W)``, any H, W.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 6,
        backbone_depth: int = 50,
        output_stride: int = 16,
        atrous_rates: Sequence[int] = (6, 12, 18),
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        separable: bool = True,
        resnet_layers: Sequence[int] | None = None,
        resnet_channels: Sequence[int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        self.in_channels = in_channels
        self.backbone = ResNetBackbone(
            depth=backbone_depth,
            in_channels=in_channels,
            layers=resnet_layers,
            channels=resnet_channels,
            output_stride=output_stride,
        )
        low, high = self.backbone.out_channels[0], self.backbone.out_channels[-1]
        rates = [r * 16 // output_stride for r in atrous_rates]
        self.aspp = ASPP(high, out_channels=aspp_channels, rates=rates, separable=separable)
        self.reduce = ConvNormAct(low, low_level_channels, 1)
        self.decoder = nn.Sequential(
            _conv3x3(aspp_channels + low_level_channels, aspp_channels, separable=separable),
            _conv3x3(aspp_channels, aspp_channels, separable=separable),
        )
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_channels, type(self).__name__)
        feats = self.backbone(x)
        low = self.reduce(feats[0])
        y = resize_to(self.aspp(feats[-1]), low.shape[2:])
        y = self.decoder(torch.cat([y, low], dim=1))
        return resize_to(self.classifier(y), x.shape[2:])


@register_model(task="segmentation")
def deeplabv3plus(pretrained: str | Path | None = None, **kwargs) -> DeepLabV3Plus:
    """DeepLabV3+ with a ResNet-50 at output stride 16, separable ASPP (6, 12, 18) and decoder.
    ``pretrained``: a local ImageNet ResNet file (torchvision/timm key names) of the chosen depth."""
    model = DeepLabV3Plus(**kwargs)
    load_backbone_weights(model.backbone, pretrained, what="deeplabv3plus: ResNet backbone")
    return model
