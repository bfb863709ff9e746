import pytest
import torch

from geomamba.layers.fusion import AttentionalFeatureFusion, ConcatFusion, DifferenceBlock


@pytest.mark.parametrize("mode", ["abs_concat", "abs", "concat"])
def test_difference_block_modes(mode):
    block = DifferenceBlock(6, mode=mode)
    a, b = torch.randn(2, 6, 5, 5), torch.randn(2, 6, 5, 5)
    out = block(a, b)
    assert out.shape == (2, 6, 5, 5) and out.min() >= 0  # ReLU
    assert block.fuse.proj[0].in_channels == {"abs_concat": 18, "abs": 6, "concat": 12}[mode]
    if mode == "abs":
        torch.testing.assert_close(block(b, a), out)


def test_difference_block_errors():
    with pytest.raises(ValueError, match="mode"):
        DifferenceBlock(4, mode="sum")
    with pytest.raises(ValueError, match="differ"):
        DifferenceBlock(4)(torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 4))
    with pytest.raises(ValueError, match="8 channels"):
        ConcatFusion(8, 4)(torch.randn(1, 4, 3, 3))


def test_aff_weights_and_fixed_point():
    aff = AttentionalFeatureFusion(8)
    m, br = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)  # batch of one trains (no BN on pooled values)
    w = aff.weights(m, br)
    assert w.shape == (1, 8, 4, 4) and torch.all((w > 0) & (w < 1))
    torch.testing.assert_close(aff(m, br), m * w + br * (1 - w))
    torch.testing.assert_close(aff(m, m), m)
