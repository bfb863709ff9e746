"""CMDBNet: a CNN–Mamba dual-branch network for remote-sensing semantic segmentation (SPEC §4, seed 002).

::

    image (B, C, H, W)
      ├─ CNN branch: ResNet-34 (torchvision layout)   -> local features  [64, 128, 256, 512] at H/4..H/32
      └─ Mamba branch: VMamba-style VSSBlock stages    -> global features [64, 128, 256, 512] at H/4..H/32
    per level: CrossBranchFusion (cross-branch attention + dual gating)          -> fused [64 .. 512]
    FeaturePyramidAggregation (1x1 laterals, top-down sum, separable 3x3)        -> (256, H/4, W/4)
    BoundaryRefinementModule (with the level-1 fused map as detail)              -> refined + boundary map
    segmentation head (dropout + 1x1 conv, bilinear x4)                          -> (num_classes, H, W)

In training mode the output is ``{"out": logits, "aux": [aux logits], "boundary": (B, 1, H, W) logits}``
(the auxiliary heads classify the level-3 map of each branch), in eval mode the logits tensor. Ablation
switches: ``branches`` ("both", "cnn", "mamba"), ``fusion`` ("cross_gated", "attention", "gating",
"sum", "concat"), ``boundary``, ``aux_heads``; ``low_memory`` picks Mamba depths (2, 2, 4, 2) instead of
(2, 2, 6, 2); ``checkpoint_cnn`` / ``checkpoint_mamba`` turn on gradient checkpointing of the stages.

Plug-in places (``CMDBNet.plugin_places()``, used by the ``plugins`` option and
``geomamba.layers.plugins.apply_plugins``), level i = 1 (H/4) .. 4 (H/32):

- ``encoder.cnn.stage{i}.output`` / ``encoder.mamba.stage{i}.output`` (kind block: an empty slot after
  stage i of that branch, when the branch exists); groups ``encoder.cnn.output``, ``encoder.mamba.output``.
- ``fusion.level{i}.attention`` (kind interaction on the (CNN, Mamba) pair: replaces the cross-branch
  attention; a block plug-in there is applied to both branches with shared weights);
  ``fusion.level{i}.channel_attention`` (kind gate: the channel gate computed from the Mamba map that
  selects CNN channels, ``c * (1 + gate(m))``) and ``fusion.level{i}.spatial_attention`` (kind gate: the
  spatial gate computed from the CNN map, ``m * (1 + gate(c))``); groups ``fusion.attention``,
  ``fusion.channel_attention``, ``fusion.spatial_attention``. Present with the fusions that have the
  cross-branch attention (``cross_gated``, ``attention``).
- ``decoder.output`` (kind block, width ``decoder_dim``: runs after the feature-pyramid aggregation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from timm.layers import ConvNormAct, SeparableConvNormAct

from geomamba.layers.boundary_refinement import BoundaryRefinementModule
from geomamba.layers.checkpoint import checkpoint_module
from geomamba.layers.cross_branch_fusion import CrossBranchAttention, CrossBranchFusion
from geomamba.layers.plugins import PluginPlace, add_group_places, apply_plugins
from geomamba.models._registry import register_model
from geomamba.models.backbones.resnet import ResNetBackbone
from geomamba.models.backbones.vmamba import VMambaBackbone
from geomamba.models.pretrained import load_backbone_weights
from geomamba.models.segmentation._common import check_image, resize_to

__all__ = [
    "BRANCHES",
    "FUSIONS",
    "CMDBNet",
    "FeaturePyramidAggregation",
    "cmdbnet",
    "cmdbnet_cnn_only",
    "cmdbnet_mamba_only",
    "cmdbnet_no_boundary",
    "cmdbnet_no_fusion",
    "cmdbnet_tiny",
]

BRANCHES = ("both", "cnn", "mamba")
FUSIONS = ("cross_gated", "attention", "gating", "sum", "concat")
DEPTHS_DEFAULT = (2, 2, 6, 2)
DEPTHS_LOW_MEMORY = (2, 2, 4, 2)


class _SumFusion(nn.Module):
    """No fusion module: ``cnn + mamba``."""

    def forward(self, cnn: torch.Tensor, mamba: torch.Tensor) -> torch.Tensor:
        return cnn + resize_to(mamba, cnn.shape[2:])


class _ConcatFusion(nn.Module):
    """No fusion module beyond a channel concatenation and a 1x1 conv-BN-ReLU (2C -> C)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = ConvNormAct(2 * channels, channels, 1)

    def forward(self, cnn: torch.Tensor, mamba: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([cnn, resize_to(mamba, cnn.shape[2:])], dim=1))


