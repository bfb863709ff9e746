"""Boundary losses.

- ``boundary_f1_loss``: the boundary loss for remote-sensing segmentation of Bokhovkin & Burnaev (2019):
  boundaries of the ground truth and of the soft prediction by a max-pool morphological gradient
  (``maxpool_theta0(1 - x) - (1 - x)``), a boundary precision ``P`` and recall ``R`` against the other
  map's boundaries dilated by ``theta``, and ``1 - BF1`` with ``BF1 = 2PR / (P + R)``, averaged over
  images and classes.
- ``boundary_bce``: BCE between a predicted boundary map (a model's ``"boundary"`` output,
  ``(B, 1, H, W)`` logits) and the label boundary (pixels next to another class).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from geomamba.losses._common import check_inputs, one_hot_valid

__all__ = ["BoundaryLoss", "boundary_bce", "boundary_f1_loss", "label_boundary"]


def _gradient(x: torch.Tensor, size: int, valid: torch.Tensor) -> torch.Tensor:
    """Morphological gradient ``maxpool(1 - x) - (1 - x)``; ignored pixels (``valid == 0``) count as
    ``x = 1`` so that they create no boundary next to them, and get 0."""
    inv = (1.0 - x) * valid
    return (F.max_pool2d(inv, size, stride=1, padding=size // 2) - inv) * valid


def label_boundary(
    target: torch.Tensor, num_classes: int, *, width: int = 3, ignore_index: int = 255
) -> torch.Tensor:
    """Binary map ``(B, 1, H, W)`` of valid pixels that have a pixel of another class within ``width``."""
    onehot, valid = one_hot_valid(target.long(), num_classes, ignore_index)
    return (_gradient(onehot, width, valid).amax(dim=1, keepdim=True) > 0).float()


def boundary_f1_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    theta0: int = 3,
    theta: int = 5,
    ignore_index: int = 255,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``1 - BF1`` of soft predicted vs ground-truth class boundaries (odd ``theta0``, ``theta``)."""
    target = check_inputs(logits, target, "boundary_f1_loss")
    if theta0 % 2 == 0 or theta % 2 == 0:
        raise ValueError(f"boundary_f1_loss: theta0 and theta must be odd, got {theta0}, {theta}")
    onehot, valid = one_hot_valid(target, logits.shape[1], ignore_index)
    probs = torch.softmax(logits.float(), dim=1)
    gt_b = _gradient(onehot, theta0, valid)
    pred_b = _gradient(probs, theta0, valid)
    gt_ext = F.max_pool2d(gt_b, theta, stride=1, padding=theta // 2)
    pred_ext = F.max_pool2d(pred_b, theta, stride=1, padding=theta // 2)
    precision = ((pred_b * gt_ext).sum(dim=(2, 3)) + eps) / (pred_b.sum(dim=(2, 3)) + eps)
    recall = ((pred_ext * gt_b).sum(dim=(2, 3)) + eps) / (gt_b.sum(dim=(2, 3)) + eps)
    bf1 = 2.0 * precision * recall / (precision + recall).clamp(min=eps)
    return (1.0 - bf1).mean()


def boundary_bce(
    boundary_logits: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    *,
    width: int = 3,
    pos_weight: float | None = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """BCE of ``boundary_logits (B, 1, H, W)`` against ``label_boundary(target)``; mean over valid pixels."""
    if boundary_logits.dim() != 4 or boundary_logits.shape[1] != 1:
        raise ValueError(
            f"boundary_bce: boundary logits must be (B, 1, H, W), got {tuple(boundary_logits.shape)}"
        )
    target = check_inputs(boundary_logits, target, "boundary_bce")
    gt = label_boundary(target, num_classes, width=width, ignore_index=ignore_index)
    valid = (target != ignore_index).unsqueeze(1).float()
    pw = None if pos_weight is None else torch.tensor(float(pos_weight), device=gt.device)
    loss = F.binary_cross_entropy_with_logits(boundary_logits.float(), gt, pos_weight=pw, reduction="none")
    return (loss * valid).sum() / valid.sum().clamp(min=1.0)


class BoundaryLoss(nn.Module):
    """Module form of ``boundary_f1_loss``."""

    def __init__(self, *, theta0: int = 3, theta: int = 5, ignore_index: int = 255) -> None:
        super().__init__()
        self.theta0, self.theta, self.ignore_index = theta0, theta, ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return boundary_f1_loss(
            logits, target, theta0=self.theta0, theta=self.theta, ignore_index=self.ignore_index
        )
