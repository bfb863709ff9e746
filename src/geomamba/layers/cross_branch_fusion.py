"""Fusion of a CNN (local) and a Mamba (global) feature map of one level, as in CMDBNet (seed 002).

``CrossBranchAttention``: each branch is re-weighted by an attention computed from the *other* branch,
with a residual path so that neither branch can be switched off entirely::

    c' = c + c * ChannelGate(m)      the global context of the Mamba branch selects CNN channels
    m' = m + m * SpatialGate(c)      the local structure of the CNN branch selects Mamba positions

``DualGatedFusion``: two independent gates (per pixel and channel), both computed from both branches,
weight the contribution of each branch (not a convex ``g, 1 - g`` pair: both can be open or closed)::

    [g_c, g_m] = sigmoid(Conv1x1([c', m']))          (2C -> 2C)
    f          = ConvBNReLU3x3(g_c * c' + g_m * m')   (C -> C)

``CrossBranchFusion`` chains the two; switches turn either off for ablations (without attention the
branches enter the gates as they are; without gating they are summed before the 3x3 conv).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import ConvNormAct

from geomamba.layers.attention import ChannelAttention, SpatialAttention

__all__ = ["CrossBranchAttention", "CrossBranchFusion", "DualGatedFusion"]


def _check_pair(c: torch.Tensor, m: torch.Tensor, channels: int, who: str) -> torch.Tensor:
    """Validate the two branch maps; resize ``m`` to ``c``'s size when only H, W differ."""
    if c.dim() != 4 or m.dim() != 4 or c.shape[:2] != m.shape[:2] or c.shape[1] != channels:
        raise ValueError(
            f"{who}: expects a CNN map and a Mamba map of shape (B, {channels}, H, W), got "
            f"cnn {tuple(c.shape)} and mamba {tuple(m.shape)}"
        )
    if c.shape[2:] != m.shape[2:]:
        m = F.interpolate(m, size=c.shape[2:], mode="bilinear", align_corners=False)
    return m


class CrossBranchAttention(nn.Module):
    """Re-weight each branch by an attention computed from the other branch (see the module docstring).

    Args:
        channels: C of both maps.
        reduction: hidden width ``max(1, C // reduction)`` of the channel gate's MLP.
        spatial_kernel: odd kernel size of the spatial gate's conv.

    Shapes: ``(cnn (B, C, H, W), mamba (B, C, H, W))`` -> ``(cnn', mamba')``, same shapes.
    """

    def __init__(self, channels: int, *, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ValueError(f"channels and reduction must be >= 1, got {channels} and {reduction}")
        if spatial_kernel < 1 or spatial_kernel % 2 == 0:
            raise ValueError(f"spatial_kernel must be a positive odd number, got {spatial_kernel}")
        self.channels = channels
        self.channel_gate = ChannelAttention(channels, reduction=reduction)
        self.spatial_gate = SpatialAttention(kernel_size=spatial_kernel)

    def forward(self, cnn: torch.Tensor, mamba: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mamba = _check_pair(cnn, mamba, self.channels, type(self).__name__)
        return cnn * (1 + self.channel_gate(mamba)), mamba * (1 + self.spatial_gate(cnn))


class DualGatedFusion(nn.Module):
    """Two independent sigmoid gates from both branches weight each branch, then a 3x3 conv-BN-ReLU.

    Args:
        channels: C of both maps and of the output.
        gating: ``False`` replaces the gates by a plain sum (ablation).

    Shapes: ``(cnn (B, C, H, W), mamba (B, C, H, W))`` -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, *, gating: bool = True) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = channels
        self.gate = nn.Conv2d(2 * channels, 2 * channels, 1) if gating else None
        self.proj = ConvNormAct(channels, channels, 3)

    def forward(self, cnn: torch.Tensor, mamba: torch.Tensor) -> torch.Tensor:
        mamba = _check_pair(cnn, mamba, self.channels, type(self).__name__)
        if self.gate is None:
            return self.proj(cnn + mamba)
        g_cnn, g_mamba = torch.sigmoid(self.gate(torch.cat([cnn, mamba], dim=1))).chunk(2, dim=1)
        return self.proj(g_cnn * cnn + g_mamba * mamba)

    def gates(self, cnn: torch.Tensor, mamba: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two gates ``(g_cnn, g_mamba)``, each ``(B, C, H, W)`` in (0, 1) (for inspection/figures)."""
        if self.gate is None:
            raise RuntimeError("this DualGatedFusion was built with gating=False and has no gates")
        mamba = _check_pair(cnn, mamba, self.channels, type(self).__name__)
        g = torch.sigmoid(self.gate(torch.cat([cnn, mamba], dim=1)))
        return g[:, : self.channels], g[:, self.channels :]


class CrossBranchFusion(nn.Module):
    """Cross-branch attention followed by dual-gated fusion: one level of CMDBNet's fusion.

    Args:
        channels: C of both branch maps and of the fused map.
        attention: use :class:`CrossBranchAttention` (off: the maps go to the gates unchanged).
        gating: use the two gates of :class:`DualGatedFusion` (off: plain sum before the 3x3 conv).
        reduction, spatial_kernel: options of the cross-branch attention.

    Shapes: ``(cnn (B, C, H, W), mamba (B, C, H, W))`` -> fused ``(B, C, H, W)``. A Mamba map of
    another H, W is resized to the CNN map's (bilinear).
    """

    def __init__(
        self,
        channels: int,
        *,
        attention: bool = True,
        gating: bool = True,
        reduction: int = 16,
        spatial_kernel: int = 7,
    ) -> None:
        super().__init__()
        self.attention = (
            CrossBranchAttention(channels, reduction=reduction, spatial_kernel=spatial_kernel)
            if attention
            else None
        )
        self.fusion = DualGatedFusion(channels, gating=gating)

    def forward(self, cnn: torch.Tensor, mamba: torch.Tensor) -> torch.Tensor:
        if self.attention is not None:
            cnn, mamba = self.attention(cnn, mamba)
        return self.fusion(cnn, mamba)
