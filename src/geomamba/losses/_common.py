"""Input checks and helpers shared by the loss functions.

Every loss takes ``logits (B, K, H, W)`` and ``target (B, H, W)`` integer class ids (``(B, 1, H, W)`` is
accepted); pixels equal to ``ignore_index`` do not count. Means are over the valid pixels, and a batch
without a valid pixel gives a loss of 0 that still carries a (zero) gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["change_logit", "check_inputs", "one_hot_valid", "validate_labels"]


def check_inputs(logits: torch.Tensor, target: torch.Tensor, name: str = "loss") -> torch.Tensor:
    """Check shapes and dtype; return ``target`` as ``(B, H, W)`` int64."""
    if logits.dim() != 4:
        raise ValueError(f"{name}: logits must be (B, K, H, W), got shape {tuple(logits.shape)}")
    if target.dim() == 4 and target.shape[1] == 1:
        target = target[:, 0]
    b, _, h, w = logits.shape
    if tuple(target.shape) != (b, h, w):
        raise ValueError(
            f"{name}: target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)} "
            f"(expected ({b}, {h}, {w}))"
        )
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"{name}: target must hold integer class ids, got dtype {target.dtype}")
    return target.long()


def validate_labels(target: torch.Tensor, num_classes: int, ignore_index: int, name: str = "loss") -> None:
    """Raise when ``target`` holds a value outside ``[0, num_classes)`` other than ``ignore_index``."""
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        values = torch.unique(target[bad])[:10].tolist()
        raise ValueError(
            f"{name}: target holds class ids {values} outside [0, {num_classes}) and not the ignore index "
            f"{ignore_index} (labels 0/255 must be mapped to 0/1 first)"
        )


def one_hot_valid(
    target: torch.Tensor, num_classes: int, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(one_hot (B, K, H, W) float, valid (B, 1, H, W) float)``; ignored pixels are all-zero in both."""
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target)).clamp(0, num_classes - 1)
    onehot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).float()
    v = valid.unsqueeze(1).float()
    return onehot * v, v


def change_logit(logits: torch.Tensor, name: str = "loss") -> torch.Tensor:
    """The binary change logit ``(B, H, W)``: ``l1 - l0`` of 2-class logits (so that its sigmoid equals the
    softmax probability of class 1), or the single channel of 1-class logits."""
    k = logits.shape[1]
    if k == 2:
        return logits[:, 1] - logits[:, 0]
    if k == 1:
        return logits[:, 0]
    raise ValueError(f"{name}: a binary loss needs 1 or 2 classes of logits, got {k}")
