"""ADCD-Net losses (seed 003): stage-I MSE similarity, stage-II CE with DTM auxiliary CE terms.

Pure functions plus thin modules with the losses' common interface ``loss(output, target) -> scalar``
and ``loss.last_components`` (detached parts for logging). ``output`` is what ``ADCDNet`` returns (see
``geomamba.models.classification.adcdnet``); ``target`` is ``(B,)`` int64 class ids of the centre pixels.

* ``similarity_loss(ms_levels, pan_levels)`` = mean over levels of ``MSE(ms_level, pan_level)``
  (optionally level weights, and ``normalize``: compare L2-normalised per-sample vectors, which keeps the
  loss from being minimised by merely shrinking both feature sets).
* ``stage2_loss(output, target)`` = ``CE(out) + aux_weight * (CE(aux_ms) + CE(aux_pan))``; the seed gives
  no weights, 0.3 is our default (as the auxiliary losses of the segmentation models).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ADCDStage1Loss", "ADCDStage2Loss", "similarity_loss", "stage2_loss", "stage2_terms"]


def similarity_loss(
    ms_levels: Sequence[torch.Tensor],
    pan_levels: Sequence[torch.Tensor],
    *,
    weights: Sequence[float] | None = None,
    normalize: bool = False,
) -> torch.Tensor:
    """Weighted mean over levels of the MSE between matching MS and PAN features (any equal shapes)."""
    if len(ms_levels) != len(pan_levels) or not ms_levels:
        raise ValueError(
            f"similarity_loss needs as many MS as PAN levels (>0), got {len(ms_levels)} and {len(pan_levels)}"
        )
    weights = [1.0] * len(ms_levels) if weights is None else list(weights)
    if len(weights) != len(ms_levels):
        raise ValueError(f"similarity_loss: {len(weights)} weights for {len(ms_levels)} levels")
    total = ms_levels[0].new_zeros((), dtype=torch.float32)
    for i, (a, b) in enumerate(zip(ms_levels, pan_levels)):
        if a.shape != b.shape:
            raise ValueError(
                f"similarity_loss level {i}: MS {tuple(a.shape)} and PAN {tuple(b.shape)} differ"
            )
        a, b = a.float(), b.float()
        if normalize:
            a, b = F.normalize(a.flatten(1), dim=1), F.normalize(b.flatten(1), dim=1)
        total = total + weights[i] * F.mse_loss(a, b)
    return total / sum(weights)


def _check_target(logits: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(
            f"{name}: logits must be (B, K) and target (B,), got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"{name}: target must hold integer class ids, got dtype {target.dtype}")
    return target.long()


def stage2_terms(
    output: Mapping[str, Any] | torch.Tensor, target: torch.Tensor, *, ignore_index: int = 255
) -> dict[str, torch.Tensor]:
    """The stage-II loss terms ``{"ce", "aux_ms", "aux_pan"}`` (only ``"ce"`` for bare logits)."""
    logits = output["out"] if isinstance(output, Mapping) else output
    target = _check_target(logits, target, "stage2_loss")
    terms = {"ce": F.cross_entropy(logits.float(), target, ignore_index=ignore_index)}
    if isinstance(output, Mapping):
        aux = list(output.get("aux", []))
        if len(aux) != 2:
            raise ValueError(f"stage2_loss expects two auxiliary outputs (MS, PAN DTM), got {len(aux)}")
        for name, a in zip(("aux_ms", "aux_pan"), aux):
            _check_target(a, target, name)
            terms[name] = F.cross_entropy(a.float(), target, ignore_index=ignore_index)
    return terms


def _total(terms: Mapping[str, torch.Tensor], aux_weight: float) -> torch.Tensor:
    loss = terms["ce"]
    for name, value in terms.items():
        if name != "ce":
            loss = loss + aux_weight * value
    return loss


def stage2_loss(
    output: Mapping[str, Any] | torch.Tensor,
    target: torch.Tensor,
    *,
    aux_weight: float = 0.3,
    ignore_index: int = 255,
) -> torch.Tensor:
    """``CE(out) + aux_weight * (CE(aux_ms) + CE(aux_pan))``."""
    return _total(stage2_terms(output, target, ignore_index=ignore_index), aux_weight)


class ADCDStage1Loss(nn.Module):
    """Stage-I loss module: ``loss(output, target=None)`` with the stage-1 dict of ``ADCDNet``."""

    def __init__(self, *, weights: Sequence[float] | None = None, normalize: bool = False) -> None:
        super().__init__()
        self.weights, self.normalize = weights, normalize
        self.last_components: dict[str, torch.Tensor] = {}

    def forward(self, output: Mapping[str, Any], target: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(output, Mapping) or "ms_levels" not in output:
            raise ValueError(
                "ADCDStage1Loss needs ADCD-Net's stage-1 output (a dict with 'ms_levels', 'pan_levels')"
            )
        loss = similarity_loss(
            output["ms_levels"], output["pan_levels"], weights=self.weights, normalize=self.normalize
        )
        self.last_components = {"similarity": loss.detach()}
        return loss


class ADCDStage2Loss(nn.Module):
    """Stage-II loss module: ``loss(output, target)``; ``last_components``: ce, aux_ms, aux_pan."""

    def __init__(self, *, aux_weight: float = 0.3, ignore_index: int = 255) -> None:
        super().__init__()
        self.aux_weight, self.ignore_index = aux_weight, ignore_index
        self.last_components: dict[str, torch.Tensor] = {}

    def forward(self, output: Mapping[str, Any] | torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        terms = stage2_terms(output, target, ignore_index=self.ignore_index)
        loss = _total(terms, self.aux_weight)
        self.last_components = {k: v.detach() for k, v in terms.items()}
        return loss
