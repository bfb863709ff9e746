"""Subtask-driven Mamba hybrid change-detection network (SPEC §2, seed 000) and its variants.

A U-Net over the two dates: a siamese patch embedding, ``len(depths)`` levels of temporal-interaction
encoder blocks (stride-2 downsampling between levels), then, deepest level first, per level:

- skip fusion: ``[A, B]`` (deepest) or ``[up(previous), A, B]`` -> 1x1 conv -> BN -> ReLU;
- decoder: two Mamba stages gated by channel / spatial attention (target-object reconstruction);
- difference module: dual-order derivative edges, difference block, frequency-adaptive Mamba;
- AFF dynamic fusion ``decoder * w + difference * (1 - w)``; upsample to the next level.

A classifier head maps the shallowest fusion to ``num_classes`` logits at the input size; with
``deep_supervision`` a head on every deeper level gives auxiliary logits (training mode only).

Plug-in places (``SubtaskMamba.plugin_places()``, used by the ``plugins`` option and
``geomamba.layers.plugins.apply_plugins``), level i = 1 (shallowest, ``dims[0]``) .. ``len(dims)``:

- ``encoder.stage{i}.interaction`` (kind interaction, an empty slot after the encoder blocks of level i,
  before the features go to the next level and to the decoder side); group ``encoder.interaction``.
- ``decoder.level{i}.channel_attention`` / ``decoder.level{i}.spatial_attention`` (kind gate: the decoder
  multiplies ``SS2D(h) * attention(h)``, width ``int(ssm_ratio * dims[i-1])``); groups
  ``decoder.channel_attention`` / ``decoder.spatial_attention`` (every level). Absent when the ablation
  removes that attention.
- ``difference.level{i}.mamba`` (kind block: the frequency-adaptive Mamba block after the difference
  block; absent in ``di_*`` versions without it); group ``difference.mamba``.
- ``difference.level{i}.output`` (kind block, an empty slot after the difference module); group
  ``difference.output``.

The slots hold no parameters, so checkpoints without plug-ins keep their keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from geomamba.layers.difference_module import EdgeAwareDifferenceModule
from geomamba.layers.embed import Downsample, PatchEmbed, Upsample
from geomamba.layers.fusion import AttentionalFeatureFusion, ConcatFusion
from geomamba.layers.heads import ClassifierHead
from geomamba.layers.mamba_decoder import MambaAttentionDecoder
from geomamba.layers.plugins import PluginPlace, add_group_places, apply_plugins, plugin_from_config
from geomamba.layers.temporal_encoder import TemporalInteractionEncoderBlock
from geomamba.models._registry import register_model
from geomamba.models.base import split_bitemporal
from geomamba.models.change._subtask_ablation import SubtaskAblation, resolve_ablation

__all__ = ["SubtaskMamba"]


class SubtaskMamba(nn.Module):
    """The flagship change-detection network.

    Args:
        in_channels: bands per date (any number).
        num_classes: output classes (2: unchanged, changed).
        dims: channels per level (C1, C2, C3).
        depths: encoder blocks per level.
        patch_size: patch-embedding stride (the first level is at input / patch_size).
        encoder, decoder, difference, core, version, code: ablation switches (see
            ``models/change/_subtask_ablation.py``); ``None`` = default / taken from version or code.
        ssm_ratio: inner width of every SS2D branch relative to its input width.
        d_state: SSM state size (default 1).
        dt_rank: delta rank of the SS2D cores (``"auto"`` = ceil(inner / 16)).
        mlp_ratio: encoder MLP hidden ratio.
        scan_backend: selective-scan backend passed to every ``SS2DCore``.
        edge_trainable: derivative kernels train after initialisation (False: fixed buffers).
        dog_sigmas: ``(sigma1, sigma2)`` of the second-order (DoG) operator.
        difference_mode: difference-block inputs: ``"abs_concat"``, ``"abs"`` or ``"concat"``.
        fadc_adakern, fadc_freq_select, fadc_max_dilation: FADC options of the frequency-adaptive Mamba.
        fadc_sampler: how FADC samples its dilated taps: ``auto``, ``taps``, ``composed`` or ``deform``
            (same values; see ``layers/fadc.py``).
        attention_reduction: channel-attention MLP reduction.
        deep_supervision: return auxiliary logits of the deeper levels in training mode.
        pad_input: reflect-pad inputs whose H, W are not multiples of ``total_stride`` and crop the
            logits back (default: such inputs raise a ValueError).
        drop_path_rate: stochastic depth, linear over the encoder blocks from 0 to this rate.
        plugins: ``{place: entry}`` plug-ins put at ``plugin_places()`` after construction (see the
            module docstring), e.g. ``{"decoder.spatial_attention": "dia"}``.

    Shapes: ``(B, 2, C, H, W)`` or two ``(B, C, H, W)`` -> logits ``(B, num_classes, H, W)``; in training
    with ``deep_supervision``: ``{"out": logits, "aux": [level 2 logits, level 3 logits, ...]}``, all at
    the input size.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 2,
        dims: Sequence[int] = (64, 128, 256),
        depths: Sequence[int] = (2, 2, 10),
        patch_size: int = 4,
        encoder: str | None = None,
        decoder: str | None = None,
        difference: str | None = None,
        core: str | None = None,
        version: str | None = None,
        code: str | Sequence[int] | None = None,
        ssm_ratio: float = 2.0,
        d_state: int = 1,
        dt_rank: int | str = "auto",
        mlp_ratio: float = 4.0,
        scan_backend: str = "auto",
        edge_trainable: bool = True,
        dog_sigmas: tuple[float, float] = (0.5, 1.0),
        difference_mode: str = "abs_concat",
        fadc_adakern: bool = False,
        fadc_freq_select: bool = False,
        fadc_max_dilation: float = 4.0,
        fadc_sampler: str = "auto",
        attention_reduction: int = 16,
        deep_supervision: bool = False,
        pad_input: bool = False,
        drop_path_rate: float = 0.0,
        plugins: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        dims, depths = tuple(int(d) for d in dims), tuple(int(d) for d in depths)
        if not dims or len(dims) != len(depths) or min(dims) < 1 or min(depths) < 1:
            raise ValueError(f"dims {dims} and depths {depths} must be non-empty, of equal length, all >= 1")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels ({in_channels}) and num_classes ({num_classes}) must be >= 1")
        self.ablation: SubtaskAblation = resolve_ablation(
            encoder=encoder, decoder=decoder, difference=difference, core=core, version=version, code=code
        )
        ab = self.ablation
        self.in_channels, self.num_classes, self.dims, self.depths = in_channels, num_classes, dims, depths
        self.patch_size, self.deep_supervision, self.pad_input = patch_size, deep_supervision, pad_input
        self.total_stride = patch_size * 2 ** (len(dims) - 1)
        ssm = {"ssm_ratio": ssm_ratio, "d_state": d_state, "dt_rank": dt_rank, "scan_backend": scan_backend}

        self.embed = PatchEmbed(in_channels, dims[0], patch_size=patch_size)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.downsamples = nn.ModuleList(Downsample(dims[i - 1], dims[i]) for i in range(1, len(dims)))
        self.stages = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            start = sum(depths[:i])
            self.stages.append(
                nn.ModuleList(
                    TemporalInteractionEncoderBlock(
                        dim,
                        siamese_cnn=ab.siamese_cnn,
                        siamese_mlp=ab.siamese_mlp,
                        core=ab.core,
                        mlp_ratio=mlp_ratio,
                        drop_path=rates[start + j],
                        **ssm,
                    )
                    for j in range(depth)
                )
            )
        last = len(dims) - 1
        self.skip_fusions = nn.ModuleList(
            ConcatFusion((2 if i == last else 3) * dim, dim) for i, dim in enumerate(dims)
        )
        self.decoders = nn.ModuleList(
            MambaAttentionDecoder(
                dim,
                channel_attention=ab.channel_attention,
                spatial_attention=ab.spatial_attention,
                reduction=attention_reduction,
                **ssm,
            )
            for dim in dims
        )
        self.differences = nn.ModuleList(
            EdgeAwareDifferenceModule(
                dim,
                first_order=ab.first_order,
                second_order=ab.second_order,
                mamba=ab.mamba,
                dog_sigmas=tuple(dog_sigmas),
                edge_trainable=edge_trainable,
                difference_mode=difference_mode,
                adakern=fadc_adakern,
                freq_select=fadc_freq_select,
                max_dilation=fadc_max_dilation,
                fadc_sampler=fadc_sampler,
                **ssm,
            )
            for dim in dims
        )
        # empty plug-in slots (places encoder.stage{i}.interaction and difference.level{i}.output)
        self.stage_interactions = nn.ModuleList(
            plugin_from_config("none", dim, kind="interaction") for dim in dims
        )
        self.difference_outputs = nn.ModuleList(nn.Identity() for _ in dims)
        self.fusions = nn.ModuleList(AttentionalFeatureFusion(dim) for dim in dims)
        self.upsamples = nn.ModuleList(Upsample(dims[i], dims[i - 1]) for i in range(1, len(dims)))
        self.head = ClassifierHead(dims[0], num_classes)
        self.aux_heads = (
            nn.ModuleList(ClassifierHead(dim, num_classes) for dim in dims[1:]) if deep_supervision else None
        )
        apply_plugins(self, plugins)

    def plugin_places(self) -> dict[str, PluginPlace]:
        """Where plug-ins may go (see the module docstring)."""
        places: dict[str, PluginPlace] = {}
        for i, dim in enumerate(self.dims):
            lv = i + 1
            places[f"encoder.stage{lv}.interaction"] = PluginPlace(
                f"stage_interactions.{i}",
                "interaction",
                dim,
                doc=f"interaction of the dates after level {lv}",
            )
            decoder = self.decoders[i]
            for stage, name in (("stage1", "channel_attention"), ("stage2", "spatial_attention")):
                block = getattr(decoder, stage)
                if block.attention is not None:
                    places[f"decoder.level{lv}.{name}"] = PluginPlace(
                        f"decoders.{i}.{stage}.attention",
                        "gate",
                        block.in_proj.out_channels,
                        doc=f"gate of decoder {stage} at level {lv} (y * gate(h))",
                    )
            if self.differences[i].mamba is not None:
                places[f"difference.level{lv}.mamba"] = PluginPlace(
                    f"differences.{i}.mamba", "block", dim, doc=f"Mamba block of the difference at level {lv}"
                )
            places[f"difference.level{lv}.output"] = PluginPlace(
                f"difference_outputs.{i}",
                "block",
                dim,
                doc=f"block after the difference module at level {lv}",
            )
        levels = range(1, len(self.dims) + 1)
        for group, pattern in (
            ("encoder.interaction", "encoder.stage{i}.interaction"),
            ("decoder.channel_attention", "decoder.level{i}.channel_attention"),
            ("decoder.spatial_attention", "decoder.level{i}.spatial_attention"),
            ("difference.mamba", "difference.level{i}.mamba"),
            ("difference.output", "difference.level{i}.output"),
        ):
            add_group_places(places, group, pattern, levels, doc=f"{pattern} at every level")
        return places

    @property
    def version(self) -> str:
        """The ablation version string, e.g. ``en_sicnn_inmlp-de_ca_sa-di_so_fo_m``."""
        return self.ablation.version

    def _pad(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = a.shape[-2:]
        s = self.total_stride
        ph, pw = (-h) % s, (-w) % s
        if not (ph or pw):
            return a, b
        if not self.pad_input:
            raise ValueError(
                f"input H, W = ({h}, {w}) must be multiples of {s} (patch_size {self.patch_size} x "
                f"2^{len(self.dims) - 1} levels); crop or resize, or build the model with pad_input=True "
                "to reflect-pad and crop back"
            )
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(torch.cat([a, b], dim=0), (0, pw, 0, ph), mode=mode)
        return x.chunk(2, dim=0)

    def forward(self, x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor | dict:
        a, b = split_bitemporal(x, b)
        if a.shape[1] != self.in_channels:
            raise ValueError(
                f"SubtaskMamba built for in_channels={self.in_channels} bands, got {a.shape[1]} "
                f"(input shape {tuple(a.shape)} per date)"
            )
        size = tuple(a.shape[-2:])
        a, b = self._pad(a, b)
        fa, fb = self.embed(torch.cat([a, b], dim=0)).chunk(2, dim=0)
        feats = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                fa, fb = self.downsamples[i - 1](torch.cat([fa, fb], dim=0)).chunk(2, dim=0)
            for block in stage:
                fa, fb = block(fa, fb)
            fa, fb = self.stage_interactions[i](fa, fb)
            feats.append((fa, fb))

        levels: list[torch.Tensor] = [None] * len(feats)  # type: ignore[list-item]
        prev = None
        for i in reversed(range(len(feats))):
            fa, fb = feats[i]
            skip = self.skip_fusions[i](fa, fb) if prev is None else self.skip_fusions[i](prev, fa, fb)
            difference = self.difference_outputs[i](self.differences[i](fa, fb))
            levels[i] = self.fusions[i](self.decoders[i](skip), difference)
            if i > 0:
                prev = self.upsamples[i - 1](levels[i], size=tuple(feats[i - 1][0].shape[-2:]))

        padded = tuple(a.shape[-2:])
        logits = self.head(levels[0], size=padded)[..., : size[0], : size[1]]
        if not (self.training and self.aux_heads is not None):
            return logits
        aux = [
            head(lvl, size=padded)[..., : size[0], : size[1]] for head, lvl in zip(self.aux_heads, levels[1:])
        ]
        return {"out": logits, "aux": aux}


@register_model(task="change", tags=("mamba", "flagship"))
def subtask_mamba(**kwargs) -> SubtaskMamba:
    """The flagship: dims (64, 128, 256), depths (2, 2, 10), patch 4."""
    return SubtaskMamba(**{"dims": (64, 128, 256), "depths": (2, 2, 10), **kwargs})


@register_model(task="change", tags=("mamba", "flagship"))
def subtask_mamba_small(**kwargs) -> SubtaskMamba:
    """Wider: dims (80, 160, 320) (the author's 80-channel run), depths (2, 2, 10)."""
    return SubtaskMamba(**{"dims": (80, 160, 320), "depths": (2, 2, 10), **kwargs})


@register_model(task="change", tags=("mamba", "flagship"))
def subtask_mamba_base(**kwargs) -> SubtaskMamba:
    """Wider: dims (96, 192, 384) (the author's 96-channel run), depths (2, 2, 10)."""
    return SubtaskMamba(**{"dims": (96, 192, 384), "depths": (2, 2, 10), **kwargs})


@register_model(task="change", tags=("mamba", "flagship", "tiny"))
def subtask_mamba_tiny(**kwargs) -> SubtaskMamba:
    """A few channels for tests and the CPU demo: dims (8, 16, 32), depths (1, 1, 1)."""
    return SubtaskMamba(**{"dims": (8, 16, 32), "depths": (1, 1, 1), **kwargs})
