import math

import pytest
import torch

from geomamba.layers.derivative import (
    DualOrderDerivativeModule,
    FirstOrderDerivativeOperator,
    SecondOrderDerivativeOperator,
    depthwise_replicate,
    difference_of_gaussians,
    gaussian_kernel,
    scharr_kernels,
)


def test_scharr_kernel_and_rotations_exact():
    expected = torch.tensor(
        [
            [[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]],  # 0 degrees (x-derivative)
            [[0, 3, 10], [-3, 0, 3], [-10, -3, 0]],  # 45 degrees
            [[3, 10, 3], [0, 0, 0], [-3, -10, -3]],  # 90 degrees
            [[10, 3, 0], [3, 0, -3], [0, -3, -10]],  # 135 degrees
        ],
        dtype=torch.float32,
    )
    k = scharr_kernels()
    assert torch.equal(k, expected)
    assert torch.equal(k[2], torch.rot90(k[0]))  # 90 degrees is a plain rotation
    assert torch.equal(k[3], torch.rot90(k[1]))


def _gauss(sigma):
    vals = [math.exp(-(i**2) / (2 * sigma**2)) for i in (-1, 0, 1)]
    g = torch.tensor([[a * b for b in vals] for a in vals], dtype=torch.float64)
    return g / g.sum()


@pytest.mark.parametrize("sigmas", [(0.5, 1.0), (0.8, 2.0)])
def test_dog_equals_difference_of_gaussians(sigmas):
    s1, s2 = sigmas
    torch.testing.assert_close(gaussian_kernel(s1), _gauss(s1).float())
    torch.testing.assert_close(difference_of_gaussians(s1, s2), (_gauss(s1) - _gauss(s2)).float())
    op = SecondOrderDerivativeOperator(3, sigmas=sigmas)
    for c in range(3):
        torch.testing.assert_close(op.weight[c, 0], (_gauss(s1) - _gauss(s2)).float())
    assert abs(float(difference_of_gaussians(s1, s2).sum())) < 1e-6  # zero-sum: Laplace-like


def test_first_order_magnitude_on_a_ramp():
    x = torch.arange(8.0).expand(1, 2, 6, 8).contiguous()  # f(i, j) = j
    out = FirstOrderDerivativeOperator(2)(x)
    # responses 32 (0 deg), 26 (45), 0 (90), -26 (135) in the interior
    expected = math.sqrt(32**2 + 26**2 + 26**2 + 1e-6)
    torch.testing.assert_close(out[:, :, 1:-1, 1:-1], torch.full((1, 2, 4, 6), expected))


def test_operators_give_nothing_on_flat_maps():
    x = torch.full((1, 3, 5, 5), 4.0)
    fo = FirstOrderDerivativeOperator(3)(x)
    torch.testing.assert_close(fo, torch.full_like(x, math.sqrt(1e-6)))
    torch.testing.assert_close(SecondOrderDerivativeOperator(3)(x), torch.zeros_like(x), atol=1e-6, rtol=0)


def test_trainable_switch_and_dual_module():
    fixed = DualOrderDerivativeModule(4, trainable=False)
    assert sum(p.numel() for p in fixed.parameters()) == 0
    assert fixed.first.weight.shape == (16, 1, 3, 3)
    trainable = DualOrderDerivativeModule(4)
    assert sum(p.numel() for p in trainable.parameters()) == 16 * 9 + 4 * 9
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(trainable(x), x + trainable.first(x) + trainable.second(x))
    only_fo = DualOrderDerivativeModule(4, second_order=False)
    torch.testing.assert_close(only_fo(x), x + only_fo.first(x))
    with pytest.raises(ValueError):
        DualOrderDerivativeModule(4, first_order=False, second_order=False)
    with pytest.raises(ValueError, match="4 channels"):
        trainable.first(torch.randn(1, 3, 4, 4))


@pytest.mark.parametrize("multiplier", [1, 4])
def test_shifted_taps_equal_the_depthwise_conv(multiplier):
    """The compiled path's sum of shifted taps gives F.conv2d's values and gradients (x and the kernels),
    replicate borders included (float64)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3 * multiplier, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    results = []
    for taps in (False, True):
        out = depthwise_replicate(x, weight, taps=taps)
        results.append([out, *torch.autograd.grad(out.square().sum(), (x, weight))])
    assert results[0][0].shape == (2, 3, multiplier, 7, 5)
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_compiled_operators_use_the_taps_and_match_eager():
    """Under torch.compile the derivative operators trace no convolution and give the eager outputs and
    kernel gradients; under autocast the output keeps the autocast dtype."""
    graphs = []

    def record(gm, _example_inputs):
        graphs.append({str(n.target) for n in gm.graph.nodes if n.op == "call_function"})
        return gm.forward

    torch.manual_seed(1)
    m = DualOrderDerivativeModule(4)
    x = torch.randn(2, 4, 9, 8)
    want = m(x)
    want_g = torch.autograd.grad(want.sum(), list(m.parameters()))
    torch._dynamo.reset()
    got = torch.compile(m, backend=record)(x)
    got_g = torch.autograd.grad(got.sum(), list(m.parameters()))
    assert graphs and not any("conv" in t for g in graphs for t in g)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, e in zip(got_g, want_g):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert depthwise_replicate(x, m.second.weight, taps=True).dtype == torch.bfloat16
