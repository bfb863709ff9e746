"""BIT: bitemporal image transformer (Chen, Qi and Shi, IEEE TGRS 2021).

Per date, a ResNet-18 trunk up to ``layer3`` (layer3 dilated, stride 8), nearest up-sampling x2 and a
3x3 conv to ``token_dim`` = 32 channels (stride 4). A semantic tokenizer turns each map into
``token_len`` tokens (spatial softmax attention of a 1x1 conv); the tokens of both dates, plus learned
position embeddings, go through a transformer encoder (context modelling); each date's pixels then
query its refined tokens through a transformer decoder (cross-attention). The absolute difference of the
two refined maps is up-sampled x4 and classified by two 3x3 convs.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from timm.layers import Mlp

from geomamba.models._registry import register_model
from geomamba.models.backbones.resnet import ResNetBackbone
from geomamba.models.base import split_bitemporal
from geomamba.models.pretrained import load_backbone_weights

__all__ = ["BIT", "bit", "bit_tiny"]


class _Attention(nn.Module):
    """Multi-head (cross-)attention with inner width ``heads * dim_head``: ``(B, N, D), (B, M, D) -> (B, N, D)``."""

    def __init__(self, dim: int, *, heads: int, dim_head: int, dropout: float) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        q, k, v = (
            rearrange(t, "b n (h d) -> b h n d", h=self.heads)
            for t in (self.to_q(x), self.to_k(memory), self.to_v(memory))
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class _TransformerLayer(nn.Module):
    """Pre-norm layer: ``x + Attn(LN(x), LN(memory))`` (self-attention when memory is None), ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, *, heads: int, dim_head: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads=heads, dim_head=dim_head, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_dim, act_layer=nn.GELU, drop=dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y if memory is None else self.norm1(memory))
        return x + self.mlp(self.norm2(x))


class BIT(nn.Module):
    """BIT change detector.

    Args:
        in_channels: bands per date.
        num_classes: output classes (2).
        resnet_layers: blocks per ResNet stage (default ResNet-18's (2, 2, 2, 2); only 3 stages are used).
        resnet_channels: ResNet stage widths (default ResNet-18's (64, 128, 256, 512)).
        token_dim: channels of the feature map and of the tokens (32).
        token_len: tokens per date (4).
        enc_depth, dec_depth: transformer encoder / decoder layers (1, 8).
        heads, dim_head, dec_dim_head: attention heads and per-head widths of encoder / decoder (8, 64, 64).
        mlp_dim: transformer MLP hidden width (2 * token_dim = 64).
        dropout: transformer dropout.

    Shapes:
        ``(B, 2, C, H, W)`` or two ``(B, C, H, W)`` -> logits ``(B, num_classes, H, W)``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 2,
        resnet_layers: tuple[int, int, int, int] = (2, 2, 2, 2),
        resnet_channels: tuple[int, int, int, int] = (64, 128, 256, 512),
        token_dim: int = 32,
        token_len: int = 4,
        enc_depth: int = 1,
        dec_depth: int = 8,
        heads: int = 8,
        dim_head: int = 64,
        dec_dim_head: int = 64,
        mlp_dim: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.backbone = ResNetBackbone(
            depth=18,
            in_channels=in_channels,
            num_stages=3,
            layers=resnet_layers,
            channels=resnet_channels,
            output_stride=8,
        )
        self.conv_pred = nn.Conv2d(self.backbone.out_channels[-1], token_dim, 3, padding=1)
        self.conv_a = nn.Conv2d(token_dim, token_len, 1)
        self.pos_embedding = nn.Parameter(torch.randn(1, 2 * token_len, token_dim))
        self.encoder = nn.ModuleList(
            _TransformerLayer(token_dim, heads=heads, dim_head=dim_head, mlp_dim=mlp_dim, dropout=dropout)
            for _ in range(enc_depth)
        )
        self.decoder = nn.ModuleList(
            _TransformerLayer(token_dim, heads=heads, dim_head=dec_dim_head, mlp_dim=mlp_dim, dropout=dropout)
            for _ in range(dec_depth)
        )
        self.classifier = nn.Sequential(
            nn.Conv2d(token_dim, token_dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(token_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(token_dim, num_classes, 3, padding=1),
        )

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, token_dim, H/4, W/4)``: ResNet to layer3 (stride 8), x2, 3x3 conv."""
        f = self.backbone(x)[-1]
        return self.conv_pred(F.interpolate(f, scale_factor=2.0, mode="nearest"))

    def _tokenize(self, f: torch.Tensor) -> torch.Tensor:
        """Semantic tokens ``(B, token_len, token_dim)``: spatial-softmax-weighted sums of ``f``."""
        attn = self.conv_a(f).flatten(2).softmax(dim=-1)  # (B, L, HW)
        return torch.einsum("blp,bcp->blc", attn, f.flatten(2))

    def forward(self, x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        a, b = split_bitemporal(x, b)
        fa, fb = self._features(a), self._features(b)
        tokens = torch.cat([self._tokenize(fa), self._tokenize(fb)], dim=1) + self.pos_embedding
        for layer in self.encoder:
            tokens = layer(tokens)
        ta, tb = tokens.chunk(2, dim=1)
        h, w = fa.shape[2:]
        outs = []
        for f, t in ((fa, ta), (fb, tb)):
            q = rearrange(f, "b c h w -> b (h w) c")
            for layer in self.decoder:
                q = layer(q, t)
            outs.append(rearrange(q, "b (h w) c -> b c h w", h=h, w=w))
        diff = (outs[0] - outs[1]).abs()
        diff = F.interpolate(diff, size=a.shape[2:], mode="bilinear", align_corners=False)
        return self.classifier(diff)


@register_model(task="change")
def bit(pretrained: str | Path | None = None, **kwargs) -> BIT:
    """BIT-R18 (Chen et al. 2021): ResNet-18 to layer3, 4 tokens, encoder depth 1, decoder depth 8.

    Paper: about 3.55 M parameters; ours 3.50 M (no decoder position embedding, the paper code's default).
    ``pretrained``: a local torchvision ResNet-18 ImageNet file for the trunk (else random initialisation).
    """
    model = BIT(**kwargs)
    load_backbone_weights(model.backbone, pretrained, what="bit: resnet18 backbone")
    return model


@register_model(task="change")
def bit_tiny(**kwargs) -> BIT:
    """A small BIT for tests: one block per ResNet stage, 8-dim tokens, one decoder layer."""
    defaults = dict(
        resnet_layers=(1, 1, 1, 1),
        resnet_channels=(8, 16, 32, 64),
        token_dim=8,
        heads=2,
        dim_head=8,
        dec_dim_head=8,
        dec_depth=1,
        mlp_dim=16,
    )
    return BIT(**{**defaults, **kwargs})
