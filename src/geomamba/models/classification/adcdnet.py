"""ADCD-Net: two-stage MS + PAN pixel-wise classification (SPEC §3, seed 003, issue 8).

Each sample is a patch pair centred on one MS pixel (``geomamba.data.mspan``): ``ms (B, C, s, s)`` and
``pan (B, 1, r*s, r*s)``; the model classifies the centre pixel: logits ``(B, num_classes)``.

Stage I, semantic-perception self-supervision (``stage1``, an ``ADCDPriorNet``):
    per modality: MobileNetV3 units (``ModalityEncoder``; the PAN branch strides down by r to the MS
    size) -> DIA on the deepest features (distortion mode; gradient scales (0.4, 0.1) on the MS branch,
    where the global mean map dominates, and swapped (0.1, 0.4) on the PAN branch, where local texture
    dominates: our reading of the seed's "e.g. in the MS branch") -> priors: weight mask
    ``sigmoid(DIA features)`` ``(B, C, s, s)`` and semantic sequence ``MLP(flatten(pool(DIA features)))``
    ``(B, T, dim)``. Loss: MSE between the MS and PAN features at every level (each unit, the MLP hidden
    layer, the sequence): ``geomamba.losses.adcd.similarity_loss``.
Stage II, multi-branch supervision (``stage2``, an ``ADCDClassifierNet``), with stage I frozen:
    new MS and PAN encoders -> deepest features weighted by stage I's masks with a residual
    (``f * mask + f``) -> concatenation -> 1x1 conv fusion -> global pooling -> MLP classifier (main CE
    loss). Auxiliary: one DTM per modality on that modality's depth features (shallow to deep, the
    weighted deepest one last) with stage I's semantic sequence appended -> auxiliary logits (CE losses,
    weighted): ``geomamba.losses.adcd.stage2_loss``.

Outputs. Stage 1: always the dict ``{"ms_levels": [...], "pan_levels": [...], "ms_mask", "pan_mask",
"ms_sequence", "pan_sequence"}``. Stage 2: logits ``(B, num_classes)`` in eval mode; in training mode
``{"out": logits, "aux": [ms_aux_logits, pan_aux_logits]}``.

Two-stage use: ``model = create_model("adcdnet", num_classes=K)`` (stage 1), train on
``model.trainable_parameters()`` with the stage-I loss, ``model.set_stage(2)`` (freezes stage I, which
then stays in eval mode), train with the stage-II loss. A separate stage-II model takes stage I's weights
with ``load_stage1_state_dict(state)``. ``priors(ms, pan)`` computes the priors; ``forward(ms, pan,
priors=...)`` accepts them precomputed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from geomamba.layers.dia import DeformableInteractiveAttention
from geomamba.layers.dtm import DeepTemporalMamba
from geomamba.models._registry import register_model
from geomamba.models.classification._adcd_blocks import ModalityEncoder, SemanticSequenceHead

__all__ = ["ADCDClassifierNet", "ADCDNet", "ADCDPriorNet", "ADCDPriors", "adcdnet", "adcdnet_tiny"]


class ADCDPriors(NamedTuple):
    """Stage I's priors: masks ``(B, C, s, s)`` in (0, 1) and semantic sequences ``(B, T, dim)``."""

    ms_mask: torch.Tensor
    pan_mask: torch.Tensor
    ms_sequence: torch.Tensor
    pan_sequence: torch.Tensor


def _downsample_steps(ratio: int) -> int:
    steps = round(math.log2(ratio)) if ratio >= 1 else -1
    if steps < 0 or 2**steps != ratio:
        raise ValueError(f"ADCD-Net needs a PAN/MS ratio that is a power of 2 (1, 2, 4, 8), got {ratio}")
    return steps


class _Encoders(nn.Module):
    """An MS and a PAN ``ModalityEncoder`` with matching outputs (the PAN strides down by ``ratio``)."""

    def __init__(self, ms_channels: int, pan_channels: int, ratio: int, **encoder: Any) -> None:
        super().__init__()
        self.ms = ModalityEncoder(ms_channels, **encoder)
        self.pan = ModalityEncoder(pan_channels, downsample=_downsample_steps(ratio), **encoder)


