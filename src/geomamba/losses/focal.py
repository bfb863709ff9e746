"""Class-weighted focal loss (Lin et al. 2017): ``-alpha_y (1 - p_y)^gamma log p_y``, mean over valid pixels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from geomamba.losses._common import check_inputs

__all__ = ["FocalLoss", "focal_loss"]


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma: float = 2.0,
    class_weights: Sequence[float] | torch.Tensor | None = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Softmax focal loss; ``class_weights`` are the per-class ``alpha`` (default 1); ``gamma = 0`` with no
    weights equals cross-entropy."""
    target = check_inputs(logits, target, "focal_loss")
    if gamma < 0:
        raise ValueError(f"focal_loss: gamma must be >= 0, got {gamma}")
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target)).unsqueeze(1)
    logp = F.log_softmax(logits.float(), dim=1).gather(1, safe).squeeze(1)
    loss = -((1.0 - logp.exp()).clamp(min=0) ** gamma) * logp
    if class_weights is not None:
        w = torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device)
        if w.shape != (logits.shape[1],):
            raise ValueError(
                f"focal_loss: class_weights has {w.numel()} entries, logits {logits.shape[1]} classes"
            )
        loss = loss * w[safe.squeeze(1)]
    return (loss * valid).sum() / valid.sum().clamp(min=1)


class FocalLoss(nn.Module):
    """Module form of ``focal_loss``."""

    def __init__(
        self, *, gamma: float = 2.0, class_weights: Sequence[float] | None = None, ignore_index: int = 255
    ) -> None:
        super().__init__()
        self.gamma, self.class_weights, self.ignore_index = gamma, class_weights, ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(
            logits, target, gamma=self.gamma, class_weights=self.class_weights, ignore_index=self.ignore_index
        )