def _build_fusion(kind: str, channels: int, reduction: int) -> nn.Module:
    if kind == "sum":
        return _SumFusion()
    if kind == "concat":
        return _ConcatFusion(channels)
    return CrossBranchFusion(
        channels,
        attention=kind in ("cross_gated", "attention"),
        gating=kind in ("cross_gated", "gating"),
        reduction=reduction,
    )


class FeaturePyramidAggregation(nn.Module):
    """Aggregate the fused levels into one map at the finest level (FPN-style top-down pathway).

    ``l_i = ConvBNReLU1x1(f_i)`` (C_i -> D); ``p_4 = l_4``, ``p_i = l_i + up(p_{i+1})``; output
    ``SeparableConvBNReLU3x3(p_1)``.

    Args:
        in_channels: C_i of each level, finest first.
        dim: D, the output width (256 in CMDBNet).

    Shapes: list of ``(B, C_i, H_i, W_i)`` (finest first) -> ``(B, D, H_1, W_1)``.
    """

    def __init__(self, in_channels: Sequence[int], *, dim: int = 256) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(ConvNormAct(c, dim, 1) for c in in_channels)
        self.smooth = SeparableConvNormAct(dim, dim, 3)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(feats) != len(self.laterals):
            raise ValueError(
                f"FeaturePyramidAggregation expects {len(self.laterals)} levels, got {len(feats)}"
            )
        p = self.laterals[-1](feats[-1])
        for i in reversed(range(len(feats) - 1)):
            lat = self.laterals[i](feats[i])
            p = lat + resize_to(p, lat.shape[2:])
        return self.smooth(p)


def _aux_head(in_channels: int, hidden: int, num_classes: int) -> nn.Sequential:
    """FCN-style auxiliary head: 3x3 conv-BN-ReLU -> dropout 0.1 -> 1x1 conv."""
    return nn.Sequential(
        ConvNormAct(in_channels, hidden, 3), nn.Dropout2d(0.1), nn.Conv2d(hidden, num_classes, 1)
    )