class ADCDPriorNet(nn.Module):
    """Stage I. Shapes: ``ms (B, C, s, s)``, ``pan (B, 1, r*s, r*s)`` -> the stage-1 dict."""

    def __init__(
        self,
        *,
        ms_channels: int,
        pan_channels: int,
        ratio: int,
        encoder: Mapping[str, Any],
        seq_tokens: int,
        seq_dim: int,
        seq_hidden: int,
        seq_pool: int,
        ms_grad_scales: tuple[float, float],
        pan_grad_scales: tuple[float, float],
    ) -> None:
        super().__init__()
        self.encoders = _Encoders(ms_channels, pan_channels, ratio, **encoder)
        width = self.encoders.ms.widths[-1]
        self.ms_dia = DeformableInteractiveAttention(
            distortion=True, avg_grad_scale=ms_grad_scales[0], max_grad_scale=ms_grad_scales[1]
        )
        self.pan_dia = DeformableInteractiveAttention(
            distortion=True, avg_grad_scale=pan_grad_scales[0], max_grad_scale=pan_grad_scales[1]
        )
        seq = {"tokens": seq_tokens, "dim": seq_dim, "hidden": seq_hidden, "pool_size": seq_pool}
        self.ms_semantic = SemanticSequenceHead(width, **seq)
        self.pan_semantic = SemanticSequenceHead(width, **seq)

    def _branch(self, encoder, dia, semantic, x):
        feats = encoder(x)
        refined = dia(feats[-1])
        hidden, sequence = semantic(refined)
        levels = [*feats[:-1], refined, hidden, sequence]
        return levels, torch.sigmoid(refined), sequence

    def forward(self, ms: torch.Tensor, pan: torch.Tensor) -> dict[str, Any]:
        ms_levels, ms_mask, ms_seq = self._branch(self.encoders.ms, self.ms_dia, self.ms_semantic, ms)
        pan_levels, pan_mask, pan_seq = self._branch(self.encoders.pan, self.pan_dia, self.pan_semantic, pan)
        return {
            "ms_levels": ms_levels,
            "pan_levels": pan_levels,
            "ms_mask": ms_mask,
            "pan_mask": pan_mask,
            "ms_sequence": ms_seq,
            "pan_sequence": pan_seq,
        }


