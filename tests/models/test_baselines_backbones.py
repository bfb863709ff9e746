"""Backbones shared by the baselines: output levels, strides, channels, band counts, key layout."""

from __future__ import annotations

import math

import pytest
import torch

from geomamba.models.backbones.mit import MixTransformer
from geomamba.models.backbones.resnet import ResNetBackbone
from geomamba.models.backbones.vmamba import VMambaBackbone
from geomamba.models.pretrained import load_backbone_weights

BACKBONES = {
    "resnet": lambda c: ResNetBackbone(in_channels=c, layers=(1, 1, 1, 1), channels=(8, 16, 32, 64)),
    "mit": lambda c: MixTransformer(
        in_channels=c, embed_dims=(8, 16, 32, 64), num_heads=(1, 1, 2, 2), depths=(1, 1, 1, 1)
    ),
    "vmamba": lambda c: VMambaBackbone(in_channels=c, dims=8, depths=(1, 1, 1, 1), mlp_ratio=2.0),
}


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_levels_strides_and_channels(kind):
    net = BACKBONES[kind](5)
    feats = net(torch.randn(2, 5, 40, 48))
    assert len(feats) == 4 and tuple(net.strides) == (4, 8, 16, 32)
    for f, c, s in zip(feats, net.out_channels, net.strides):
        assert f.shape == (2, c, math.ceil(40 / s), math.ceil(48 / s)), (kind, f.shape, s)


def test_resnet_output_stride_8_and_three_stages():
    net = ResNetBackbone(num_stages=3, output_stride=8, layers=(1, 1, 1, 1))
    feats = net(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 8] and net.strides == (4, 8, 8)
    assert net.out_channels == (64, 128, 256) and not hasattr(net, "layer4")


def test_resnet_bad_arguments():
    with pytest.raises(ValueError, match="depth must be one of"):
        ResNetBackbone(depth=20)
    with pytest.raises(ValueError, match="output_stride"):
        ResNetBackbone(output_stride=4)


def test_vmamba_defaults_are_the_mambabcd_tiny_encoder_and_stages_are_configurable():
    net = VMambaBackbone()
    assert net.out_channels == (96, 192, 384, 768) and net.depths == (2, 2, 4, 2)
    low_memory = VMambaBackbone(dims=(8, 16, 32, 64), depths=(2, 2, 4, 2))
    assert [len(stage.blocks) for stage in low_memory.layers] == [2, 2, 4, 2]
    with pytest.raises(ValueError, match="same number of stages"):
        VMambaBackbone(dims=(8, 16), depths=(1, 1, 1))


def test_vmamba_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = VMambaBackbone(dims=8, depths=(1, 1, 1, 1), mlp_ratio=2.0, drop_path_rate=0.0)
    ckpt = VMambaBackbone(dims=8, depths=(1, 1, 1, 1), mlp_ratio=2.0, drop_path_rate=0.0, use_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 16, 16)
    for net in (plain, ckpt):
        sum(f.sum() for f in net(x)).backward()
    torch.testing.assert_close(plain.patch_embed[0].weight.grad, ckpt.patch_embed[0].weight.grad)


def test_mit_uses_the_official_key_layout_and_loads_a_file_with_head(tmp_path):
    src = BACKBONES["mit"](3)
    keys = set(src.state_dict())
    for key in (
        "patch_embed1.proj.weight",
        "block1.0.attn.q.weight",
        "block1.0.attn.kv.weight",
        "block1.0.attn.sr.weight",
        "block1.0.mlp.dwconv.dwconv.weight",
        "block4.0.attn.proj.bias",
        "norm4.weight",
    ):
        assert key in keys
    state = {**src.state_dict(), "head.weight": torch.zeros(10, 64), "head.bias": torch.zeros(10)}
    torch.save(state, tmp_path / "mit.pth")
    dst = BACKBONES["mit"](3)
    report = load_backbone_weights(dst, tmp_path / "mit.pth")
    assert report.ignored == ["head.bias", "head.weight"]
    torch.testing.assert_close(dst.block2[0].attn.kv.weight, src.block2[0].attn.kv.weight)