class CMDBNet(nn.Module):
    """CNN–Mamba dual-branch segmentation network (see the module docstring for the data flow).

    Args:
        in_channels: input bands (any count; a pretrained ResNet's first conv is adapted).
        num_classes: output classes (6: ISPRS Potsdam/Vaihingen; 7 for LoveDA).
        branches: ``"both"`` (default), ``"cnn"`` or ``"mamba"`` (single-branch ablations).
        fusion: per-level fusion of the two branches: ``"cross_gated"`` (cross-branch attention + dual
            gating, default), ``"attention"`` (attention, then sum), ``"gating"`` (dual gating only),
            ``"sum"`` or ``"concat"`` (no fusion module: a plain sum / concat + 1x1 conv).
        boundary: use the boundary refinement module (and output the boundary map).
        aux_heads: auxiliary classifiers on the level-3 map of each branch (training outputs ``"aux"``).
        low_memory: Mamba depths (2, 2, 4, 2) instead of (2, 2, 6, 2) (when ``mamba_depths`` is not given).
        cnn_depth: ResNet depth of the CNN branch, 34 (default) or 18.
        cnn_layers, cnn_channels: ResNet blocks per stage (default: the depth's) and stage widths.
        mamba_dims: Mamba stage widths (default: the CNN's, which they must equal with both branches).
        mamba_depths: VSSBlocks per Mamba stage (default from ``low_memory``).
        d_state, ssm_ratio, mlp_ratio, directions: VSSBlock options (N = 1, ssm_ratio 1, MLP ratio 2).
        drop_path_rate: stochastic depth of the Mamba branch, linear over its blocks up to this rate.
        decoder_dim: width of the aggregated map (256).
        boundary_dim: width of the boundary features (64).
        aux_dim: hidden width of the auxiliary heads (64).
        fusion_reduction: channel-gate reduction of the cross-branch attention (16).
        head_dropout: dropout before the 1x1 classifier (0.1).
        checkpoint_cnn: gradient checkpointing of the ResNet stem and each residual stage (BatchNorm
            statistics are not updated twice, see ``geomamba.layers.checkpoint``).
        checkpoint_mamba: gradient checkpointing of each VSSBlock of the Mamba branch.
        scan_backend: selective-scan backend of every SS2D (``"auto"``, ``"ref"``, ...).
        plugins: ``{place: entry}`` plug-ins put at ``plugin_places()`` after construction (see the
            module docstring), e.g. ``{"fusion.spatial_attention": "dia"}``.

    Shapes:
        ``(B, in_channels, H, W)`` -> logits ``(B, num_classes, H, W)`` (eval), or in training a dict
        with ``"out"``, ``"aux"`` (list of ``(B, num_classes, H, W)``) and ``"boundary"`` ``(B, 1, H, W)``.
        Any H, W (feature sizes are rounded up by each stride-2 step).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 6,
        branches: str = "both",
        fusion: str = "cross_gated",
        boundary: bool = True,
        aux_heads: bool = True,
        low_memory: bool = False,
        cnn_depth: int = 34,
        cnn_layers: Sequence[int] | None = None,
        cnn_channels: Sequence[int] = (64, 128, 256, 512),
        mamba_dims: Sequence[int] | None = None,
        mamba_depths: Sequence[int] | None = None,
        d_state: int = 1,
        ssm_ratio: float = 1.0,
        mlp_ratio: float = 2.0,
        directions: int = 4,
        drop_path_rate: float = 0.1,
        decoder_dim: int = 256,
        boundary_dim: int = 64,
        aux_dim: int = 64,
        fusion_reduction: int = 16,
        head_dropout: float = 0.1,
        checkpoint_cnn: bool = False,
        checkpoint_mamba: bool = False,
        scan_backend: str = "auto",
        plugins: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if branches not in BRANCHES:
            raise ValueError(f"branches must be one of {BRANCHES}, got {branches!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if branches != "both" and fusion != "cross_gated":
            raise ValueError(f"fusion={fusion!r} needs both branches, but branches={branches!r}")
        if cnn_depth not in (18, 34):
            raise ValueError(f"cnn_depth must be 18 or 34 (basic-block ResNets), got {cnn_depth}")
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}")
        if mamba_depths is None:
            mamba_depths = DEPTHS_LOW_MEMORY if low_memory else DEPTHS_DEFAULT
        elif low_memory and tuple(mamba_depths) != DEPTHS_LOW_MEMORY:
            raise ValueError(
                f"low_memory=True sets mamba_depths={DEPTHS_LOW_MEMORY}; got also mamba_depths="
                f"{tuple(mamba_depths)}: give one or the other"
            )
        cnn_channels = tuple(cnn_channels)
        mamba_dims = cnn_channels if mamba_dims is None else tuple(mamba_dims)
        if branches == "both" and mamba_dims != cnn_channels:
            raise ValueError(
                f"the two branches must have the same widths per level, got cnn_channels={cnn_channels} "
                f"and mamba_dims={mamba_dims}"
            )
        self.in_channels, self.num_classes = in_channels, num_classes
        self.branches, self.fusion_kind = branches, fusion
        self.checkpoint_cnn = checkpoint_cnn

        self.cnn: ResNetBackbone | None = None
        self.mamba: VMambaBackbone | None = None
        if branches in ("both", "cnn"):
            self.cnn = ResNetBackbone(
                depth=cnn_depth, in_channels=in_channels, layers=cnn_layers, channels=cnn_channels
            )
        if branches in ("both", "mamba"):
            self.mamba = VMambaBackbone(
                in_channels=in_channels,
                dims=mamba_dims,
                depths=mamba_depths,
                d_state=d_state,
                ssm_ratio=ssm_ratio,
                mlp_ratio=mlp_ratio,
                directions=directions,
                drop_path_rate=drop_path_rate,
                use_checkpoint=checkpoint_mamba,
                backend=scan_backend,
            )
        levels = cnn_channels if self.cnn is not None else mamba_dims
        self.level_channels = tuple(levels)
        # empty plug-in slots after the stages of each branch (places encoder.{branch}.stage{i}.output)
        self.cnn_outputs = nn.ModuleList(nn.Identity() for _ in levels) if self.cnn is not None else None
        self.mamba_outputs = nn.ModuleList(nn.Identity() for _ in levels) if self.mamba is not None else None
        self.fusions = (
            nn.ModuleList(_build_fusion(fusion, c, fusion_reduction) for c in levels)
            if branches == "both"
            else None
        )
        self.decoder = FeaturePyramidAggregation(levels, dim=decoder_dim)
        self.boundary = (
            BoundaryRefinementModule(decoder_dim, detail_channels=levels[0], hidden=boundary_dim)
            if boundary
            else None
        )
        self.head = nn.Sequential(nn.Dropout2d(head_dropout), nn.Conv2d(decoder_dim, num_classes, 1))
        self.aux_heads = None
        if aux_heads:
            n_aux = 2 if branches == "both" else 1
            self.aux_heads = nn.ModuleList(_aux_head(levels[2], aux_dim, num_classes) for _ in range(n_aux))
        self.decoder_dim = decoder_dim
        apply_plugins(self, plugins)

    def plugin_places(self) -> dict[str, PluginPlace]:
        """Where plug-ins may go (see the module docstring)."""
        places: dict[str, PluginPlace] = {}
        for branch, slots in (("cnn", self.cnn_outputs), ("mamba", self.mamba_outputs)):
            for i, c in enumerate(self.level_channels if slots is not None else ()):
                places[f"encoder.{branch}.stage{i + 1}.output"] = PluginPlace(
                    f"{branch}_outputs.{i}",
                    "block",
                    c,
                    doc=f"block after stage {i + 1} of the {branch} branch",
                )
        for i, fusion in enumerate(self.fusions or ()):
            attention = getattr(fusion, "attention", None)
            if attention is None:
                continue
            c, lv = self.level_channels[i], i + 1
            places[f"fusion.level{lv}.attention"] = PluginPlace(
                f"fusions.{i}.attention", "interaction", c, doc=f"cross-branch attention at level {lv}"
            )
            if isinstance(attention, CrossBranchAttention):
                for name, gate in (
                    ("channel_attention", "channel_gate"),
                    ("spatial_attention", "spatial_gate"),
                ):
                    places[f"fusion.level{lv}.{name}"] = PluginPlace(
                        f"fusions.{i}.attention.{gate}", "gate", c, doc=f"{gate} of the fusion at level {lv}"
                    )
        levels = range(1, len(self.level_channels) + 1)
        for group, pattern in (
            ("encoder.cnn.output", "encoder.cnn.stage{i}.output"),
            ("encoder.mamba.output", "encoder.mamba.stage{i}.output"),
            ("fusion.attention", "fusion.level{i}.attention"),
            ("fusion.channel_attention", "fusion.level{i}.channel_attention"),
            ("fusion.spatial_attention", "fusion.level{i}.spatial_attention"),
        ):
            add_group_places(places, group, pattern, levels, doc=f"{pattern} at every level")
        places["decoder.output"] = PluginPlace(
            "decoder", "block", self.decoder_dim, mode="append", doc="block after the pyramid aggregation"
        )
        return places

    def _cnn_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        cnn = self.cnn
        assert cnn is not None
        if not self.checkpoint_cnn:
            return cnn(x)
        x = checkpoint_module(cnn, x, fn=cnn.stem)
        outs = []
        for stage in cnn.stages:
            x = checkpoint_module(stage, x)
            outs.append(x)
        return outs

    def branch_features(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """The per-level maps of each present branch: ``{"cnn": [...], "mamba": [...]}`` (4 maps each)."""
        check_image(x, self.in_channels, type(self).__name__)
        feats = {}
        if self.cnn is not None:
            feats["cnn"] = [slot(f) for slot, f in zip(self.cnn_outputs, self._cnn_features(x))]
        if self.mamba is not None:
            feats["mamba"] = [slot(f) for slot, f in zip(self.mamba_outputs, self.mamba(x))]
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, Any]:
        feats = self.branch_features(x)
        if self.fusions is not None:
            levels = [f(c, m) for f, c, m in zip(self.fusions, feats["cnn"], feats["mamba"])]
        else:
            levels = next(iter(feats.values()))
        y = self.decoder(levels)
        boundary = None
        if self.boundary is not None:
            y, boundary = self.boundary(y, levels[0])
        size = x.shape[2:]
        out = resize_to(self.head(y), size)
        if not self.training or (boundary is None and self.aux_heads is None):
            return out
        result: dict[str, Any] = {"out": out}
        if self.aux_heads is not None:
            result["aux"] = [resize_to(head(f[2]), size) for head, f in zip(self.aux_heads, feats.values())]
        if boundary is not None:
            result["boundary"] = resize_to(boundary, size)
        return result


def _build(pretrained: str | Path | None, defaults: dict[str, Any], kwargs: dict[str, Any]) -> CMDBNet:
    model = CMDBNet(**{**defaults, **kwargs})
    if model.cnn is not None:
        load_backbone_weights(model.cnn, pretrained, what="cmdbnet: ResNet CNN branch")
    elif pretrained is not None:
        raise ValueError(
            f"pretrained={pretrained!s} is a ResNet file, but this CMDBNet has no CNN branch "
            f"(branches={model.branches!r})"
        )
    return model


@register_model(task="segmentation")
def cmdbnet(pretrained: str | Path | None = None, **kwargs) -> CMDBNet:
    """CMDBNet: ResNet-34 + VMamba branch (dims 64-512, depths (2, 2, 6, 2); ``low_memory=True``: (2, 2, 4, 2)),
    d_state 1, ssm_ratio 1, MLP ratio 2, cross-branch attention + dual gating, boundary refinement.
    ``pretrained``: a local ImageNet ResNet-34 file (torchvision/timm key names) for the CNN branch."""
    return _build(pretrained, {}, kwargs)


@register_model(task="segmentation")
def cmdbnet_cnn_only(pretrained: str | Path | None = None, **kwargs) -> CMDBNet:
    """Seed ablation row "CNN branch only": the ResNet-34 branch, decoder and head, no boundary module."""
    return _build(pretrained, {"branches": "cnn", "boundary": False}, kwargs)


@register_model(task="segmentation")
def cmdbnet_mamba_only(**kwargs) -> CMDBNet:
    """Seed ablation row "Mamba branch only": the VMamba branch, decoder and head, no boundary module."""
    return _build(None, {"branches": "mamba", "boundary": False}, kwargs)


@register_model(task="segmentation")
def cmdbnet_no_fusion(pretrained: str | Path | None = None, **kwargs) -> CMDBNet:
    """Seed ablation row "CNN + Mamba (no fusion module)": levels summed, no boundary module."""
    return _build(pretrained, {"fusion": "sum", "boundary": False}, kwargs)


@register_model(task="segmentation")
def cmdbnet_no_boundary(pretrained: str | Path | None = None, **kwargs) -> CMDBNet:
    """Seed ablation row "CNN + Mamba + fusion module": the full model without the boundary module."""
    return _build(pretrained, {"boundary": False}, kwargs)


@register_model(task="segmentation")
def cmdbnet_tiny(**kwargs) -> CMDBNet:
    """A toy CMDBNet for tests: widths 8/16/32/64, one block per stage in both branches, decoder 16."""
    defaults = dict(
        cnn_layers=(1, 1, 1, 1),
        cnn_channels=(8, 16, 32, 64),
        mamba_depths=(1, 1, 1, 1),
        drop_path_rate=0.0,
        decoder_dim=16,
        boundary_dim=8,
        aux_dim=8,
        fusion_reduction=4,
    )
    return _build(None, defaults, kwargs)
