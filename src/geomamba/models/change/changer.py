"""ChangerEx (Fang et al., "Changer", IEEE TGRS 2023) with a ResNet-18 siamese backbone and interaction layers.

Both dates run through one ResNet-18 (shared weights); after residual stage ``i`` an *interaction layer*
``interaction_cfg[i]`` mixes the two dates' features (SPEC §3): ``None`` (nothing), ``channel_exchange``,
``spatial_exchange`` (``geomamba.layers.exchange``) or ``global_m`` (``geomamba.layers.global_m``, applied
to each date with shared weights). The Changer decode head projects every level of each date to
``channels`` (1x1 conv-BN-ReLU, shared by the dates), up-samples to stride 4, fuses (1x1 conv-BN-ReLU to
``channels/2``), aligns the dates with the flow dual-alignment fusion (FDAF: a predicted flow warps each
date onto the other, the other is subtracted), concatenates, refines with a Mix-FFN and classifies
(dropout 0.1 + 1x1 conv). The seed's OHEM pixel sampler is a loss option, not part of the model.

An interaction entry is ``None``/``"none"``, a plug-in name, a dict ``{"type": name, **options}`` (what a
config file holds) or a module taking and returning a pair; names come from the plug-in registry
(``geomamba.layers.plugins``): the interaction plug-ins ``channel_exchange``/``spatial_exchange`` or any
block plug-in (``global_m``, ``dia``, ...), which is applied to each date with shared weights. Block
plug-ins take their own options (``global_m``: ``num_heads``, ``axial_strategy``, ``local_branch``, ...; the
width is the stage's) and ``dates``: ``"both"`` (default) or ``"first"`` (only the first date, as the seed's
code did).

Plug-in places (``ChangerEx.plugin_places()``, used by the ``plugins`` option and
``geomamba.layers.plugins.apply_plugins``): ``encoder.stage{i}.interaction`` (i = 1..4, kind interaction,
the same slot as ``interaction_cfg[i-1]``) and ``encoder.stage{i}.output`` (kind block, an empty slot
after residual stage i, applied to both dates with shared weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from geomamba.layers.plugins import PluginPlace, SiameseLayer, apply_plugins, plugin_from_config
from geomamba.models._registry import register_model
from geomamba.models.backbones.resnet import ResNetBackbone
from geomamba.models.base import split_bitemporal
from geomamba.models.pretrained import load_backbone_weights

__all__ = [
    "ChangerEx",
    "ChangerHead",
    "FlowDualAlignmentFusion",
    "SiameseLayer",
    "build_interaction",
    "changer_ex",
    "changer_ex_globalm",
    "changer_ex_globalm_tiny",
    "changer_ex_tiny",
]


def build_interaction(spec: Any, channels: int) -> nn.Module:
    """An interaction layer (pair -> pair) for a stage of ``channels`` channels from a config entry:
    ``None``/``"none"``, a plug-in name, a dict ``{"type": name, **options}`` or a module (see
    ``geomamba.layers.plugins``: interaction plug-ins, or any block plug-in applied to both dates)."""
    return plugin_from_config(spec, channels, kind="interaction", where="stage")


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FlowDualAlignmentFusion(nn.Module):
    """FDAF: predict a flow per date from the pair, warp each date, subtract the other date.

    Shapes: ``(x1, x2)``, each ``(B, C, H, W)`` -> ``(B, 2C, H, W)``
    (``[warp(x1, f1) - x2, warp(x2, f2) - x1]``; flows in pixels, 2 channels per date).
    """

    def __init__(self, channels: int, *, kernel_size: int = 5) -> None:
        super().__init__()
        self.flow_make = nn.Sequential(
            nn.Conv2d(2 * channels, 2 * channels, kernel_size, padding=kernel_size // 2, groups=2 * channels),
            nn.InstanceNorm2d(2 * channels),
            nn.GELU(),
            nn.Conv2d(2 * channels, 4, 1, bias=False),
        )

    @staticmethod
    def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """Sample ``x`` (B, C, H, W) at positions shifted by ``flow`` (B, 2, H, W) = (dx, dy) pixels."""
        b, _, h, w = x.shape
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).expand(b, h, w, 2)
        scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=x.device, dtype=x.dtype)
        return F.grid_sample(x, grid + flow.permute(0, 2, 3, 1) * scale, align_corners=True)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        f1, f2 = self.flow_make(torch.cat([x1, x2], dim=1)).chunk(2, dim=1)
        return torch.cat([self.warp(x1, f1) - x2, self.warp(x2, f2) - x1], dim=1)


class _ConvMixFFN(nn.Module):
    """``x + 1x1 conv(GELU(dw3x3(1x1 conv(x))))`` on ``(B, C, H, W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels, channels, 1),
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class ChangerHead(nn.Module):
    """Changer decode head: multi-level features of both dates -> logits at stride 4.

    Args:
        in_channels: channels of each level (strides 4, 8, 16, 32).
        channels: head width (128).
        num_classes: output classes.
        dropout: dropout before the classifier (0.1).

    Shapes: two lists of ``(B, in_channels[i], H_i, W_i)`` -> ``(B, num_classes, H_0, W_0)``.
    """

    def __init__(
        self, in_channels: Sequence[int], *, channels: int = 128, num_classes: int = 2, dropout: float = 0.1
    ):
        super().__init__()
        if channels % 2:
            raise ValueError(f"ChangerHead channels must be even, got {channels}")
        self.convs = nn.ModuleList(_conv_bn_relu(c, channels) for c in in_channels)
        self.fusion_conv = _conv_bn_relu(channels * len(in_channels), channels // 2)
        self.neck = FlowDualAlignmentFusion(channels // 2)
        self.discriminator = _ConvMixFFN(channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def _fuse(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[2:]
        outs = [
            F.interpolate(conv(f), size=size, mode="bilinear", align_corners=False)
            for conv, f in zip(self.convs, feats)
        ]
        return self.fusion_conv(torch.cat(outs, dim=1))

    def forward(self, feats1: Sequence[torch.Tensor], feats2: Sequence[torch.Tensor]) -> torch.Tensor:
        y = self.neck(self._fuse(feats1), self._fuse(feats2))
        return self.classifier(self.dropout(self.discriminator(y)))


class ChangerEx(nn.Module):
    """ChangerEx change detector.

    Args:
        in_channels: bands per date.
        num_classes: output classes (2).
        interaction_cfg: one entry per ResNet stage (see the module docstring).
        resnet_depth, resnet_layers, resnet_channels: the ResNet trunk (default ResNet-18).
        channels: decode-head width (128).
        plugins: ``{place: entry}`` plug-ins put at ``plugin_places()`` after construction, e.g.
            ``{"encoder.stage3.output": "dia", "encoder.stage2.interaction": "global_m"}``.

    Shapes:
        ``(B, 2, C, H, W)`` or two ``(B, C, H, W)`` -> logits ``(B, num_classes, H, W)``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 2,
        interaction_cfg: Sequence[Any] = (None, "spatial_exchange", "channel_exchange", "channel_exchange"),
        resnet_depth: int = 18,
        resnet_layers: Sequence[int] | None = None,
        resnet_channels: Sequence[int] = (64, 128, 256, 512),
        channels: int = 128,
        plugins: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = ResNetBackbone(
            depth=resnet_depth, in_channels=in_channels, layers=resnet_layers, channels=resnet_channels
        )
        if len(interaction_cfg) != self.backbone.num_stages:
            raise ValueError(
                f"interaction_cfg needs one entry per ResNet stage ({self.backbone.num_stages}), got {len(interaction_cfg)}"
            )
        self.interactions = nn.ModuleList(
            build_interaction(spec, c) for spec, c in zip(interaction_cfg, self.backbone.out_channels)
        )
        # empty single-date slots after each stage (plug-in places encoder.stage{i}.output)
        self.stage_outputs = nn.ModuleList(nn.Identity() for _ in self.backbone.out_channels)
        self.head = ChangerHead(self.backbone.out_channels, channels=channels, num_classes=num_classes)
        apply_plugins(self, plugins)

    def plugin_places(self) -> dict[str, PluginPlace]:
        """Where plug-ins may go (see the module docstring)."""
        places = {}
        for i, c in enumerate(self.backbone.out_channels):
            places[f"encoder.stage{i + 1}.interaction"] = PluginPlace(
                f"interactions.{i}", "interaction", c, doc=f"interaction of the dates after stage {i + 1}"
            )
            places[f"encoder.stage{i + 1}.output"] = PluginPlace(
                f"stage_outputs.{i}", "block", c, doc=f"single-date block after stage {i + 1} (both dates)"
            )
        return places

    def forward(self, x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        a, b = split_bitemporal(x, b)
        x1, x2 = self.backbone.stem(a), self.backbone.stem(b)
        feats1, feats2 = [], []
        for stage, post, interaction in zip(self.backbone.stages, self.stage_outputs, self.interactions):
            x1, x2 = interaction(post(stage(x1)), post(stage(x2)))
            feats1.append(x1)
            feats2.append(x2)
        logits = self.head(feats1, feats2)
        return F.interpolate(logits, size=a.shape[2:], mode="bilinear", align_corners=False)


_SEED_001_INTERACTIONS = (
    None,
    {"type": "global_m", "num_heads": 32, "axial_strategy": "row"},
    {"type": "channel_exchange", "p": 0.5},
    {"type": "channel_exchange", "p": 0.5},
)


@register_model(task="change")
def changer_ex(pretrained: str | Path | None = None, **kwargs) -> ChangerEx:
    """ChangerEx-R18 (open-cd's configuration): interactions (None, SpatialExchange(1/2),
    ChannelExchange(1/2), ChannelExchange(1/2)), head width 128.

    Parameters: ours 11.37 M; the Changer paper reports 11.39 M for ChangerEx-R18 (its ResNet-18-V1c deep
    stem is 19 k larger than the torchvision stem used here, so torchvision ImageNet weights load).
    ``pretrained``: a local ResNet-18 ImageNet file for the trunk.
    """
    model = ChangerEx(**kwargs)
    load_backbone_weights(model.backbone, pretrained, what="changer_ex: resnet18 backbone")
    return model


@register_model(task="change")
def changer_ex_globalm(pretrained: str | Path | None = None, **kwargs) -> ChangerEx:
    """The seed-001 configuration: interactions (None, GlobalM(128, 32 heads, 'row'), ChannelExchange(1/2),
    ChannelExchange(1/2)). Parameters: ours 11.70 M (GlobalM at 128 channels adds 0.33 M)."""
    model = ChangerEx(**{"interaction_cfg": _SEED_001_INTERACTIONS, **kwargs})
    load_backbone_weights(model.backbone, pretrained, what="changer_ex_globalm: resnet18 backbone")
    return model


_TINY = {"resnet_layers": (1, 1, 1, 1), "resnet_channels": (8, 16, 32, 64), "channels": 16}


@register_model(task="change")
def changer_ex_tiny(**kwargs) -> ChangerEx:
    """A small ChangerEx for tests: one block per stage, widths 8/16/32/64, head width 16."""
    return ChangerEx(**{**_TINY, **kwargs})


@register_model(task="change")
def changer_ex_globalm_tiny(**kwargs) -> ChangerEx:
    """``changer_ex_tiny`` with the seed-001 interactions (GlobalM with 4 heads at 16 channels)."""
    cfg = (
        None,
        {"type": "global_m", "num_heads": 4, "axial_strategy": "row"},
        "channel_exchange",
        "channel_exchange",
    )
    return ChangerEx(**{**_TINY, "interaction_cfg": cfg, **kwargs})
