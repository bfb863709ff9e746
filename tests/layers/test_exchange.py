"""ChannelExchange / SpatialExchange: exact swaps on hand-made tensors."""

from __future__ import annotations

import pytest
import torch

from geomamba.layers.exchange import ChannelExchange, SpatialExchange


def _pair(c: int = 4, h: int = 2, w: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    # value = 100 * date + 10 * channel + column: every element says where it came from
    ch = torch.arange(c).view(1, c, 1, 1) * 10
    col = torch.arange(w).view(1, 1, 1, w)
    base = (ch + col).expand(1, c, h, w).float()
    return base + 100, base + 200


def test_channel_exchange_half_swaps_even_channels():
    x1, x2 = _pair()
    y1, y2 = ChannelExchange(p=0.5)(x1, x2)
    assert torch.equal(y1[:, [0, 2]], x2[:, [0, 2]]) and torch.equal(y2[:, [0, 2]], x1[:, [0, 2]])
    assert torch.equal(y1[:, [1, 3]], x1[:, [1, 3]]) and torch.equal(y2[:, [1, 3]], x2[:, [1, 3]])
    assert y1[0, 0, 0, 3].item() == 203.0 and y1[0, 1, 1, 2].item() == 112.0


def test_channel_exchange_third_and_all():
    x1, x2 = _pair(c=6)
    y1, _ = ChannelExchange(p=1 / 3)(x1, x2)
    expected_from_b = torch.tensor([True, False, False, True, False, False])
    assert torch.equal(y1[0, :, 0, 0] >= 200, expected_from_b)
    y1, y2 = ChannelExchange(p=1.0)(x1, x2)
    assert torch.equal(y1, x2) and torch.equal(y2, x1)


def test_spatial_exchange_half_swaps_even_columns():
    x1, x2 = _pair()
    y1, y2 = SpatialExchange(p=0.5)(x1, x2)
    assert torch.equal(y1[..., [0, 2]], x2[..., [0, 2]]) and torch.equal(y2[..., [0, 2]], x1[..., [0, 2]])
    assert torch.equal(y1[..., [1, 3]], x1[..., [1, 3]]) and torch.equal(y2[..., [1, 3]], x2[..., [1, 3]])
    assert y2[0, 3, 1, 0].item() == 130.0


@pytest.mark.parametrize("layer", [ChannelExchange(p=0.5), SpatialExchange(p=0.5)])
def test_exchange_is_an_involution_and_passes_gradients(layer):
    x1, x2 = (t.clone().requires_grad_() for t in _pair())
    y1, y2 = layer(*layer(x1, x2))
    assert torch.equal(y1, x1) and torch.equal(y2, x2)
    (layer(x1, x2)[0] * 3).sum().backward()
    assert torch.all((x1.grad == 3) | (x2.grad == 3)) and (x1.grad + x2.grad == 3).all()


@pytest.mark.parametrize("p", [0.0, 0.4, 1.5, -0.5])
def test_bad_proportion_is_refused(p):
    with pytest.raises(ValueError, match="p must"):
        ChannelExchange(p=p)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"\(1, 4, 2, 4\) and \(1, 4, 2, 3\)"):
        SpatialExchange()(torch.zeros(1, 4, 2, 4), torch.zeros(1, 4, 2, 3))
