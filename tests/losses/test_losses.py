import pytest
import torch
import torch.nn.functional as F

from geomamba.losses import (
    binary_cross_entropy,
    boundary_bce,
    boundary_f1_loss,
    build_loss,
    cross_entropy,
    dice_loss,
    focal_loss,
    label_boundary,
    lovasz_softmax,
    ohem_cross_entropy,
)


@pytest.fixture
def batch():
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    target = torch.randint(0, 2, (2, 8, 8))
    target[0, 0, :3] = 255
    return logits, target


def test_cross_entropy_and_weights(batch):
    logits, target = batch
    torch.testing.assert_close(
        cross_entropy(logits, target), F.cross_entropy(logits, target, ignore_index=255)
    )
    w = torch.tensor([0.3, 2.0])
    torch.testing.assert_close(
        cross_entropy(logits, target, class_weights=[0.3, 2.0]),
        F.cross_entropy(logits, target, weight=w, ignore_index=255),
    )
    assert float(cross_entropy(logits, torch.full_like(target, 255)).detach()) == 0.0


def test_bce_on_change_logit_matches_softmax_probability(batch):
    logits, target = batch
    p1 = torch.softmax(logits, 1)[:, 1]
    valid = target != 255
    expected = F.binary_cross_entropy(p1[valid], (target[valid] == 1).float())
    torch.testing.assert_close(binary_cross_entropy(logits, target), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="1 or 2 classes"):
        binary_cross_entropy(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


def test_focal(batch):
    logits, target = batch
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0), cross_entropy(logits, target))
    assert focal_loss(logits, target, gamma=2.0) < cross_entropy(logits, target)
    # class weights scale each class's pixels
    only1 = torch.where(target == 0, torch.full_like(target, 255), target)
    torch.testing.assert_close(
        focal_loss(logits, only1, class_weights=[1.0, 3.0]), 3.0 * focal_loss(logits, only1)
    )


def test_dice():
    target = torch.randint(0, 2, (2, 8, 8))
    perfect = F.one_hot(target, 2).permute(0, 3, 1, 2).float() * 40 - 20
    assert float(dice_loss(perfect, target)) < 1e-6
    assert float(dice_loss(-perfect, target)) > 0.99
    assert float(dice_loss(-perfect, target, classes=[1])) > 0.99


def test_ohem_keeps_hard_pixels(batch):
    logits, target = batch
    valid = int((target != 255).sum())
    # keeping every pixel is plain CE
    torch.testing.assert_close(
        ohem_cross_entropy(logits, target, thresh=None, min_kept=10**6), cross_entropy(logits, target)
    )
    # keeping the k hardest: mean of the k largest CE values
    ce = F.cross_entropy(logits, target, ignore_index=255, reduction="none")[target != 255]
    k = 5
    expected = ce.topk(k * 2).values.mean()
    torch.testing.assert_close(ohem_cross_entropy(logits, target, thresh=None, min_kept=k), expected)
    # with a threshold: every pixel whose true-class probability is below it (at least min_kept)
    hard = ohem_cross_entropy(logits, target, thresh=0.5, min_kept=1)
    p = torch.softmax(logits, 1).gather(1, target.clamp(max=1).unsqueeze(1)).squeeze(1)[target != 255]
    torch.testing.assert_close(hard, ce[p <= 0.5].mean())
    assert valid > 0


def test_boundary_losses():
    target = torch.zeros(1, 9, 9, dtype=torch.long)
    target[0, 3:6, 3:6] = 1
    b = label_boundary(target, 2)
    assert b.shape == (1, 1, 9, 9) and b[0, 0, 4, 4] == 0 and b[0, 0, 3, 3] == 1 and b[0, 0, 0, 0] == 0
    assert int(b.sum()) == 24  # the 3x3 square's 8 border pixels and the 16 background pixels around it
    perfect = F.one_hot(target, 2).permute(0, 3, 1, 2).float() * 40 - 20
    assert float(boundary_f1_loss(perfect, target)) < 1e-3
    # within the tolerance (theta = 5: +-2 pixels) a shift costs nothing; beyond it the loss grows
    wide = torch.zeros(1, 9, 20, dtype=torch.long)
    wide[0, 3:6, 3:6] = 1
    hard = F.one_hot(wide, 2).permute(0, 3, 1, 2).float() * 40 - 20
    losses = [float(boundary_f1_loss(torch.roll(hard, s, dims=-1), wide)) for s in (0, 1, 3, 8)]
    assert losses[0] < 1e-3 and losses[1] < 1e-3 < losses[2] < losses[3]
    blogits = b * 40 - 20
    assert float(boundary_bce(blogits, target, 2)) < 1e-6
    # ignored pixels create no boundary next to them
    ign = torch.zeros(1, 9, 9, dtype=torch.long)
    ign[0, :, 5:] = 255
    assert int(label_boundary(ign, 2).sum()) == 0


