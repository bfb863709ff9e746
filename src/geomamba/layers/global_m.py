"""GlobalM: global multi-head axial self-attention with multi-head interaction (SPEC §3, seed 001).

One block on a channels-first map ``(B, C, H, W) -> (B, C, H, W)``::

    y = LN(x);  q, k, v = Conv1x1(y)                        (C -> 3C)
    a = axial softmax attention of q, k, v per head        (axial_strategy, below)
    a = a + LocalBranch(y)                                 (optional: depthwise 3x3 + 1x1 conv)
    x = x + DropPath(Conv3x3(a))                           (3x3 "multi-head interaction" conv)
    x = x + DropPath(FFN(LN(x)))                           (1x1 conv C -> 4C, GELU, 1x1 conv 4C -> C)

``axial_strategy``:
    ``"row"``     each image row is one attention sequence whose tokens are its W pixels (every pixel
                  attends to all pixels of its row); this is what the seed's code computes.
    ``"column"``  each column is one sequence of H pixel tokens. Row attention of the transposed map,
                  transposed back, equals column attention.
    ``"hybrid"``  the first half of the heads attend along rows, the second half along columns (one
                  layer then mixes both through the 3x3 interaction conv); ``num_heads`` must be even.

Attention is per head with head dimension ``C / num_heads`` and scale ``head_dim ** -0.5``.
The block only sees one date; the ChangerEx backbone applies it to both dates with shared weights.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from timm.layers import DropPath, LayerNorm2d, Mlp

__all__ = ["AXIAL_STRATEGIES", "GlobalM", "axial_attention"]

AXIAL_STRATEGIES = ("row", "column", "hybrid")


def axial_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    axis: str,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Softmax attention along one image axis, per head.

    Args:
        q, k, v: ``(B, heads, head_dim, H, W)``.
        axis: ``"row"`` (sequences are rows, tokens their W pixels) or ``"column"`` (sequences are
            columns, tokens their H pixels).
        dropout_p: attention dropout probability.

    Returns:
        ``(B, heads, head_dim, H, W)``.
    """
    if q.dim() != 5 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(
            f"axial_attention needs q, k, v of one shape (B, heads, head_dim, H, W), got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if axis == "row":
        pattern, back = "b n d h w -> b h n w d", "b h n w d -> b n d h w"
    elif axis == "column":
        pattern, back = "b n d h w -> b w n h d", "b w n h d -> b n d h w"
    else:
        raise ValueError(f"axis must be 'row' or 'column', got {axis!r}")
    qs, ks, vs = (rearrange(t, pattern) for t in (q, k, v))
    out = F.scaled_dot_product_attention(qs, ks, vs, dropout_p=dropout_p)
    return rearrange(out, back)


class GlobalM(nn.Module):
    """Global multi-head axial self-attention block (seed 001's ``GlobalM``).

    Args:
        embed_dim: channels C (must be divisible by ``num_heads``).
        num_heads: attention heads (the seed's run used 32 at C=128; the diary suggests 8).
        axial_strategy: ``"row"``, ``"column"`` or ``"hybrid"`` (see the module docstring).
        local_branch: add a local branch (depthwise 3x3 conv + 1x1 conv on the normalised input) to
            the attention output, the diary's ``use_local_attn`` remedy.
        mlp_ratio: hidden ratio of the FFN (4 in the seed).
        attn_drop: attention dropout probability (training only).
        drop_path: stochastic-depth rate of both residual branches.

    Shapes:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(
        self,
        embed_dim: int,
        *,
        num_heads: int = 8,
        axial_strategy: str = "row",
        local_branch: bool = False,
        mlp_ratio: float = 4.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if axial_strategy not in AXIAL_STRATEGIES:
            raise ValueError(f"axial_strategy must be one of {AXIAL_STRATEGIES}, got {axial_strategy!r}")
        if num_heads < 1 or embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        if axial_strategy == "hybrid" and num_heads % 2:
            raise ValueError(
                f"axial_strategy 'hybrid' splits the heads in two: num_heads must be even, got {num_heads}"
            )
        self.embed_dim, self.num_heads, self.axial_strategy = embed_dim, num_heads, axial_strategy
        self.head_dim = embed_dim // num_heads
        self.attn_drop = attn_drop
        self.norm1 = LayerNorm2d(embed_dim)
        self.qkv_proj = nn.Conv2d(embed_dim, 3 * embed_dim, kernel_size=1)
        self.local = (
            nn.Sequential(
                nn.Conv2d(embed_dim, embed_dim, 3, padding=1, groups=embed_dim),
                nn.Conv2d(embed_dim, embed_dim, 1),
            )
            if local_branch
            else None
        )
        self.mh_interaction = nn.Conv2d(embed_dim, embed_dim, kernel_size=3, padding=1)
        self.norm2 = LayerNorm2d(embed_dim)
        self.ffn = Mlp(embed_dim, int(embed_dim * mlp_ratio), act_layer=nn.GELU, use_conv=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def attention(self, y: torch.Tensor) -> torch.Tensor:
        """Axial multi-head attention of a normalised map ``(B, C, H, W) -> (B, C, H, W)``."""
        qkv = rearrange(self.qkv_proj(y), "b (t n d) h w -> t b n d h w", t=3, n=self.num_heads)
        q, k, v = qkv[0], qkv[1], qkv[2]
        p = self.attn_drop if self.training else 0.0
        if self.axial_strategy == "hybrid":
            half = self.num_heads // 2
            out = torch.cat(
                [
                    axial_attention(q[:, :half], k[:, :half], v[:, :half], axis="row", dropout_p=p),
                    axial_attention(q[:, half:], k[:, half:], v[:, half:], axis="column", dropout_p=p),
                ],
                dim=1,
            )
        else:
            out = axial_attention(q, k, v, axis=self.axial_strategy, dropout_p=p)
        return rearrange(out, "b n d h w -> b (n d) h w")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.embed_dim:
            raise ValueError(
                f"GlobalM({self.embed_dim}) expects (B, {self.embed_dim}, H, W), got {tuple(x.shape)}"
            )
        y = self.norm1(x)
        a = self.attention(y)
        if self.local is not None:
            a = a + self.local(y)
        x = x + self.drop_path(self.mh_interaction(a))
        return x + self.drop_path(self.ffn(self.norm2(x)))

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, axial_strategy={self.axial_strategy!r}"
        )
