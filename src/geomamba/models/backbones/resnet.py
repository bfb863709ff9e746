"""ResNet trunk over timm's ResNet (torchvision-compatible weight names): the stem and ``layer1..layerN``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["RESNET_LAYERS", "ResNetBackbone"]

RESNET_LAYERS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNetBackbone(nn.Module):
    """A ResNet without its classifier, returning the output of every kept stage.

    Built with timm's ``ResNet`` (weights never downloaded); the module names (``conv1``, ``bn1``,
    ``layer1.0.conv1`` ...) are torchvision's, so a torchvision or timm ImageNet ``resnet18`` file loads
    with :func:`geomamba.models.pretrained.load_backbone_weights` (its ``fc.*`` and the dropped stages
    are ignored; ``conv1`` is adapted to ``in_channels``).

    Args:
        depth: 18, 34 or 50.
        in_channels: input bands.
        num_stages: residual stages kept (1-4); BIT keeps 3.
        layers: blocks per stage (default: the depth's, e.g. (2, 2, 2, 2)); fewer for tiny variants.
        channels: stage widths before the block expansion (default (64, 128, 256, 512)).
        output_stride: 32, 16 or 8; the last stages are dilated instead of strided below 32.

    Shapes:
        ``(B, in_channels, H, W)`` -> list of ``(B, out_channels[i], H / strides[i], W / strides[i])``
        (sizes rounded up); strides 4, 8, 16, 32 at output_stride 32.
    """

    pretrained_input_conv = "conv1.weight"

    def __init__(
        self,
        *,
        depth: int = 18,
        in_channels: int = 3,
        num_stages: int = 4,
        layers: Sequence[int] | None = None,
        channels: Sequence[int] = (64, 128, 256, 512),
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        if depth not in RESNET_LAYERS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYERS)}, got {depth}")
        if not 1 <= num_stages <= 4:
            raise ValueError(f"num_stages must be 1..4, got {num_stages}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        block, default_layers = RESNET_LAYERS[depth]
        layers = tuple(layers) if layers is not None else default_layers
        if len(layers) != 4 or len(channels) != 4:
            raise ValueError(f"layers and channels must give 4 stages, got {layers} and {tuple(channels)}")
        net = ResNet(
            block=block,
            layers=layers,
            in_chans=in_channels,
            channels=tuple(channels),
            stem_width=channels[0],
            output_stride=output_stride,
        )
        self.conv1, self.bn1, self.act1, self.maxpool = net.conv1, net.bn1, net.act1, net.maxpool
        self.num_stages = num_stages
        for i in range(num_stages):
            setattr(self, f"layer{i + 1}", getattr(net, f"layer{i + 1}"))
        self.out_channels = tuple(c * block.expansion for c in channels[:num_stages])
        self.strides = tuple(min(4 * 2**i, output_stride) for i in range(num_stages))
        self.pretrained_ignore = ("fc.*", *(f"layer{i + 1}.*" for i in range(num_stages, 4)))

    @property
    def stages(self) -> list[nn.Module]:
        """The residual stages ``layer1..layerN`` in order."""
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv 7x7/2 -> BN -> ReLU -> max-pool 3x3/2: ``(B, C_in, H, W) -> (B, channels[0], H/4, W/4)``."""
        return self.maxpool(self.act1(self.bn1(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs
