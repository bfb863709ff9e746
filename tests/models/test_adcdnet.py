"""ADCD-Net: both stages train a few steps on synthetic MS+PAN patches (plain PyTorch loops), stage II
uses stage I's priors, stage switching freezes the right parameters, losses and OA/AA/Kappa."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from geomamba.data.mspan import MSPanPatchDataset, make_synthetic_mspan, normalise_bands, split_pixels
from geomamba.losses.adcd import ADCDStage1Loss, ADCDStage2Loss, similarity_loss, stage2_loss
from geomamba.metrics.adcd import (
    average_accuracy,
    classification_scores,
    confusion_from_predictions,
    kappa,
    overall_accuracy,
    per_class_accuracy,
)
from geomamba.models import create_model, list_models
from geomamba.models.classification.adcdnet import ADCDPriors

PATCH = 8


@pytest.fixture(scope="module")
def batches():
    scene = make_synthetic_mspan(16, ratio=4, bands=4, num_classes=3, labelled_fraction=0.5, seed=2)
    scene.ms, scene.pan = normalise_bands(scene.ms), normalise_bands(scene.pan)
    train, _ = split_pixels(scene.labels, per_class=4, seed=0)
    loader = DataLoader(MSPanPatchDataset(scene, train, patch_size=PATCH), batch_size=6, shuffle=False)
    return list(loader)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_registered():
    assert {"adcdnet", "adcdnet_tiny"} <= set(list_models(task="classification"))


def test_two_stages_train_and_stage_two_uses_the_priors(batches):
    torch.manual_seed(0)
    model = create_model("adcdnet_tiny", num_classes=3, dropout=0.0)
    assert model.stage == 1
    # ---- stage I: self-supervised similarity
    loss_fn = ADCDStage1Loss()
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    stage2_before = _snapshot(model.stage2)
    stage1_before = _snapshot(model.stage1)
    losses = []
    model.train()
    for batch in batches[:3]:
        out = model(batch["ms"], batch["pan"])
        loss = loss_fn(out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and set(loss_fn.last_components) == {"similarity"}
    assert _changed(stage1_before, model.stage1) and not _changed(stage2_before, model.stage2)
    assert 0 < out["ms_mask"].min() and out["ms_mask"].max() < 1

    # ---- stage II: supervised, stage I frozen and kept in eval mode
    model.set_stage(2)
    assert not any(p.requires_grad for p in model.stage1.parameters())
    model.train()
    assert not model.stage1.training and model.stage2.training
    loss_fn2 = ADCDStage2Loss(aux_weight=0.3)
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    stage1_before = _snapshot(model.stage1)  # includes BatchNorm running statistics
    for batch in batches[:3]:
        out = model(batch["ms"], batch["pan"])
        assert out["out"].shape == (len(batch["label"]), 3) and len(out["aux"]) == 2
        loss = loss_fn2(out, batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert set(loss_fn2.last_components) == {"ce", "aux_ms", "aux_pan"}
    assert not _changed(stage1_before, model.stage1)

    # ---- the output depends on stage I's priors
    ms, pan = batches[0]["ms"], batches[0]["pan"]
    with torch.no_grad():
        model.eval()
        priors = model.priors(ms, pan)
        logits = model(ms, pan)
        assert logits.shape == (len(ms), 3)
        torch.testing.assert_close(model(ms, pan, priors=priors), logits)
        # training mode (dropout 0): batch statistics, so the effects are not damped by fresh running stats
        model.train()
        out = model(ms, pan, priors=priors)
        other_mask = ADCDPriors(priors.ms_mask * 0.5, *priors[1:])
        assert (model(ms, pan, priors=other_mask)["out"] - out["out"]).abs().max() > 1e-3
        # a random change of the semantic sequence (a constant shift would vanish in the LayerNorms)
        shifted = priors.ms_sequence + torch.randn_like(priors.ms_sequence)
        other_seq = ADCDPriors(*priors[:2], shifted, priors.pan_sequence)
        assert (model(ms, pan, priors=other_seq)["aux"][0] - out["aux"][0]).abs().max() > 1e-2
        # and changing stage I's weights changes the stage-II output through the priors
        for p in model.stage1.parameters():
            p.add_(0.5 * torch.randn_like(p))
        assert (model(ms, pan)["out"] - out["out"]).abs().max() > 1e-3


def test_load_stage1_weights_into_a_stage_two_model():
    torch.manual_seed(0)
    first = create_model("adcdnet_tiny", num_classes=3)
    second = create_model("adcdnet_tiny", num_classes=3, stage=2)
    second.load_stage1_state_dict(first.state_dict())
    for k, v in first.stage1.state_dict().items():
        assert torch.equal(second.stage1.state_dict()[k], v)
    second.load_stage1_state_dict(first.stage1.state_dict())
    with pytest.raises(ValueError, match="stage I weights do not fit"):
        second.load_stage1_state_dict({"stage1.bogus": torch.zeros(1)})


def test_bad_inputs_are_named():
    model = create_model("adcdnet_tiny").eval()
    with pytest.raises(ValueError, match=r"pan must be \(1, 1, 32, 32\)"):
        model(torch.randn(1, 4, 8, 8), torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"ms must be \(B, 4, s, s\)"):
        model(torch.randn(1, 3, 8, 8), torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="power of 2"):
        create_model("adcdnet_tiny", ratio=3)
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        model.set_stage(3)


def test_default_size_and_ratio_two():
    model = create_model("adcdnet", num_classes=5, stage=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 4, 16, 16), torch.randn(1, 1, 64, 64)).shape == (1, 5)
    model = create_model("adcdnet_tiny", ratio=2, stage=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 4, 8, 8), torch.randn(1, 1, 16, 16)).shape == (1, 2)


# ------------------------------------------------------------------------------------------- losses


def test_similarity_loss():
    a, b = [torch.ones(2, 3), torch.zeros(2, 4)], [torch.zeros(2, 3), torch.zeros(2, 4)]
    torch.testing.assert_close(similarity_loss(a, b), torch.tensor(0.5))
    torch.testing.assert_close(similarity_loss(a, b, weights=[3.0, 1.0]), torch.tensor(0.75))
    # normalised: scale does not matter, direction does
    torch.testing.assert_close(
        similarity_loss([torch.ones(2, 3)], [5 * torch.ones(2, 3)], normalize=True), torch.tensor(0.0)
    )
    with pytest.raises(ValueError, match="level 0"):
        similarity_loss([torch.ones(2, 3)], [torch.ones(2, 4)])


def test_stage2_loss_weights_the_auxiliaries():
    logits, target = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    aux = [torch.randn(4, 3), torch.randn(4, 3)]
    ce = torch.nn.functional.cross_entropy
    expected = ce(logits, target) + 0.5 * (ce(aux[0], target) + ce(aux[1], target))
    torch.testing.assert_close(stage2_loss({"out": logits, "aux": aux}, target, aux_weight=0.5), expected)
    torch.testing.assert_close(stage2_loss(logits, target), ce(logits, target))
    with pytest.raises(ValueError, match=r"target \(B,\)"):
        stage2_loss(logits, target[:, None])


# ------------------------------------------------------------------------------------------ metrics


def test_oa_aa_kappa_per_class():
    cm = np.array([[5, 1], [2, 2]])
    assert overall_accuracy(cm) == pytest.approx(0.7)
    np.testing.assert_allclose(per_class_accuracy(cm), [5 / 6, 0.5])
    assert average_accuracy(cm) == pytest.approx((5 / 6 + 0.5) / 2)
    assert kappa(cm) == pytest.approx((0.7 - 0.54) / 0.46)
    scores = classification_scores(torch.tensor([[3, 0, 0], [0, 0, 0], [1, 0, 1]]), ["a", "b", "c"])
    assert scores["OA"] == pytest.approx(0.8) and scores["AA"] == pytest.approx(0.75)
    assert np.isnan(scores["per_class"]["b"]) and scores["per_class"]["c"] == 0.5
    assert kappa(np.eye(3) * 4) == pytest.approx(1.0)


def test_confusion_from_predictions():
    cm = confusion_from_predictions(
        torch.tensor([0, 1, 1, 2, 9]), torch.tensor([0, 1, 2, 2, 255]), 3, ignore_index=255
    )
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    with pytest.raises(ValueError, match=r"predicted class ids must lie in \[0, 3\)"):
        confusion_from_predictions([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="square"):
        overall_accuracy(np.zeros((2, 3)))
