"""MambaBCD-style change detector (ChangeMamba, Chen et al., IEEE TGRS 2024).

A siamese VMamba-style encoder (:class:`geomamba.models.backbones.vmamba.VMambaBackbone`) gives 4 levels
per date. The change decoder models the two dates at every level, deepest first, with a
:class:`SpatioTemporalBlock`: three VSSBlock paths see the pair as (1) a channel concatenation, (2) a
column interleaving ``a0 b0 a1 b1 ...`` (a map of width 2W) and (3) side-by-side sequences ``[a | b]``
(width 2W); the five resulting maps (the concatenation path, both halves of the two others) are fused by
a 1x1 conv-BN-ReLU. Coarser levels are up-sampled and added, then smoothed by a residual block; a 1x1
conv classifies at stride 4 and the logits are up-sampled to the input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.resnet import BasicBlock

from geomamba.layers.vss_block import VSSBlock
from geomamba.models._registry import register_model
from geomamba.models.backbones.vmamba import VMambaBackbone
from geomamba.models.base import split_bitemporal
from geomamba.models.pretrained import load_backbone_weights

__all__ = ["MambaBCD", "SpatioTemporalBlock", "interleave_columns", "mamba_bcd", "mamba_bcd_tiny"]


def interleave_columns(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` x 2 -> ``(B, C, H, 2W)`` with ``a`` in the even and ``b`` in the odd columns."""
    return torch.stack([a, b], dim=-1).flatten(-2)


class SpatioTemporalBlock(nn.Module):
    """One decoder level: the pair modelled by concatenation, interleaving and side-by-side sequences.

    Args:
        in_channels: channels C of each date's feature.
        dim: decoder width D.
        block_kwargs: VSSBlock options (d_state, ssm_ratio, mlp_ratio, drop_path, directions, backend).

    Shapes: ``(a, b)``, each ``(B, C, H, W)`` -> ``(B, D, H, W)``.
    """

    def __init__(self, in_channels: int, dim: int, **block_kwargs) -> None:
        super().__init__()
        self.proj_concat = nn.Conv2d(2 * in_channels, dim, 1)
        self.proj_interleave = nn.Conv2d(in_channels, dim, 1)
        self.proj_side = nn.Conv2d(in_channels, dim, 1)
        self.vss_concat = VSSBlock(dim, channels_last=False, **block_kwargs)
        self.vss_interleave = VSSBlock(dim, channels_last=False, **block_kwargs)
        self.vss_side = VSSBlock(dim, channels_last=False, **block_kwargs)
        self.fuse = nn.Sequential(nn.Conv2d(5 * dim, dim, 1), nn.BatchNorm2d(dim), nn.ReLU(inplace=True))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        w = a.shape[-1]
        p_cat = self.vss_concat(self.proj_concat(torch.cat([a, b], dim=1)))
        p_int = self.vss_interleave(self.proj_interleave(interleave_columns(a, b)))
        p_side = self.vss_side(self.proj_side(torch.cat([a, b], dim=-1)))
        parts = [p_cat, p_int[..., 0::2], p_int[..., 1::2], p_side[..., :w], p_side[..., w:]]
        return self.fuse(torch.cat(parts, dim=1))


class MambaBCD(nn.Module):
    """MambaBCD change detector.

    Args:
        in_channels: bands per date.
        num_classes: output classes (2).
        dims, depths, d_state, ssm_ratio, mlp_ratio, directions, drop_path_rate, use_checkpoint, backend:
            the VMamba-style encoder (see ``VMambaBackbone``); the decoder's VSSBlocks share d_state,
            ssm_ratio, mlp_ratio, directions and backend.
        decoder_dim: decoder width (128).
        decoder_drop_path: stochastic depth of the decoder's VSSBlocks (0.1).

    Shapes:
        ``(B, 2, C, H, W)`` or two ``(B, C, H, W)`` -> logits ``(B, num_classes, H, W)``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 2,
        dims: int | Sequence[int] = 96,
        depths: Sequence[int] = (2, 2, 4, 2),
        d_state: int = 1,
        ssm_ratio: float = 2.0,
        mlp_ratio: float = 4.0,
        directions: int = 4,
        drop_path_rate: float = 0.2,
        decoder_dim: int = 128,
        decoder_drop_path: float = 0.1,
        use_checkpoint: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.backbone = VMambaBackbone(
            in_channels=in_channels,
            dims=dims,
            depths=depths,
            d_state=d_state,
            ssm_ratio=ssm_ratio,
            mlp_ratio=mlp_ratio,
            directions=directions,
            drop_path_rate=drop_path_rate,
            use_checkpoint=use_checkpoint,
            backend=backend,
        )
        block_kwargs = dict(
            d_state=d_state,
            ssm_ratio=ssm_ratio,
            mlp_ratio=mlp_ratio,
            directions=directions,
            drop_path=decoder_drop_path,
            backend=backend,
        )
        self.levels = nn.ModuleList(
            SpatioTemporalBlock(c, decoder_dim, **block_kwargs) for c in self.backbone.out_channels
        )
        self.smooth = nn.ModuleList(
            BasicBlock(decoder_dim, decoder_dim) for _ in self.backbone.out_channels[:-1]
        )
        self.classifier = nn.Conv2d(decoder_dim, num_classes, 1)

    def forward(self, x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        a, b = split_bitemporal(x, b)
        fa, fb = self.backbone(a), self.backbone(b)
        p = self.levels[-1](fa[-1], fb[-1])
        for i in reversed(range(len(fa) - 1)):
            q = self.levels[i](fa[i], fb[i])
            p = self.smooth[i](q + F.interpolate(p, size=q.shape[2:], mode="bilinear", align_corners=False))
        return F.interpolate(self.classifier(p), size=a.shape[2:], mode="bilinear", align_corners=False)


@register_model(task="change")
def mamba_bcd(pretrained: str | Path | None = None, **kwargs) -> MambaBCD:
    """MambaBCD, ChangeMamba's "Tiny" size: encoder dims 96, depths (2, 2, 4, 2), SS2D d_state 1,
    ssm_ratio 2, MLP ratio 4, no gate (the VMamba-T "0229flex" configuration ChangeMamba instantiates);
    decoder width 128.

    Parameters: ours 32.62 M (encoder 28.00 M, decoder 4.62 M); reference: MambaBCD-Tiny as instantiated
    by ChangeMamba's code, about 32.6 M. Other sizes are keyword overrides, e.g. ``depths=(2, 2, 9, 2)``
    (35.1 M with ``ssm_ratio=1``). ``pretrained``: a local encoder file in this backbone's key layout (a
    VMamba checkpoint must be converted first; any key that does not fit is named in the error).
    """
    model = MambaBCD(**kwargs)
    load_backbone_weights(model.backbone, pretrained, what="mamba_bcd: VMamba backbone")
    return model


@register_model(task="change")
def mamba_bcd_tiny(**kwargs) -> MambaBCD:
    """A toy MambaBCD for tests (NOT the paper's "Tiny", which is ``mamba_bcd``): dims 8/16/32/64,
    one VSSBlock per stage, decoder width 16."""
    defaults = dict(dims=8, depths=(1, 1, 1, 1), mlp_ratio=2.0, decoder_dim=16, drop_path_rate=0.0)
    return MambaBCD(**{**defaults, **kwargs})
