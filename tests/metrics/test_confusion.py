import logging
import math

import pytest
import torch

from geomamba.metrics import (
    ConfusionMatrix,
    confusion_matrix,
    flatten_scores,
    format_table,
    scores_from_confusion,
    warn_collapsed_classes,
)


def test_scores_equal_hand_computed_values():
    cm = torch.tensor([[50, 10], [5, 35]])  # rows true, columns predicted
    s = scores_from_confusion(cm, ["unchanged", "changed"])
    ch, un = s["per_class"]["changed"], s["per_class"]["unchanged"]
    assert ch["Precision"] == pytest.approx(35 / 45)
    assert ch["Recall"] == pytest.approx(35 / 40) == ch["Acc"]
    assert ch["F1"] == pytest.approx(70 / 85)
    assert ch["IoU"] == pytest.approx(35 / 50)
    assert un["Precision"] == pytest.approx(50 / 55) and un["IoU"] == pytest.approx(50 / 65)
    assert s["OA"] == pytest.approx(0.85)
    pe = (60 * 55 + 40 * 45) / 100**2
    assert s["Kappa"] == pytest.approx((0.85 - pe) / (1 - pe))
    assert s["mIoU"] == pytest.approx((35 / 50 + 50 / 65) / 2)
    assert s["mF1"] == pytest.approx((70 / 85 + 100 / 115) / 2)
    flat = flatten_scores(s, "val/")
    assert flat["val/F1_changed"] == pytest.approx(70 / 85) and flat["val/OA"] == pytest.approx(0.85)


def test_multiclass_and_undefined_scores_are_nan():
    cm = torch.tensor([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    s = scores_from_confusion(cm)
    assert math.isnan(s["per_class"]["2"]["F1"])
    assert s["mF1"] == pytest.approx((6 / 7 + 4 / 5) / 2)  # mean over defined classes
    assert s["support"] == {"0": 4, "1": 2, "2": 0}


def test_accumulation_ignores_index_and_matches_torchmetrics():
    gen = torch.Generator().manual_seed(0)
    metric = ConfusionMatrix(3)
    total = torch.zeros(3, 3, dtype=torch.long)
    for _ in range(3):
        target = torch.randint(0, 3, (2, 8, 8), generator=gen)
        target[0, 0] = 255
        preds = torch.randint(0, 3, (2, 8, 8), generator=gen)
        metric.update(preds, target)
        total += confusion_matrix(preds, target, 3)
    assert torch.equal(metric.compute().long(), total)
    assert total.sum() == 3 * (2 * 64 - 8)


def test_table_and_collapse_warning(caplog):
    s = scores_from_confusion(torch.tensor([[90, 0], [10, 0]]), ["unchanged", "changed"])
    text = format_table(s, "val")
    assert "| changed " in text and "nan" in text and "90.00" in text
    with caplog.at_level(logging.WARNING, logger="geomamba"):
        assert warn_collapsed_classes(s, "validation epoch 3") == ["changed"]
    assert "'changed' was NEVER predicted in validation epoch 3" in caplog.text
    assert "focal" in caplog.text and "oversampling" in caplog.text