def test_build_loss_forms_and_components(batch):
    logits, target = batch
    default = build_loss()
    value = default(logits, target)
    expected = cross_entropy(logits, target) + 0.75 * lovasz_softmax(logits, target)
    torch.testing.assert_close(value, expected)
    assert set(default.last_components) == {"ce", "lovasz"}
    general = build_loss({"terms": [{"name": "ce", "weight": 1}, {"name": "lovasz", "weight": 0.75}]})
    torch.testing.assert_close(general(logits, target), expected)
    named = build_loss({"name": "ce_lovasz", "lovasz_weight": 0.5, "ce": {"class_weights": [1.0, 2.0]}})
    torch.testing.assert_close(
        named(logits, target),
        cross_entropy(logits, target, class_weights=[1.0, 2.0]) + 0.5 * lovasz_softmax(logits, target),
    )
    focal = build_loss({"name": "focal", "gamma": 1.0, "class_weights": [1, 4]})
    torch.testing.assert_close(
        focal(logits, target), focal_loss(logits, target, gamma=1.0, class_weights=[1, 4])
    )
    for name in [
        "ce",
        "bce",
        "dice",
        "focal",
        "lovasz",
        "ohem",
        "boundary",
        "focal_lovasz",
        "dice_focal",
        "bce_dice",
    ]:
        out = build_loss(name)(logits, target)
        assert out.dim() == 0 and torch.isfinite(out), name
    value.backward()
    assert logits.grad is not None


def test_deep_supervision_outputs_each_in_the_loss(batch):
    logits, target = batch
    aux = [torch.randn(2, 2, 8, 8), torch.randn(2, 2, 8, 8)]
    loss = build_loss({"name": "ce_lovasz", "aux_weights": [0.4, 0.2]})
    value = loss({"out": logits, "aux": aux}, target)
    single = build_loss("ce_lovasz")
    expected = single(logits, target) + 0.4 * single(aux[0], target) + 0.2 * single(aux[1], target)
    torch.testing.assert_close(value, expected)
    assert set(loss.last_components) == {"ce", "lovasz", "aux0", "aux1"}
    scalar = build_loss({"terms": ["ce"], "aux_weight": 0.5})
    torch.testing.assert_close(
        scalar({"out": logits, "aux": aux}, target),
        cross_entropy(logits, target) + 0.5 * (cross_entropy(aux[0], target) + cross_entropy(aux[1], target)),
    )
    with pytest.raises(ValueError, match="aux_weights has 1"):
        build_loss({"name": "ce", "aux_weights": [0.4]})({"out": logits, "aux": aux}, target)
    boundary = torch.randn(2, 1, 8, 8)
    with_b = build_loss({"name": "ce", "boundary_weight": 0.3})
    torch.testing.assert_close(
        with_b({"out": logits, "boundary": boundary}, target),
        cross_entropy(logits, target) + 0.3 * boundary_bce(boundary, target, 2),
    )
    with pytest.warns(UserWarning, match="boundary"):
        build_loss("ce")({"out": logits, "boundary": boundary}, target)


def test_bad_specs_and_labels(batch):
    logits, target = batch
    with pytest.raises(ValueError, match=r"unknown loss 'iou'.*ce, bce, dice, focal, lovasz, ohem, boundary"):
        build_loss("iou")
    with pytest.raises(ValueError, match="unknown option"):
        build_loss({"name": "ce", "gamma": 2})
    with pytest.raises(ValueError, match="unknown key"):
        build_loss({"name": "ce_lovasz", "lovasz_wieght": 2})
    bad = target.clone()
    bad[0, 0, 0] = 1  # fine
    bad[1, 0, 0] = 7
    with pytest.raises(ValueError, match=r"\[7\] outside \[0, 2\)"):
        build_loss()(logits, bad)
    with pytest.raises(ValueError, match="does not match"):
        build_loss()(logits, target[:, :4])
    with pytest.raises(ValueError, match="integer class ids"):
        build_loss()(logits, target.float())
