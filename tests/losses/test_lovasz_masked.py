"""Lovasz-softmax with ignored pixels masked in place (no selection of a data-dependent size) equals the
loss of the valid pixels alone, in value and gradient."""

import pytest
import torch

from geomamba.losses.lovasz import lovasz_softmax, lovasz_softmax_flat


@pytest.mark.parametrize("classes", ["present", "all", [1]])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masking_equals_selecting_valid_pixels(seed, classes):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 3, 9, 7, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (3, 9, 7), generator=g)
    target[torch.rand(3, 9, 7, generator=g) < 0.3] = 255
    target[0, :2] = 0  # ties of equal errors, also across the ignored pixels
    loss = lovasz_softmax(logits, target, classes=classes)
    (grad,) = torch.autograd.grad(loss, logits)
    probs = torch.softmax(logits, 1).permute(0, 2, 3, 1).reshape(-1, 3)
    t = target.reshape(-1)
    valid = t != 255
    expected = lovasz_softmax_flat(probs[valid], t[valid], classes=classes)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)
    assert grad[target.unsqueeze(1).expand_as(grad) == 255].abs().max() == 0


def test_all_pixels_ignored_gives_zero_with_zero_gradient():
    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255)
    for classes in ("present", "all"):
        loss = lovasz_softmax(logits, target, classes=classes)
        (grad,) = torch.autograd.grad(loss, logits)
        assert loss.item() == 0 and grad.abs().max() == 0
