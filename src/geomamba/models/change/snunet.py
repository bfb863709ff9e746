"""SNUNet-CD (Fang et al., IEEE GRSL 2021): a siamese NestedUNet (UNet++) with ensemble channel attention.

A shared 5-level encoder (widths c, 2c, 4c, 8c, 16c; each node conv3x3-BN-ReLU-conv3x3-BN plus a skip
from the first conv, ReLU) runs on both dates; the dense nested decoder nodes ``X(i, j)`` concatenate
both dates' encoder features at level i, the earlier nodes of the level and the up-sampled (transposed
conv x2) node ``X(i+1, j-1)`` (the second date's encoder feature for j = 1). The four outputs of level 0
are fused by the ensemble channel attention module (ECAM) and a 1x1 conv gives the logits.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from geomamba.models._registry import register_model
from geomamba.models.base import split_bitemporal

__all__ = ["SNUNet", "snunet", "snunet_c16", "snunet_c32", "snunet_tiny"]


class _NestedBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the first conv's output, ReLU: ``(B, cin, H, W) -> (B, cout, H, W)``."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 3, padding=1), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, cout, 3, padding=1), nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.conv1(x)
        y = self.bn2(self.conv2(F.relu(self.bn1(identity))))
        return F.relu(y + identity)


class _ChannelAttention(nn.Module):
    """Sigmoid channel weights from shared MLP(avg-pool) + MLP(max-pool): ``(B, C, H, W) -> (B, C, 1, 1)``."""

    def __init__(self, channels: int, ratio: int) -> None:
        super().__init__()
        hidden = max(channels // ratio, 1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        mx = self.fc2(F.relu(self.fc1(F.adaptive_max_pool2d(x, 1))))
        return torch.sigmoid(avg + mx)


def _resize_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Pad (replicate) or crop an up-sampled map to ``ref``'s spatial size (odd input sizes)."""
    dh, dw = ref.shape[2] - x.shape[2], ref.shape[3] - x.shape[3]
    if dh > 0 or dw > 0:
        x = F.pad(x, (0, max(dw, 0), 0, max(dh, 0)), mode="replicate")
    return x[:, :, : ref.shape[2], : ref.shape[3]]


class SNUNet(nn.Module):
    """SNUNet-CD with ECAM.

    Args:
        in_channels: bands per date.
        num_classes: output classes (2).
        base_channels: width c of the first level (16 or 32 in the paper; 48 for the largest).

    Shapes:
        ``(B, 2, C, H, W)`` or two ``(B, C, H, W)`` -> logits ``(B, num_classes, H, W)``.
    """

    def __init__(self, *, in_channels: int = 3, num_classes: int = 2, base_channels: int = 32) -> None:
        super().__init__()
        f = [base_channels * 2**i for i in range(5)]
        self.enc = nn.ModuleList(
            _NestedBlock(in_channels if i == 0 else f[i - 1], f[i], f[i]) for i in range(5)
        )
        # up[i][j]: transposed conv bringing node X(i+1, j) to level i; node[(i, j)] for j >= 1
        self.up = nn.ModuleDict()
        self.node = nn.ModuleDict()
        for i in range(4):
            for j in range(4 - i):
                self.up[f"{i + 1}_{j}"] = nn.ConvTranspose2d(f[i + 1], f[i + 1], 2, stride=2)
                self.node[f"{i}_{j + 1}"] = _NestedBlock(f[i] * (j + 2) + f[i + 1], f[i], f[i])
        self.ca_inter = _ChannelAttention(4 * f[0], ratio=16)
        self.ca_intra = _ChannelAttention(f[0], ratio=4)
        self.classifier = nn.Conv2d(4 * f[0], num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _encode(self, x: torch.Tensor, levels: int) -> list[torch.Tensor]:
        feats = []
        for i in range(levels):
            x = self.enc[i](x if i == 0 else F.max_pool2d(x, 2))
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        a, b = split_bitemporal(x, b)
        fa = self._encode(a, 4)  # the first date's deepest level is never used
        fb = self._encode(b, 5)
        nodes: dict[tuple[int, int], torch.Tensor] = {(i, 0): fb[i] for i in range(5)}
        for j in range(1, 5):  # column j of the nested decoder, deepest node first
            for i in range(5 - j):
                below = self.up[f"{i + 1}_{j - 1}"](nodes[(i + 1, j - 1)])
                row = [fa[i], fb[i]] + [nodes[(i, k)] for k in range(1, j)]
                nodes[(i, j)] = self.node[f"{i}_{j}"](torch.cat([*row, _resize_to(below, fa[i])], dim=1))
        outs = [nodes[(0, j)] for j in range(1, 5)]
        out = torch.cat(outs, dim=1)
        intra = self.ca_intra(torch.stack(outs).sum(0))
        out = self.ca_inter(out) * (out + intra.repeat(1, 4, 1, 1))
        return self.classifier(out)


@register_model(task="change")
def snunet(**kwargs) -> SNUNet:
    """SNUNet-CD/32 (Fang et al. 2021), the default width. Paper: 12.03 M parameters."""
    return SNUNet(**{"base_channels": 32, **kwargs})


@register_model(task="change")
def snunet_c16(**kwargs) -> SNUNet:
    """SNUNet-CD/16. Paper: 3.01 M parameters."""
    return SNUNet(**{"base_channels": 16, **kwargs})


@register_model(task="change")
def snunet_c32(**kwargs) -> SNUNet:
    """SNUNet-CD/32. Paper: 12.03 M parameters."""
    return SNUNet(**{"base_channels": 32, **kwargs})


@register_model(task="change")
def snunet_tiny(**kwargs) -> SNUNet:
    """A width-4 SNUNet for tests (not a paper configuration)."""
    return SNUNet(**{"base_channels": 4, **kwargs})
