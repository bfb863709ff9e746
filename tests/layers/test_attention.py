import pytest
import torch

from geomamba.layers.attention import ChannelAttention, SpatialAttention, SqueezeExcitation


def test_channel_attention_gate_shape_and_range():
    x = torch.randn(2, 16, 5, 7) * 10
    gate = ChannelAttention(16, reduction=4)(x)
    assert gate.shape == (2, 16, 1, 1)
    assert torch.all((gate > 0) & (gate < 1))


def test_channel_attention_uses_avg_and_max():
    ca = ChannelAttention(4, reduction=2)
    torch.nn.init.constant_(ca.mlp[0].weight, 1.0)
    torch.nn.init.constant_(ca.mlp[2].weight, 0.5)
    x = torch.zeros(1, 4, 3, 3)
    x[0, 0, 1, 1] = 9.0  # channel 0: mean 1, max 9
    # 2 hidden units = relu(sum of channel stats): avg path 1, max path 9; output 0.5 * 2 * (1 + 9) = 10
    torch.testing.assert_close(ca(x), torch.sigmoid(torch.full((1, 4, 1, 1), 10.0)))


def test_spatial_attention_gate_shape_and_range():
    x = torch.randn(2, 16, 9, 11) * 10
    sa = SpatialAttention()
    gate = sa(x)
    assert gate.shape == (2, 1, 9, 11)
    assert torch.all((gate > 0) & (gate < 1))
    assert sa.conv.kernel_size == (7, 7) and sa.conv.in_channels == 2


def test_squeeze_excitation_and_multiply_mode():
    x = torch.randn(2, 8, 4, 4)
    se = SqueezeExcitation(8, reduction=4)
    gate = se(x)
    assert gate.shape == (2, 8, 1, 1) and torch.all((gate > 0) & (gate < 1))
    se.multiply = True
    torch.testing.assert_close(se(x), x * gate)
    sa = SpatialAttention(multiply=True)
    assert sa(x).shape == x.shape


def test_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        SpatialAttention(kernel_size=4)
    with pytest.raises(ValueError, match="channels"):
        ChannelAttention(0)
