"""Boundary IoU: hand-computed value, perfect prediction, ignored pixels, accumulation and DDP merging."""

from __future__ import annotations

import math

import pytest
import torch

from geomamba.metrics.boundary_iou import BoundaryIoU, boundary_band, boundary_iou_counts, boundary_iou_scores


def _halves(split: int) -> torch.Tensor:
    x = torch.zeros(6, 6, dtype=torch.long)
    x[:, split:] = 1
    return x


def test_inner_band_with_the_image_border_as_contour():
    band = boundary_band(_halves(3)[None] == 1, 1)[0]
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[:, 3] = expected[:, 5] = True  # next to class 0, and on the image border
    expected[0, 4] = expected[5, 4] = True
    assert torch.equal(band, expected)
    assert boundary_band(torch.ones(1, 9, 9, dtype=torch.bool), 2)[0].sum() == 81 - 5 * 5


def test_hand_computed_case():
    # 6x6, d = 1. Ground truth: class 1 in columns 3-5; prediction: class 1 in columns 2-5.
    # Class 1: G_d = cols 3 and 5 + (rows 0, 5 of col 4) = 14 px; P_d = cols 2 and 5 + (rows 0, 5 of
    # cols 3-4) = 16 px; G_d ∩ P_d = col 5 + rows 0, 5 of cols 3-4 = 10 px -> 10 / (14 + 16 - 10) = 1/2.
    # Class 0: G_d = cols 0 and 2 + rows 0, 5 of col 1 = 14 px; P_d = cols 0-1 = 12 px;
    # G_d ∩ P_d = col 0 + rows 0, 5 of col 1 = 8 px -> 8 / (14 + 12 - 8) = 4/9.
    inter, union = boundary_iou_counts(_halves(2), _halves(3), 2, width=1)
    assert inter.tolist() == [8, 10] and union.tolist() == [18, 20]
    scores = boundary_iou_scores(inter, union, ["background", "object"])
    assert scores["per_class"] == {"background": pytest.approx(4 / 9), "object": pytest.approx(1 / 2)}
    assert scores["BIoU"] == pytest.approx((4 / 9 + 1 / 2) / 2)


def test_perfect_prediction_is_one_and_absent_classes_are_undefined():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (2, 17, 23), generator=g)
    metric = BoundaryIoU(4, width=2)
    metric.update(target.clone(), target)
    values = metric.compute()
    assert values[:3].tolist() == [1.0, 1.0, 1.0] and math.isnan(values[3])
    inter, union = boundary_iou_counts(torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2), target, 4)
    assert boundary_iou_scores(inter, union)["BIoU"] == 1.0  # scores (B, K, H, W) are argmax-ed


def test_ignored_pixels_are_not_counted():
    target, pred = _halves(3), _halves(3)
    target[:, :2] = 255
    pred[:, :2] = 1  # wrong, but ignored
    inter, union = boundary_iou_counts(pred, target, 2, width=1)
    assert inter.tolist() == union.tolist()
    assert boundary_iou_scores(inter, union)["BIoU"] == 1.0


def test_accumulates_counts_and_merges_like_ddp_ranks():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 3, (4, 16, 16), generator=g)
    pred = torch.where(
        torch.rand(4, 16, 16, generator=g) < 0.8, target, torch.randint(0, 3, (4, 16, 16), generator=g)
    )
    whole = BoundaryIoU(3, width=2)
    whole.update(pred, target)
    ranks = [BoundaryIoU(3, width=2), BoundaryIoU(3, width=2)]
    ranks[0].update(pred[:1], target[:1])
    ranks[0].update(pred[1:2], target[1:2])
    ranks[1].update(pred[2:], target[2:])
    ranks[0].merge_state(ranks[1])  # the states' reduction (a sum), as in the DDP sync
    assert torch.equal(ranks[0].intersection, whole.intersection) and torch.equal(ranks[0].union, whole.union)
    torch.testing.assert_close(ranks[0].compute(), whole.compute())
    from torchmetrics.utilities.data import dim_zero_sum

    assert whole._reductions["intersection"] is dim_zero_sum and whole._reductions["union"] is dim_zero_sum
    assert all(whole._defaults[k].dtype == torch.long for k in ("intersection", "union"))
    # Per-image Boundary IoU averaged is not the data-set value: counts are summed first.
    per_image = [
        boundary_iou_scores(*boundary_iou_counts(p, t, 3, width=2))["BIoU"] for p, t in zip(pred, target)
    ]
    assert boundary_iou_scores(whole.intersection, whole.union)["BIoU"] != pytest.approx(sum(per_image) / 4)


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ in shape"):
        boundary_iou_counts(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="width must be >= 1"):
        BoundaryIoU(2, width=0)