class ADCDClassifierNet(nn.Module):
    """Stage II. Shapes: ``ms``, ``pan`` and ``ADCDPriors`` -> ``(logits (B, K), [aux_ms (B, K), aux_pan (B, K)])``."""

    def __init__(
        self,
        *,
        ms_channels: int,
        pan_channels: int,
        ratio: int,
        num_classes: int,
        encoder: Mapping[str, Any],
        seq_tokens: int,
        seq_dim: int,
        dtm: Mapping[str, Any],
        classifier_hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.encoders = _Encoders(ms_channels, pan_channels, ratio, **encoder)
        widths = self.encoders.ms.widths
        c = widths[-1]
        self.fusion = nn.Sequential(
            nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)
        )
        self.classifier = nn.Sequential(
            nn.Linear(c, classifier_hidden),
            nn.Hardswish(),
            nn.Dropout(dropout),
            nn.Linear(classifier_hidden, num_classes),
        )
        dtm_kw = {"dim": seq_dim, "num_classes": num_classes, "prior_tokens": seq_tokens, **dtm}
        self.ms_dtm = DeepTemporalMamba(widths, **dtm_kw)
        self.pan_dtm = DeepTemporalMamba(widths, **dtm_kw)

    def forward(
        self, ms: torch.Tensor, pan: torch.Tensor, priors: ADCDPriors
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        ms_feats, pan_feats = self.encoders.ms(ms), self.encoders.pan(pan)
        for name, f, m in (("ms", ms_feats[-1], priors.ms_mask), ("pan", pan_feats[-1], priors.pan_mask)):
            if f.shape != m.shape:
                raise ValueError(
                    f"stage I's {name} mask is {tuple(m.shape)} but the features are {tuple(f.shape)}"
                )
        ms_w = ms_feats[-1] * priors.ms_mask + ms_feats[-1]
        pan_w = pan_feats[-1] * priors.pan_mask + pan_feats[-1]
        fused = self.fusion(torch.cat([ms_w, pan_w], dim=1)).mean(dim=(2, 3))
        logits = self.classifier(fused)
        aux_ms = self.ms_dtm([*ms_feats[:-1], ms_w], priors.ms_sequence)
        aux_pan = self.pan_dtm([*pan_feats[:-1], pan_w], priors.pan_sequence)
        return logits, [aux_ms, aux_pan]


class ADCDNet(nn.Module):
    """ADCD-Net (see the module docstring).

    Args:
        in_channels: MS bands (4).
        pan_channels: PAN bands (1).
        num_classes: land-cover classes K.
        ratio: PAN / MS resolution ratio r (a power of 2; 4).
        widths: channels of the MobileNetV3 units at each depth (multiples of 8).
        stem_width, expand, se: encoder options (``ModalityEncoder``).
        seq_tokens, seq_dim, seq_hidden, seq_pool: semantic sequence: T tokens of ``seq_dim`` channels from
            an MLP with ``seq_hidden`` hidden units on the deepest features pooled to ``seq_pool``.
        ms_grad_scales, pan_grad_scales: DIA gradient scales (mean-map modulator, max-map modulator).
        dtm_pool, dtm_depth, d_state: DTM options (tokens per depth ``dtm_pool**2``, Mamba layers, state).
        classifier_hidden, dropout: the stage-II classifier MLP.
        stage: 1 or 2 (``set_stage``).

    Shapes: ``ms (B, in_channels, s, s)``, ``pan (B, pan_channels, r*s, r*s)``, any s -> see the module
    docstring.
    """

    def __init__(
        self,
        *,
        in_channels: int = 4,
        pan_channels: int = 1,
        num_classes: int = 2,
        ratio: int = 4,
        widths: Sequence[int] = (24, 40, 64),
        stem_width: int = 16,
        expand: float = 4.0,
        se: bool = True,
        seq_tokens: int = 4,
        seq_dim: int = 64,
        seq_hidden: int = 256,
        seq_pool: int = 2,
        ms_grad_scales: tuple[float, float] = (0.4, 0.1),
        pan_grad_scales: tuple[float, float] = (0.1, 0.4),
        dtm_pool: int = 2,
        dtm_depth: int = 1,
        d_state: int = 16,
        classifier_hidden: int = 128,
        dropout: float = 0.2,
        stage: int = 1,
    ) -> None:
        super().__init__()
        self.in_channels, self.pan_channels, self.ratio, self.num_classes = (
            in_channels,
            pan_channels,
            ratio,
            num_classes,
        )
        encoder = {"widths": tuple(widths), "stem_width": stem_width, "expand": expand, "se": se}
        common = {
            "ms_channels": in_channels,
            "pan_channels": pan_channels,
            "ratio": ratio,
            "encoder": encoder,
        }
        self.stage1 = ADCDPriorNet(
            **common,
            seq_tokens=seq_tokens,
            seq_dim=seq_dim,
            seq_hidden=seq_hidden,
            seq_pool=seq_pool,
            ms_grad_scales=tuple(ms_grad_scales),
            pan_grad_scales=tuple(pan_grad_scales),
        )
        self.stage2 = ADCDClassifierNet(
            **common,
            num_classes=num_classes,
            seq_tokens=seq_tokens,
            seq_dim=seq_dim,
            dtm={"pool_size": dtm_pool, "depth": dtm_depth, "d_state": d_state},
            classifier_hidden=classifier_hidden,
            dropout=dropout,
        )
        self.stage = 0
        self.set_stage(stage)

    # ---------------------------------------------------------------- stages
    def set_stage(self, stage: int) -> ADCDNet:
        """Switch to stage 1 or 2: the active stage's parameters train, the other's are frozen; in stage 2
        the stage-I network also stays in eval mode (its BatchNorm statistics are fixed priors)."""
        if stage not in (1, 2):
            raise ValueError(f"ADCD-Net stage must be 1 or 2, got {stage!r}")
        self.stage = stage
        for p in self.stage1.parameters():
            p.requires_grad_(stage == 1)
        for p in self.stage2.parameters():
            p.requires_grad_(stage == 2)
        return self.train(self.training)

    def train(self, mode: bool = True) -> ADCDNet:
        super().train(mode)
        if self.stage == 2:
            self.stage1.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters of the active stage (what its optimiser should hold)."""
        return [p for p in (self.stage1 if self.stage == 1 else self.stage2).parameters()]

    def load_stage1_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load stage I's weights from a ``stage1`` state dict or a whole ADCD-Net state dict (its
        ``stage1.*`` keys); a missing or unexpected key is an error naming it."""
        if any(k.startswith("stage1.") for k in state):
            state = {k[len("stage1.") :]: v for k, v in state.items() if k.startswith("stage1.")}
        missing, unexpected = self.stage1.load_state_dict(dict(state), strict=False)
        if missing or unexpected:
            raise ValueError(
                f"stage I weights do not fit: missing {sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}"
            )

    # ---------------------------------------------------------------- forward
    def _check(self, ms: torch.Tensor, pan: torch.Tensor) -> None:
        if ms.dim() != 4 or ms.shape[1] != self.in_channels:
            raise ValueError(f"ADCD-Net ms must be (B, {self.in_channels}, s, s), got {tuple(ms.shape)}")
        b, _, h, w = ms.shape
        want = (b, self.pan_channels, self.ratio * h, self.ratio * w)
        if tuple(pan.shape) != want:
            raise ValueError(
                f"ADCD-Net pan must be {want} for ms {tuple(ms.shape)} (ratio {self.ratio}), got {tuple(pan.shape)}"
            )

    def forward_stage1(self, ms: torch.Tensor, pan: torch.Tensor) -> dict[str, Any]:
        """Stage I outputs (levels for the similarity loss, masks, sequences)."""
        self._check(ms, pan)
        return self.stage1(ms, pan)

    def priors(self, ms: torch.Tensor, pan: torch.Tensor) -> ADCDPriors:
        """Stage I's priors for a batch (without gradients when stage I is frozen, i.e. in stage 2)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.stage == 1):
            out = self.forward_stage1(ms, pan)
        return ADCDPriors(out["ms_mask"], out["pan_mask"], out["ms_sequence"], out["pan_sequence"])

    def forward_stage2(
        self, ms: torch.Tensor, pan: torch.Tensor, priors: ADCDPriors | None = None
    ) -> torch.Tensor | dict[str, Any]:
        """Stage II outputs: logits (eval) or ``{"out", "aux"}`` (training)."""
        self._check(ms, pan)
        priors = self.priors(ms, pan) if priors is None else ADCDPriors(*priors)
        logits, aux = self.stage2(ms, pan, priors)
        return {"out": logits, "aux": aux} if self.training else logits

    def forward(
        self, ms: torch.Tensor, pan: torch.Tensor, priors: ADCDPriors | None = None
    ) -> torch.Tensor | dict[str, Any]:
        if self.stage == 1:
            return self.forward_stage1(ms, pan)
        return self.forward_stage2(ms, pan, priors)

    def extra_repr(self) -> str:
        return f"stage={self.stage}, ratio={self.ratio}, num_classes={self.num_classes}"


@register_model(task="classification")
def adcdnet(**kwargs) -> ADCDNet:
    """ADCD-Net for 4-band MS + 1-band PAN at 4x (patch s = 16 MS / 64 PAN pixels in the seed's setting):
    units (24, 40, 64), semantic sequence 4 x 64, one DTM Mamba layer (d_state 16) per modality."""
    return ADCDNet(**kwargs)


@register_model(task="classification")
def adcdnet_tiny(**kwargs) -> ADCDNet:
    """A toy ADCD-Net for tests: units (8, 16, 16), expansion 2, sequence 2 x 16, d_state 4."""
    tiny = {
        "widths": (8, 16, 16),
        "stem_width": 8,
        "expand": 2.0,
        "seq_tokens": 2,
        "seq_dim": 16,
        "seq_hidden": 32,
        "d_state": 4,
        "classifier_hidden": 32,
    }
    return ADCDNet(**{**tiny, **kwargs})
