"""ChangeFormer (Bandara and Patel, IGARSS 2022) with a MiT-b1-like encoder.

A siamese hierarchical transformer encoder (:class:`geomamba.models.backbones.mit.MixTransformer`,
MiT-b1 configuration) gives 4 levels per date. The decoder, per level from the deepest: a linear
projection of each date to ``embed_dim`` (shared between dates), a difference module on the
concatenated pair (3x3 conv -> ReLU -> BN -> 3x3 conv -> ReLU) plus the up-sampled coarser difference;
the four differences are up-sampled to stride 4, fused (1x1 conv + BN), brought to full size by two
transposed convs (x2) each followed by a residual block, and classified by a 3x3 conv.
With ``deep_supervision`` (training mode only) the per-level predictions come back as ``"aux"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from geomamba.models._registry import register_model
from geomamba.models.backbones.mit import MIT_CONFIGS, MixTransformer
from geomamba.models.base import split_bitemporal
from geomamba.models.pretrained import load_backbone_weights

__all__ = ["ChangeFormer", "changeformer", "changeformer_tiny"]


def _difference_module(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(cout),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.ReLU(inplace=True),
    )


def _prediction_head(cin: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, num_classes, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(num_classes),
        nn.Conv2d(num_classes, num_classes, 3, padding=1),
    )


class _ResidualBlock(nn.Module):
    """``x + 0.1 * conv3x3(ReLU(conv3x3(x)))``: ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * self.conv2(F.relu(self.conv1(x)))


class ChangeFormer(nn.Module):
    """ChangeFormer change detector.

    Args:
        in_channels: bands per date.
        num_classes: output classes (2).
        embed_dims, num_heads, depths, sr_ratios: MiT encoder configuration (default MiT-b1).
        embed_dim: decoder width (256).
        drop_path_rate: encoder stochastic depth.
        deep_supervision: in training mode return ``{"out", "aux"}`` with the 4 per-level predictions.

    Shapes:
        ``(B, 2, C, H, W)`` or two ``(B, C, H, W)`` -> logits ``(B, num_classes, H, W)``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 2,
        embed_dims: Sequence[int] = MIT_CONFIGS["b1"][0],
        num_heads: Sequence[int] = MIT_CONFIGS["b1"][1],
        depths: Sequence[int] = MIT_CONFIGS["b1"][2],
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        embed_dim: int = 256,
        drop_path_rate: float = 0.1,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        self.deep_supervision = deep_supervision
        self.backbone = MixTransformer(
            in_channels=in_channels,
            embed_dims=embed_dims,
            num_heads=num_heads,
            depths=depths,
            sr_ratios=sr_ratios,
            drop_path_rate=drop_path_rate,
        )
        levels = len(self.backbone.out_channels)
        self.proj = nn.ModuleList(nn.Conv2d(c, embed_dim, 1) for c in self.backbone.out_channels)
        self.diff = nn.ModuleList(_difference_module(2 * embed_dim, embed_dim) for _ in range(levels))
        # per-level prediction heads exist only with deep supervision (so every parameter is trained)
        self.pred = nn.ModuleList(
            _prediction_head(embed_dim, num_classes) for _ in range(levels if deep_supervision else 0)
        )
        self.fuse = nn.Sequential(nn.Conv2d(levels * embed_dim, embed_dim, 1), nn.BatchNorm2d(embed_dim))
        self.up2 = nn.ConvTranspose2d(embed_dim, embed_dim, 4, stride=2, padding=1)
        self.res2 = _ResidualBlock(embed_dim)
        self.up1 = nn.ConvTranspose2d(embed_dim, embed_dim, 4, stride=2, padding=1)
        self.res1 = _ResidualBlock(embed_dim)
        self.classifier = nn.Conv2d(embed_dim, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor | dict:
        a, b = split_bitemporal(x, b)
        size = a.shape[2:]
        fa, fb = self.backbone(a), self.backbone(b)
        diffs, preds, prev = [], [], None
        for i in reversed(range(len(fa))):
            d = self.diff[i](torch.cat([self.proj[i](fa[i]), self.proj[i](fb[i])], dim=1))
            if prev is not None:
                d = d + F.interpolate(prev, size=d.shape[2:], mode="bilinear", align_corners=False)
            prev = d
            diffs.append(d)
            if self.deep_supervision and self.training:
                preds.append(self.pred[i](d))
        top = diffs[-1].shape[2:]
        ups = [F.interpolate(d, size=top, mode="bilinear", align_corners=False) for d in diffs[:-1]]
        y = self.fuse(torch.cat([*ups, diffs[-1]], dim=1))
        y = self.res1(self.up1(self.res2(self.up2(y))))
        out = F.interpolate(self.classifier(y), size=size, mode="bilinear", align_corners=False)
        if preds:
            aux = [F.interpolate(p, size=size, mode="bilinear", align_corners=False) for p in preds]
            return {"out": out, "aux": aux}
        return out


@register_model(task="change")
def changeformer(pretrained: str | Path | None = None, **kwargs) -> ChangeFormer:
    """ChangeFormer with a MiT-b1 encoder (dims 64/128/320/512, depths 2/2/2/2) and a 256-wide decoder.

    Parameters: ours 25.24 M (MiT-b1 encoder 13.15 M + decoder 12.09 M; +19 k with deep_supervision). The paper's ChangeFormer (deeper
    encoder, depths 3/3/4/3) reports 41.0 M. ``pretrained``: a local MiT-b1 ImageNet file (``mit_b1.pth``).
    """
    model = ChangeFormer(**kwargs)
    load_backbone_weights(model.backbone, pretrained, what="changeformer: MiT-b1 backbone")
    return model


@register_model(task="change")
def changeformer_tiny(**kwargs) -> ChangeFormer:
    """A small ChangeFormer for tests: MiT widths 8/16/32/64, one block per stage, 16-wide decoder."""
    defaults = dict(embed_dims=(8, 16, 32, 64), num_heads=(1, 1, 2, 2), depths=(1, 1, 1, 1), embed_dim=16)
    return ChangeFormer(**{**defaults, **kwargs})
