"""Shapes and structure of the encoder, decoder, difference and frequency-adaptive Mamba blocks."""

import pytest
import torch

from geomamba.layers.difference_module import EdgeAwareDifferenceModule
from geomamba.layers.embed import Downsample, PatchEmbed, Upsample
from geomamba.layers.frequency_mamba import FrequencyAdaptiveMambaBlock
from geomamba.layers.heads import ClassifierHead
from geomamba.layers.mamba_decoder import AttentionMambaStage, MambaAttentionDecoder
from geomamba.layers.scan_branch import SS2DBranch
from geomamba.layers.temporal_encoder import BitemporalSS2DCore, TemporalInteractionEncoderBlock


def _n(m):
    return sum(p.numel() for p in m.parameters())


def test_scan_branch_shape():
    assert SS2DBranch(6)(torch.randn(1, 6, 3, 5)).shape == (1, 6, 3, 5)


@pytest.mark.parametrize("core", ["fused", "shared", "separate"])
def test_encoder_block_core_interaction(core):
    torch.manual_seed(0)
    block = TemporalInteractionEncoderBlock(4, core=core).eval()
    a, b = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    a1, b1 = block(a, b)
    assert a1.shape == b1.shape == (1, 4, 4, 4)
    a2, _ = block(a, b + torch.randn_like(b))
    # only the fused core lets date B influence the features of date A
    assert torch.allclose(a1, a2) == (core != "fused")


def test_encoder_block_siamese_switches():
    default = TemporalInteractionEncoderBlock(8)
    assert len(default.cnn) == 1 and len(default.mlp) == 2
    simlp = TemporalInteractionEncoderBlock(8, siamese_mlp=True)
    incnn = TemporalInteractionEncoderBlock(8, siamese_cnn=False)
    assert _n(simlp) < _n(default) < _n(incnn)
    assert _n(BitemporalSS2DCore(8, mode="shared")) < _n(BitemporalSS2DCore(8, mode="separate"))


def test_decoder_stages_and_attention_switches():
    x = torch.randn(2, 8, 4, 4)
    full = MambaAttentionDecoder(8)
    assert full(x).shape == x.shape
    assert full.stage1.attention.__class__.__name__ == "ChannelAttention"
    assert full.stage2.attention.__class__.__name__ == "SpatialAttention"
    none = MambaAttentionDecoder(8, channel_attention=False, spatial_attention=False)
    assert none.stage1.attention is None and none.stage2.attention is None
    assert _n(none) < _n(MambaAttentionDecoder(8, spatial_attention=False)) < _n(full)
    with pytest.raises(ValueError, match="attention"):
        AttentionMambaStage(8, attention="temporal")


def test_frequency_adaptive_mamba_and_difference_module():
    x = torch.randn(2, 4, 6, 6)
    fam = FrequencyAdaptiveMambaBlock(4, adakern=True, freq_select=True)
    assert fam(x).shape == x.shape
    assert fam.fadc.adakern is not None and fam.fadc.freq_select is not None
    diff = EdgeAwareDifferenceModule(4)
    assert diff(x, x.flip(0)).shape == x.shape
    no_edges = EdgeAwareDifferenceModule(4, first_order=False, second_order=False)
    no_mamba = EdgeAwareDifferenceModule(4, mamba=False)
    assert no_edges.edges is None and no_mamba.mamba is None
    assert _n(no_edges) < _n(diff) and _n(no_mamba) < _n(diff)


def test_embed_resample_head():
    x = torch.randn(1, 13, 16, 16)
    e = PatchEmbed(13, 8, patch_size=4)(x)
    assert e.shape == (1, 8, 4, 4)
    assert Downsample(8, 16)(e).shape == (1, 16, 2, 2)
    assert Upsample(8, 4)(e).shape == (1, 4, 8, 8)
    assert ClassifierHead(8, 2)(e, size=(16, 16)).shape == (1, 2, 16, 16)
    with pytest.raises(ValueError, match="in_channels=13"):
        PatchEmbed(13, 8)(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="multiples of patch_size 4"):
        PatchEmbed(13, 8)(torch.randn(1, 13, 10, 16))
