"""Boundary IoU (Cheng, Girshick, Dollár, Berg, Kirillov, CVPR 2021) for semantic segmentation.

For a class k, let ``G`` and ``P`` be the ground-truth and predicted masks of k. Their *inner boundary
bands* are the pixels of the mask within ``d`` pixels of its contour: ``G_d = G \\ erode(G, d)`` with a
``(2d + 1) x (2d + 1)`` square structuring element (chessboard distance; the image border counts as
contour, as in the authors' reference implementation, which pads with background before eroding).
Boundary IoU of class k is ``|G_d ∩ P_d| / |G_d ∪ P_d|``.

Over a data set the intersections and unions are **summed** per class (like the confusion matrix of mIoU)
and divided at the end; ``BIoU`` is the mean over classes whose union is not empty. ``BoundaryIoU`` is a
torchmetrics ``Metric`` whose two states (intersection and union counts per class) are summed over DDP
ranks, so distributed scores equal single-process scores. Pixels of ``ignore_index`` in the target belong
to no class in either mask (an ignored region borders the classes around it, in the target and in the
prediction alike) and are never counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric

__all__ = ["BoundaryIoU", "boundary_band", "boundary_iou_counts", "boundary_iou_scores"]


def boundary_band(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Inner boundary band of binary masks: pixels of ``mask`` within ``width`` pixels of its contour.

    Shapes: ``mask (B, H, W)`` bool -> ``(B, H, W)`` bool.
    """
    if width < 1:
        raise ValueError(f"boundary width must be >= 1 pixel, got {width}")
    outside = (~mask).float().unsqueeze(1)
    outside = F.pad(outside, (width, width, width, width), value=1.0)  # the border is contour
    near = F.max_pool2d(outside, 2 * width + 1, stride=1).squeeze(1) > 0
    return mask & near


def boundary_iou_counts(
    preds: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    *,
    width: int = 3,
    ignore_index: int | None = 255,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class boundary-band intersection and union pixel counts, each ``(K,)`` int64.

    Args:
        preds: predicted class ids ``(B, H, W)`` (or ``(H, W)``), or scores ``(B, K, H, W)`` (argmax taken).
        target: class ids of the same shape, ``ignore_index`` = not scored.
        num_classes: K.
        width: band width d in pixels.
    """
    if preds.dim() == target.dim() + 1:
        preds = preds.argmax(1)
    if preds.shape != target.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape")
    if target.dim() == 2:
        preds, target = preds[None], target[None]
    if target.dim() != 3:
        raise ValueError(f"expected class-id maps (B, H, W), got target of shape {tuple(target.shape)}")
    valid = torch.ones_like(target, dtype=torch.bool)
    if ignore_index is not None:
        valid = target != ignore_index
    inter = torch.zeros(num_classes, dtype=torch.long, device=target.device)
    union = torch.zeros_like(inter)
    for k in range(num_classes):
        gt = (target == k) & valid
        pr = (preds == k) & valid
        if not (gt.any() or pr.any()):
            continue
        g, p = boundary_band(gt, width), boundary_band(pr, width)
        inter[k] = (g & p).sum()
        union[k] = (g | p).sum()
    return inter, union


def boundary_iou_scores(
    intersection: torch.Tensor | Sequence[int],
    union: torch.Tensor | Sequence[int],
    class_names: Sequence[str] | None = None,
) -> dict[str, object]:
    """``{"BIoU": mean over classes with a non-empty union, "per_class": {name: value}}`` (NaN where the
    union is empty), plain Python floats."""
    inter = torch.as_tensor(intersection, dtype=torch.float64).cpu()
    uni = torch.as_tensor(union, dtype=torch.float64).cpu()
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(inter))]
    if len(names) != len(inter):
        raise ValueError(f"{len(names)} class names for {len(inter)} classes")
    per_class = {
        n: (float(i / u) if u > 0 else math.nan) for n, i, u in zip(names, inter.tolist(), uni.tolist())
    }
    defined = [v for v in per_class.values() if not math.isnan(v)]
    return {"BIoU": sum(defined) / len(defined) if defined else math.nan, "per_class": per_class}


class BoundaryIoU(Metric):
    """Accumulated Boundary IoU; ``update(preds, target)`` as ``boundary_iou_counts``; ``compute()``
    returns per-class Boundary IoU ``(K,)`` float64 (NaN where undefined). The states ``intersection``
    and ``union`` (``(K,)`` int64) are summed over DDP ranks.

    Args:
        num_classes: K.
        width: band width d in pixels.
        ignore_index: target value that is not scored.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, *, width: int = 3, ignore_index: int | None = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if width < 1:
            raise ValueError(f"boundary width must be >= 1 pixel, got {width}")
        self.num_classes, self.width, self.ignore_index = num_classes, width, ignore_index
        self.add_state("intersection", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("union", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        inter, union = boundary_iou_counts(
            preds, target, self.num_classes, width=self.width, ignore_index=self.ignore_index
        )
        self.intersection += inter
        self.union += union

    def compute(self) -> torch.Tensor:
        inter, union = self.intersection.double(), self.union.double()
        return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, math.nan))
