"""DIA: shapes for even and odd sizes, the seed's factor-2 path on even sizes, mask range, and the
modulator gradients exactly 0.4x / 0.1x of their unscaled values."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from geomamba.layers.dia import DeformableInteractiveAttention, scale_gradient


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (5, 6), (1, 1), (3, 2)])
@pytest.mark.parametrize("distortion", [False, True])
def test_shape_even_and_odd(size, distortion):
    layer = DeformableInteractiveAttention(distortion=distortion)
    x = torch.randn(2, 6, *size, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape
    assert (y >= 0).all()  # ReLU output
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_even_size_matches_the_seeds_factor_two_upsample():
    layer = DeformableInteractiveAttention(distortion=True)
    x = torch.randn(2, 5, 10, 12)
    avg = layer.down_avg(x.mean(dim=1, keepdim=True))
    mx = layer.down_max(x.amax(dim=1, keepdim=True))
    z = torch.cat(
        [torch.sigmoid(layer.avg_modulator(avg)) * mx, torch.sigmoid(layer.max_modulator(mx)) * avg], dim=1
    )
    seed_mask = torch.sigmoid(nn.Upsample(scale_factor=2)(layer.conv(z)))
    torch.testing.assert_close(layer(x), F.relu(x * seed_mask))
    # the seed's factor 2 gives one row too many on an odd size; ours gives exactly (H, W)
    odd = torch.randn(1, 5, 9, 7)
    assert layer.mask(odd).shape == (1, 1, 9, 7)


def test_mask_in_open_unit_interval_and_gate_output():
    layer = DeformableInteractiveAttention(distortion=True, output="mask")
    x = torch.randn(3, 4, 11, 6)
    mask = layer(x)
    assert mask.shape == (3, 1, 11, 6)
    assert (mask > 0).all() and (mask < 1).all()
    torch.testing.assert_close(mask, layer.mask(x))


def test_modulators_start_with_zero_weights():
    layer = DeformableInteractiveAttention(distortion=True)
    assert layer.avg_modulator.weight.abs().sum() == 0 and layer.max_modulator.weight.abs().sum() == 0
    assert not hasattr(DeformableInteractiveAttention(), "avg_modulator")


def _grads(layer: DeformableInteractiveAttention, x: torch.Tensor) -> dict[str, torch.Tensor]:
    layer.zero_grad()
    x = x.clone().requires_grad_(True)
    (layer(x) * torch.linspace(-1, 1, x.numel(), dtype=x.dtype).view_as(x)).sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    grads["input"] = x.grad.clone()
    return grads


def test_modulator_gradients_are_scaled_exactly():
    scaled = DeformableInteractiveAttention(distortion=True)
    unscaled = DeformableInteractiveAttention(distortion=True, avg_grad_scale=1.0, max_grad_scale=1.0)
    with torch.no_grad():  # non-zero modulator weights, so that every gradient path is exercised
        scaled.avg_modulator.weight.normal_()
        scaled.max_modulator.weight.normal_()
    unscaled.load_state_dict(scaled.state_dict())
    scaled, unscaled = scaled.double(), unscaled.double()  # "exactly": equal to double rounding
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    g, g0 = _grads(scaled, x), _grads(unscaled, x)
    for name in ("weight", "bias"):
        a, m = g[f"avg_modulator.{name}"], g[f"max_modulator.{name}"]
        assert a.abs().sum() > 0 and m.abs().sum() > 0
        torch.testing.assert_close(a, 0.4 * g0[f"avg_modulator.{name}"], rtol=1e-12, atol=0)
        torch.testing.assert_close(m, 0.1 * g0[f"max_modulator.{name}"], rtol=1e-12, atol=0)
    # the mask conv sits after the modulators: its gradient is not scaled
    torch.testing.assert_close(g["conv.weight"], g0["conv.weight"], rtol=1e-12, atol=0)
    # the forward pass is unchanged
    torch.testing.assert_close(scaled(x), unscaled(x))


def test_scale_gradient_function():
    x = torch.randn(4, requires_grad=True)
    y = scale_gradient(x, 0.25)
    assert torch.equal(y, x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((4,), 0.25))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="output must be"):
        DeformableInteractiveAttention(output="gate")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        DeformableInteractiveAttention()(torch.randn(3, 8, 8))
