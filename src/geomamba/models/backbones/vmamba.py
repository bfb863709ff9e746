"""VMamba-style hierarchical backbone: a conv stem and four stages of ``VSSBlock``.

Stem ("patch embed v2"): conv 3x3/2 (C_in -> C/2) -> LN -> GELU -> conv 3x3/2 (C/2 -> C) -> LN.
Stage ``i``: ``depths[i]`` :class:`geomamba.layers.vss_block.VSSBlock` of width ``dims[i]``, a LayerNorm on
the stage output, then (except after the last stage) a downsampling conv 3x3/2 (dims[i] -> dims[i+1])
with LayerNorm ("downsample v3"). Outputs are the normalised stage outputs, before downsampling.

The defaults are ChangeMamba's MambaBCD-Tiny encoder (VMamba-T "0229flex"-like): dims 96, depths
(2, 2, 4, 2), d_state 1, ssm_ratio 2, mlp_ratio 4, no gate (28.0 M parameters). The segmentation network
reuses it with depths (2, 2, 4, 2) (low memory) or (2, 2, 6, 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from timm.layers import LayerNorm2d

from geomamba.layers.vss_block import VSSBlock

__all__ = ["VMambaBackbone"]


class VMambaStage(nn.Module):
    """``depth`` VSSBlocks on a channels-last map ``(B, H, W, C) -> (B, H, W, C)``."""

    def __init__(
        self, dim: int, *, depth: int, drop_paths: Sequence[float], use_checkpoint: bool, **block_kwargs
    ):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            VSSBlock(dim, drop_path=drop_paths[j], channels_last=True, **block_kwargs) for j in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            if self.use_checkpoint and self.training and x.requires_grad:
                x = cp.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x


class VMambaBackbone(nn.Module):
    """VMamba-style encoder of VSSBlock stages.

    Args:
        in_channels: input bands.
        dims: stage widths, or one int C for (C, 2C, 4C, 8C).
        depths: VSSBlocks per stage.
        d_state, ssm_ratio, directions, gate, backend: passed to each VSSBlock's SS2D.
        mlp_ratio: VSSBlock MLP ratio (0 disables the MLP).
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        use_checkpoint: gradient checkpointing per block while training (saves memory).

    Shapes:
        ``(B, in_channels, H, W)`` -> 4 maps ``(B, dims[i], ceil(H / 2**(i+2)), ceil(W / 2**(i+2)))``.
    """

    pretrained_input_conv = "patch_embed.0.weight"
    pretrained_ignore = ("classifier.*", "head.*")

    def __init__(
        self,
        *,
        in_channels: int = 3,
        dims: int | Sequence[int] = 96,
        depths: Sequence[int] = (2, 2, 4, 2),
        d_state: int = 1,
        ssm_ratio: float = 2.0,
        mlp_ratio: float = 4.0,
        directions: int = 4,
        gate: bool = False,
        drop_path_rate: float = 0.2,
        use_checkpoint: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if isinstance(dims, int):
            dims = tuple(dims * 2**i for i in range(len(depths)))
        dims, depths = tuple(dims), tuple(depths)
        if len(dims) != len(depths) or not depths:
            raise ValueError(f"dims {dims} and depths {depths} must give the same number of stages")
        if dims[0] % 2:
            raise ValueError(f"the first stage width must be even (the stem halves it), got {dims[0]}")
        self.out_channels, self.depths = dims, depths
        self.strides = tuple(4 * 2**i for i in range(len(dims)))
        self.patch_embed = nn.Sequential(
            nn.Conv2d(in_channels, dims[0] // 2, 3, stride=2, padding=1),
            LayerNorm2d(dims[0] // 2),
            nn.GELU(),
            nn.Conv2d(dims[0] // 2, dims[0], 3, stride=2, padding=1),
            LayerNorm2d(dims[0]),
        )
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        block_kwargs = dict(
            d_state=d_state,
            ssm_ratio=ssm_ratio,
            directions=directions,
            gate=gate,
            mlp_ratio=mlp_ratio,
            backend=backend,
        )
        self.layers = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        self.out_norms = nn.ModuleList()
        start = 0
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            self.layers.append(
                VMambaStage(
                    dim,
                    depth=depth,
                    drop_paths=rates[start : start + depth],
                    use_checkpoint=use_checkpoint,
                    **block_kwargs,
                )
            )
            start += depth
            self.out_norms.append(nn.LayerNorm(dim))
            if i + 1 < len(dims):
                self.downsamples.append(
                    nn.Sequential(
                        nn.Conv2d(dim, dims[i + 1], 3, stride=2, padding=1), LayerNorm2d(dims[i + 1])
                    )
                )
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)  # (B, C, H/4, W/4)
        outs = []
        for i, stage in enumerate(self.layers):
            y = stage(x.permute(0, 2, 3, 1))  # channels-last through the blocks
            outs.append(self.out_norms[i](y).permute(0, 3, 1, 2).contiguous())
            if i < len(self.downsamples):
                x = self.downsamples[i](y.permute(0, 3, 1, 2))
        return outs
