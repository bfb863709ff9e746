"""Losses: pure functions plus thin ``nn.Module`` wrappers, and a composite built from config.

``build_loss(spec)`` turns a config value into a loss module ``loss(output, target) -> scalar``.
``output`` is a model output: logits ``(B, K, H, W)`` or a dict ``{"out": ..., "aux": [...], ...}``
(see ``geomamba.models.base``); ``target`` is ``(B, H, W)`` int64 class ids (ignore index 255 by default).
After a call, ``loss.last_components`` holds the detached parts (e.g. ``{"ce": ..., "lovasz": ...}``)
for logging. The default (``build_loss()`` / ``build_loss("ce_lovasz")``) is CE + 0.75 Lovász-softmax.

ADCD-Net's losses (``geomamba.losses.adcd``, per-pixel classification of patch pairs) are used by the
engine's ``classification`` task directly, not through ``build_loss``: ``ADCDStage1Loss`` (MS/PAN feature
similarity), ``ADCDStage2Loss`` (CE + weighted DTM auxiliary CE) and their functions.
"""

from geomamba.losses.adcd import ADCDStage1Loss, ADCDStage2Loss, similarity_loss, stage2_loss, stage2_terms
from geomamba.losses.boundary import BoundaryLoss, boundary_bce, boundary_f1_loss, label_boundary
from geomamba.losses.composite import LOSS_PRESETS, LOSS_TERMS, CompositeLoss, build_loss
from geomamba.losses.cross_entropy import (
    BinaryCrossEntropyLoss,
    CrossEntropyLoss,
    OhemCrossEntropyLoss,
    binary_cross_entropy,
    cross_entropy,
    ohem_cross_entropy,
)
from geomamba.losses.dice import DiceLoss, dice_loss
from geomamba.losses.focal import FocalLoss, focal_loss
from geomamba.losses.lovasz import LovaszSoftmaxLoss, lovasz_softmax

__all__ = [
    "LOSS_PRESETS",
    "LOSS_TERMS",
    "ADCDStage1Loss",
    "ADCDStage2Loss",
    "BinaryCrossEntropyLoss",
    "BoundaryLoss",
    "CompositeLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "LovaszSoftmaxLoss",
    "OhemCrossEntropyLoss",
    "binary_cross_entropy",
    "boundary_bce",
    "boundary_f1_loss",
    "build_loss",
    "cross_entropy",
    "dice_loss",
    "focal_loss",
    "label_boundary",
    "lovasz_softmax",
    "ohem_cross_entropy",
    "similarity_loss",
    "stage2_loss",
    "stage2_terms",
]
