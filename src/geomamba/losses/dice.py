"""Soft Dice loss over softmax probabilities: ``1 - mean_c (2 |P_c Y_c| + s) / (|P_c| + |Y_c| + s)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from geomamba.losses._common import check_inputs, one_hot_valid

__all__ = ["DiceLoss", "dice_loss"]


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    classes: Sequence[int] | None = None,
    smooth: float = 1.0,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Soft Dice over the whole batch, averaged over ``classes`` (default: every class; ``[1]`` = the change
    class only). Ignored pixels count in neither the prediction nor the target."""
    target = check_inputs(logits, target, "dice_loss")
    k = logits.shape[1]
    onehot, valid = one_hot_valid(target, k, ignore_index)
    probs = torch.softmax(logits.float(), dim=1) * valid
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    card = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = (2.0 * inter + smooth) / (card + smooth)
    if classes is not None:
        idx = list(classes)
        if not idx or min(idx) < 0 or max(idx) >= k:
            raise ValueError(f"dice_loss: classes {idx} must be non-empty ids in [0, {k})")
        dice = dice[idx]
    return 1.0 - dice.mean()


class DiceLoss(nn.Module):
    """Module form of ``dice_loss``."""

    def __init__(
        self, *, classes: Sequence[int] | None = None, smooth: float = 1.0, ignore_index: int = 255
    ) -> None:
        super().__init__()
        self.classes, self.smooth, self.ignore_index = classes, smooth, ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_loss(
            logits, target, classes=self.classes, smooth=self.smooth, ignore_index=self.ignore_index
        )
