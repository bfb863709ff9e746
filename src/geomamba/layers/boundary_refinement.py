"""Boundary refinement module of CMDBNet (seed 002: "boundary detection + enhancement").

From the fused decoder map ``x`` (C channels) and a high-resolution detail map ``d`` (e.g. the first
level, D channels) it predicts a boundary map and refines ``x`` with it::

    e = ConvBNReLU3x3(ConvBNReLU3x3([ConvBNReLU1x1(x), d]))      boundary features (E channels)
    b = Conv1x1(e)                                               boundary logits (1 channel)
    x' = x + ConvBNReLU1x1([x * (1 + sigmoid(b)), e])            boundary-enhanced features

The boundary logits are supervised by a boundary loss (the loss lives in ``geomamba.losses``, not here).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import ConvNormAct

__all__ = ["BoundaryRefinementModule"]


class BoundaryRefinementModule(nn.Module):
    """Predict a boundary map from features and a detail map, and refine the features with it.

    Args:
        channels: C of the features ``x`` (and of the refined output).
        detail_channels: D of the detail map (0: no detail map; ``forward`` then takes ``x`` only).
        hidden: E, width of the boundary features.

    Shapes: ``x (B, C, H, W)``, ``detail (B, D, h, w)`` (resized to H, W when different) ->
    ``(refined (B, C, H, W), boundary logits (B, 1, H, W))``.
    """

    def __init__(self, channels: int, *, detail_channels: int = 0, hidden: int = 64) -> None:
        super().__init__()
        if channels < 1 or hidden < 1 or detail_channels < 0:
            raise ValueError(
                f"channels and hidden must be >= 1 and detail_channels >= 0, got {channels}, {hidden}, "
                f"{detail_channels}"
            )
        self.channels, self.detail_channels = channels, detail_channels
        self.reduce = ConvNormAct(channels, hidden, 1)
        self.edge = nn.Sequential(
            ConvNormAct(hidden + detail_channels, hidden, 3),
            ConvNormAct(hidden, hidden, 3),
        )
        self.boundary = nn.Conv2d(hidden, 1, 1)
        self.refine = ConvNormAct(channels + hidden, channels, 1)

    def forward(
        self, x: torch.Tensor, detail: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"BoundaryRefinementModule: features must be (B, {self.channels}, H, W), got {tuple(x.shape)}"
            )
        e = self.reduce(x)
        if self.detail_channels:
            if detail is None or detail.dim() != 4 or detail.shape[:2] != (x.shape[0], self.detail_channels):
                got = None if detail is None else tuple(detail.shape)
                raise ValueError(
                    f"BoundaryRefinementModule: detail map must be (B={x.shape[0]}, {self.detail_channels}, h, w), "
                    f"got {got}"
                )
            if detail.shape[2:] != x.shape[2:]:
                detail = F.interpolate(detail, size=x.shape[2:], mode="bilinear", align_corners=False)
            e = torch.cat([e, detail], dim=1)
        elif detail is not None:
            raise ValueError("BoundaryRefinementModule was built with detail_channels=0 but got a detail map")
        e = self.edge(e)
        logits = self.boundary(e)
        refined = x + self.refine(torch.cat([x * (1 + torch.sigmoid(logits)), e], dim=1))
        return refined, logits
