import itertools

import pytest
import torch

from geomamba.losses import lovasz_softmax


def _jaccard_loss(mis: set, fg: set) -> float:
    """Berman et al.'s set function: |M| / |F ∪ M| (0 for the empty set)."""
    return len(mis) / len(fg | mis) if mis else 0.0


def _lovasz_extension(errors: list[float], fg: set) -> float:
    """Brute force: the Lovász extension as the integral over t of Delta({i : m_i >= t})."""
    levels = [*sorted(set(errors), reverse=True), 0.0]
    total = 0.0
    for hi, lo in itertools.pairwise(levels):
        total += (hi - lo) * _jaccard_loss({i for i, e in enumerate(errors) if e >= hi}, fg)
    return total


def _brute(probs: torch.Tensor, labels: torch.Tensor, classes: str) -> float:
    p, k = probs.shape
    losses = []
    for c in range(k):
        fg = {i for i in range(p) if int(labels[i]) == c}
        if classes == "present" and not fg:
            continue
        errors = [abs(float(i in fg) - float(probs[i, c])) for i in range(p)]
        losses.append(_lovasz_extension(errors, fg))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("classes", ["present", "all"])
def test_lovasz_equals_brute_force(seed, classes):
    g = torch.Generator().manual_seed(seed)
    k = 3
    logits = torch.randn(1, k, 2, 4, generator=g) * 2
    target = torch.randint(0, k, (1, 2, 4), generator=g)
    if seed % 2:
        target[target == 2] = 0  # class 2 absent from the batch
    probs = torch.softmax(logits, 1).permute(0, 2, 3, 1).reshape(-1, k)
    expected = _brute(probs, target.reshape(-1), classes)
    got = lovasz_softmax(logits, target, classes=classes, ignore_index=255)
    assert float(got) == pytest.approx(expected, abs=1e-5)


def test_hard_predictions_give_one_minus_iou():
    target = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 2]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 0, 1, 2]]])
    onehot = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    ious = []
    for c in range(3):
        inter = ((pred == c) & (target == c)).sum().item()
        union = ((pred == c) | (target == c)).sum().item()
        ious.append(inter / union)
    expected = 1 - sum(ious) / 3
    got = lovasz_softmax(onehot, target, from_logits=False)
    assert float(got) == pytest.approx(expected, abs=1e-6)


def test_absent_class_and_ignore_index():
    logits = torch.randn(2, 2, 3, 3)
    target = torch.zeros(2, 3, 3, dtype=torch.long)  # class 1 absent
    present = lovasz_softmax(logits, target)
    only_bg = lovasz_softmax(logits, target, classes=[0])
    torch.testing.assert_close(present, only_bg)
    # 'all': the absent class costs its largest predicted probability
    p1_max = torch.softmax(logits, 1)[:, 1].max()
    torch.testing.assert_close(lovasz_softmax(logits, target, classes="all"), (only_bg + p1_max) / 2)
    # ignored pixels are exactly as if they were not there
    target2 = torch.randint(0, 2, (1, 3, 4))
    logits2 = torch.randn(1, 2, 3, 4, requires_grad=True)
    ignored = target2.clone()
    ignored[:, :, 3] = 255
    torch.testing.assert_close(
        lovasz_softmax(logits2, ignored), lovasz_softmax(logits2[..., :3], target2[..., :3])
    )
    all_ignored = lovasz_softmax(logits2, torch.full_like(target2, 255))
    assert float(all_ignored.detach()) == 0.0
    all_ignored.backward()
    assert logits2.grad is not None


def test_per_image_and_gradient():
    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    target = torch.randint(0, 2, (2, 4, 4))
    per = lovasz_softmax(logits, target, per_image=True)
    separate = (lovasz_softmax(logits[:1], target[:1]) + lovasz_softmax(logits[1:], target[1:])) / 2
    torch.testing.assert_close(per, separate)
    per.backward()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("length", [5, 4096, 4097, 5000, 3 * 1024 * 7 + 1])
def test_two_level_scan_matches_cumsum(length):
    """Long Lovász rows are scanned in blocks (GPU speed): exact on 0/1 rows, close on real values."""
    from geomamba.losses.lovasz import _cumsum_last, _lovasz_grad_rows

    g = torch.Generator().manual_seed(length)
    gt = (torch.rand(2, length, generator=g) < 0.3).float()
    assert torch.equal(_cumsum_last(gt), gt.cumsum(-1))
    x = torch.rand(3, length, generator=g, dtype=torch.float64)
    torch.testing.assert_close(_cumsum_last(x), x.cumsum(-1), rtol=1e-12, atol=1e-9)
    # the Jaccard steps against the textbook two-scan form, in float64
    gt64 = gt.double()
    gts = gt64.sum(-1, keepdim=True)
    jac = 1 - (gts - gt64.cumsum(-1)) / (gts + (1 - gt64).cumsum(-1))
    want = torch.cat([jac[..., :1], jac[..., 1:] - jac[..., :-1]], -1)
    torch.testing.assert_close(_lovasz_grad_rows(gt).double(), want, rtol=1e-5, atol=1e-6)
