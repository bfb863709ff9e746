"""Mix Transformer (MiT): SegFormer's hierarchical transformer encoder (Xie et al. 2021).

Four stages; stage ``i``: overlapping patch embedding (conv k7/s4 for the first, k3/s2 after), then
``depths[i]`` blocks of efficient self-attention (keys/values spatially reduced by a ``sr_ratios[i]``
strided conv) and Mix-FFN (Linear -> depthwise 3x3 conv -> GELU -> Linear), then LayerNorm.

Module names follow the official MiT checkpoints (``patch_embed1.proj``, ``block1.0.attn.q``,
``block1.0.attn.kv``, ``block1.0.attn.sr``, ``block1.0.mlp.dwconv.dwconv``, ``norm1`` ...), so an
ImageNet ``mit_b1.pth`` loads with :func:`geomamba.models.pretrained.load_backbone_weights` (its
classifier ``head.*`` ignored).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_

__all__ = ["MIT_CONFIGS", "MixTransformer"]

# (embed_dims, num_heads, depths) of the SegFormer encoders; all use mlp_ratio 4, sr_ratios (8, 4, 2, 1).
MIT_CONFIGS = {
    "b0": ((32, 64, 160, 256), (1, 2, 5, 8), (2, 2, 2, 2)),
    "b1": ((64, 128, 320, 512), (1, 2, 5, 8), (2, 2, 2, 2)),
    "b2": ((64, 128, 320, 512), (1, 2, 5, 8), (3, 4, 6, 3)),
}


class OverlapPatchEmbed(nn.Module):
    """Strided conv + LayerNorm: ``(B, C_in, H, W) -> ((B, H'*W', C), H', W')``."""

    def __init__(self, *, in_channels: int, embed_dim: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a map reduced ``sr_ratio`` times.

    Shapes: tokens ``(B, H*W, C)`` with the map size ``(H, W)`` -> ``(B, H*W, C)``.
    """

    def __init__(self, dim: int, *, num_heads: int, sr_ratio: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.sr_ratio = num_heads, sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        heads = self.num_heads
        q = self.q(x).view(b, n, heads, c // heads).transpose(1, 2)
        src = x
        if self.sr_ratio > 1:
            src = self.sr(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
            src = self.norm(src)
        k, v = self.kv(src).view(b, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _DWConv(nn.Module):
    """Depthwise 3x3 conv on tokens ``(B, H*W, C)`` seen as a ``(B, C, H, W)`` map."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """Linear (C -> hidden) -> depthwise 3x3 conv -> GELU -> Linear (hidden -> C) on ``(B, H*W, C)``."""

    def __init__(self, dim: int, *, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = _DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class MiTBlock(nn.Module):
    """``x + DropPath(Attn(LN(x)))`` then ``x + DropPath(MixFFN(LN(x)))`` on ``(B, H*W, C)``."""

    def __init__(
        self, dim: int, *, num_heads: int, sr_ratio: int, mlp_ratio: float, drop_path: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientSelfAttention(dim, num_heads=num_heads, sr_ratio=sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, hidden=int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MixTransformer(nn.Module):
    """SegFormer's MiT encoder.

    Args:
        in_channels: input bands.
        embed_dims, num_heads, depths: per stage (MiT-b1: (64, 128, 320, 512), (1, 2, 5, 8), (2, 2, 2, 2)).
        sr_ratios: key/value reduction per stage.
        mlp_ratio: Mix-FFN hidden ratio.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.

    Shapes:
        ``(B, in_channels, H, W)`` -> 4 maps ``(B, embed_dims[i], H / 2**(i+2), W / 2**(i+2))`` (rounded up).
    """

    pretrained_input_conv = "patch_embed1.proj.weight"
    pretrained_ignore = ("head.*",)

    def __init__(
        self,
        *,
        in_channels: int = 3,
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        depths: Sequence[int] = (2, 2, 2, 2),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        if not len(embed_dims) == len(num_heads) == len(depths) == len(sr_ratios) == 4:
            raise ValueError("embed_dims, num_heads, depths and sr_ratios must each give 4 stages")
        self.out_channels = tuple(embed_dims)
        self.strides = (4, 8, 16, 32)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        start = 0
        for i in range(4):
            setattr(
                self,
                f"patch_embed{i + 1}",
                OverlapPatchEmbed(
                    in_channels=in_channels if i == 0 else embed_dims[i - 1],
                    embed_dim=embed_dims[i],
                    patch_size=7 if i == 0 else 3,
                    stride=4 if i == 0 else 2,
                ),
            )
            blocks = [
                MiTBlock(
                    embed_dims[i],
                    num_heads=num_heads[i],
                    sr_ratio=sr_ratios[i],
                    mlp_ratio=mlp_ratio,
                    drop_path=rates[start + j],
                )
                for j in range(depths[i])
            ]
            start += depths[i]
            setattr(self, f"block{i + 1}", nn.ModuleList(blocks))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i], eps=1e-6))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(4):
            x, h, w = getattr(self, f"patch_embed{i + 1}")(x)
            for blk in getattr(self, f"block{i + 1}"):
                x = blk(x, h, w)
            x = getattr(self, f"norm{i + 1}")(x)
            x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
            outs.append(x)
        return outs
