"""CrossBranchAttention, DualGatedFusion, CrossBranchFusion."""

from __future__ import annotations

import pytest
import torch

from geomamba.layers.cross_branch_fusion import CrossBranchAttention, CrossBranchFusion, DualGatedFusion


def test_attention_gates_cnn_channels_from_mamba_and_mamba_positions_from_cnn():
    att = CrossBranchAttention(8, reduction=2)
    c, m = torch.rand(2, 8, 6, 7) + 0.5, torch.rand(2, 8, 6, 7) + 0.5
    c2, m2 = att(c, m)
    rc, rm = c2 / c, m2 / m  # 1 + gate, gate in (0, 1)
    assert ((rc > 1) & (rc < 2)).all() and ((rm > 1) & (rm < 2)).all()
    # channel gate: one factor per (sample, channel); spatial gate: one factor per (sample, pixel)
    torch.testing.assert_close(rc, rc[:, :, :1, :1].expand_as(rc))
    torch.testing.assert_close(rm, rm[:, :1].expand_as(rm))
    # the CNN's gate comes from the Mamba map only, and vice versa
    c3, m3 = att(c, m * 3 + 1)
    torch.testing.assert_close(m3 / (m * 3 + 1), rm)
    assert not torch.allclose(c3, c2)
    c4, m4 = att(c * 3 + 1, m)
    torch.testing.assert_close(c4 / (c * 3 + 1), rc)
    assert not torch.allclose(m4, m2)


def test_dual_gates_are_independent_and_without_gating_branches_are_summed():
    fusion = DualGatedFusion(4).eval()
    c, m = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    g_c, g_m = fusion.gates(c, m)
    assert g_c.shape == g_m.shape == (1, 4, 5, 5)
    assert ((g_c > 0) & (g_c < 1)).all() and not torch.allclose(g_c + g_m, torch.ones_like(g_c))
    torch.testing.assert_close(fusion(c, m), fusion.proj(g_c * c + g_m * m))
    with torch.no_grad():
        fusion.gate.weight.zero_()
        fusion.gate.bias.zero_()
    torch.testing.assert_close(fusion(c, m), fusion.proj(0.5 * c + 0.5 * m))
    plain = DualGatedFusion(4, gating=False).eval()
    assert plain.gate is None
    torch.testing.assert_close(plain(c, m), plain.proj(c + m))
    with pytest.raises(RuntimeError, match="gating=False"):
        plain.gates(c, m)


@pytest.mark.parametrize(
    ("attention", "gating"), [(True, True), (True, False), (False, True), (False, False)]
)
def test_fusion_switches_shape_and_gradients(attention, gating):
    fusion = CrossBranchFusion(8, attention=attention, gating=gating, reduction=4)
    c = torch.randn(2, 8, 6, 6, requires_grad=True)
    m = torch.randn(2, 8, 3, 3, requires_grad=True)  # another size: resized to the CNN map's
    out = fusion(c, m)
    assert out.shape == (2, 8, 6, 6)
    out.square().mean().backward()
    assert c.grad.abs().sum() > 0 and m.grad.abs().sum() > 0
    assert all(p.grad is not None for p in fusion.parameters())
    assert (fusion.attention is not None) == attention and (fusion.fusion.gate is not None) == gating


def test_removing_parts_removes_parameters():
    def count(**kw):
        return sum(p.numel() for p in CrossBranchFusion(16, **kw).parameters())

    assert count() > count(attention=False) > count(attention=False, gating=False)
    assert count() > count(gating=False) > count(attention=False, gating=False)


def test_bad_inputs_are_named():
    fusion = CrossBranchFusion(8)
    with pytest.raises(ValueError, match=r"cnn \(2, 4, 6, 6\) and mamba \(2, 8, 6, 6\)"):
        fusion(torch.randn(2, 4, 6, 6), torch.randn(2, 8, 6, 6))
    with pytest.raises(ValueError, match="spatial_kernel"):
        CrossBranchAttention(8, spatial_kernel=4)


def test_attention_uses_the_shared_gates_and_keeps_parameter_names():
    from geomamba.layers.attention import ChannelAttention, SpatialAttention

    att = CrossBranchAttention(32, reduction=16, spatial_kernel=7)
    assert isinstance(att.channel_gate, ChannelAttention) and not att.channel_gate.multiply
    assert isinstance(att.spatial_gate, SpatialAttention) and not att.spatial_gate.multiply
    # The names of the former private gates: checkpoints saved before the swap still load.
    shapes = {k: tuple(v.shape) for k, v in att.state_dict().items()}
    assert shapes == {
        "channel_gate.mlp.0.weight": (2, 32, 1, 1),
        "channel_gate.mlp.2.weight": (32, 2, 1, 1),
        "spatial_gate.conv.weight": (1, 2, 7, 7),
    }
