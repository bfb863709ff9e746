"""Plug-in places of the flagship (SubtaskMamba) and of CMDBNet: what they declare, that a plug-in lands at
the place (and, for group places, at every level), that the models still run and train through it, and
that bad names/places are errors listing the valid ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from geomamba.layers.attention import SqueezeExcitation
from geomamba.layers.cross_branch_fusion import CrossBranchAttention
from geomamba.layers.dia import DeformableInteractiveAttention
from geomamba.layers.exchange import ChannelExchange
from geomamba.layers.global_m import GlobalM
from geomamba.layers.plugins import PluginError, SiameseLayer, apply_plugins, get_submodule, list_places
from geomamba.models import create_model


def _flagship(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return create_model("subtask_mamba_tiny", **kwargs)


def _cmdbnet(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return create_model("cmdbnet_tiny", **kwargs)


# ------------------------------------------------------------------------------------------ flagship


def test_flagship_places():
    places = list_places(_flagship())
    for lv, dim in zip((1, 2, 3), (8, 16, 32)):
        assert places[f"encoder.stage{lv}.interaction"].kind == "interaction"
        assert places[f"encoder.stage{lv}.interaction"].channels == dim
        gate = places[f"decoder.level{lv}.spatial_attention"]
        assert gate.kind == "gate" and gate.channels == 2 * dim  # ssm_ratio 2: the gated branch's width
        assert places[f"decoder.level{lv}.channel_attention"].kind == "gate"
        assert places[f"difference.level{lv}.mamba"].kind == "block"
        assert places[f"difference.level{lv}.output"].channels == dim
    group = places["decoder.spatial_attention"]
    assert group.members == tuple(f"decoder.level{i}.spatial_attention" for i in (1, 2, 3))
    # ablations without a decoder attention / difference Mamba do not offer those places
    ablated = list_places(_flagship(decoder="de_ca", difference="di_so_fo"))
    assert "decoder.spatial_attention" not in ablated and "decoder.level1.spatial_attention" not in ablated
    assert "decoder.channel_attention" in ablated and "difference.mamba" not in ablated


def test_flagship_slots_add_no_parameters():
    plain = _flagship()
    keys = set(plain.state_dict())
    assert not any(k.startswith(("stage_interactions", "difference_outputs")) for k in keys)
    with_none = _flagship(plugins={"encoder.interaction": "none", "difference.output": "none"})
    assert set(with_none.state_dict()) == keys


def test_flagship_dia_replaces_the_decoder_spatial_attention_at_every_level():
    model = _flagship(plugins={"decoder.spatial_attention": "dia"})
    seen = []
    for i in range(3):
        gate = get_submodule(model, f"decoders.{i}.stage2.attention")
        assert isinstance(gate, DeformableInteractiveAttention) and gate.output == "mask"
        gate.register_forward_hook(lambda m, args, out: seen.append((args[0].shape[1], out.shape)))
        # the channel attention of stage 1 is untouched
        assert type(get_submodule(model, f"decoders.{i}.stage1.attention")).__name__ == "ChannelAttention"
    x = torch.randn(2, 2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 2, 32, 32)
    # the gates see the decoder's inner width (2 * dim) and give one spatial mask each
    assert sorted(c for c, _ in seen) == [16, 32, 64] and all(s[1] == 1 for _, s in seen)
    out.square().mean().backward()
    assert get_submodule(model, "decoders.0.stage2.attention.conv").weight.grad.abs().sum() > 0


def test_flagship_single_level_nested_and_interaction_entries():
    model = _flagship(
        plugins={
            "decoder": {"level2": {"channel_attention": {"type": "se", "reduction": 4}}},
            "encoder.stage2.interaction": {"type": "global_m", "num_heads": 2},
            "encoder.stage3.interaction": "channel_exchange",
            "difference.output": "dia",
        }
    )
    assert isinstance(get_submodule(model, "decoders.1.stage1.attention"), SqueezeExcitation)
    assert type(get_submodule(model, "decoders.0.stage1.attention")).__name__ == "ChannelAttention"
    inter = get_submodule(model, "stage_interactions.1")
    assert isinstance(inter, SiameseLayer) and isinstance(inter.layer, GlobalM)
    assert isinstance(get_submodule(model, "stage_interactions.2"), ChannelExchange)
    assert all(isinstance(m, DeformableInteractiveAttention) for m in model.difference_outputs)
    assert model(torch.randn(1, 2, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_flagship_plugins_change_the_output():
    x = torch.randn(1, 2, 3, 32, 32)
    base = _flagship().eval()
    model = _flagship(plugins={"difference.output": "dia"}).eval()
    model.load_state_dict(base.state_dict(), strict=False)  # same weights except the new DIA blocks
    with torch.no_grad():
        assert (model(x) - base(x)).abs().max() > 1e-6


@pytest.mark.parametrize(
    ("plugins", "message"),
    [
        (
            {"decoder.spatial_atention": "dia"},
            "has no plug-in place 'decoder.spatial_atention'. Did you mean",
        ),
        ({"decoder.spatial_attention": "diaa"}, "unknown gate layer 'diaa'. Did you mean dia?"),
        ({"decoder.spatial_attention": "channel_exchange"}, "builds interaction, not gate"),
        ({"decoder": {"spatial_attention": {"distortion": True}}}, "a dict with 'type'"),
        ({"decoder.spatial_attention": DeformableInteractiveAttention()}, "is a group of 3 places"),
    ],
)
def test_flagship_bad_plugins_are_named(plugins, message):
    with pytest.raises(PluginError) as info:
        _flagship(plugins=plugins)
    assert message in str(info.value)
    if "no plug-in place" in message:
        assert "Places: decoder.channel_attention, decoder.level1.channel_attention" in str(info.value)
    if "diaa" in message:
        assert "'decoder.spatial_attention' (member 'decoder.level1.spatial_attention')" in str(info.value)
        assert "Choose one of: channel_attention, dia, se, spatial_attention" in str(info.value)


# ------------------------------------------------------------------------------------------ CMDBNet


def test_cmdbnet_places():
    places = list_places(_cmdbnet())
    for lv, c in zip((1, 2, 3, 4), (8, 16, 32, 64)):
        assert places[f"fusion.level{lv}.attention"].kind == "interaction"
        assert places[f"fusion.level{lv}.spatial_attention"].kind == "gate"
        assert places[f"fusion.level{lv}.channel_attention"].channels == c
        assert places[f"encoder.cnn.stage{lv}.output"].channels == c
        assert places[f"encoder.mamba.stage{lv}.output"].kind == "block"
    assert places["decoder.output"].mode == "append" and places["decoder.output"].channels == 16
    cnn_only = list_places(_cmdbnet(branches="cnn", boundary=False))
    assert not any(p.startswith(("fusion", "encoder.mamba")) for p in cnn_only)
    gating = list_places(_cmdbnet(fusion="gating"))
    assert "fusion.attention" not in gating and "encoder.mamba.output" in gating


def test_cmdbnet_plugins_land_and_train():
    model = _cmdbnet(
        plugins={
            "fusion.spatial_attention": "dia",
            "fusion.level4.attention": "channel_exchange",
            "encoder.mamba.stage2.output": {"type": "global_m", "num_heads": 2},
            "decoder.output": "se",
        }
    )
    for i in range(3):
        assert isinstance(model.fusions[i].attention, CrossBranchAttention)
        assert isinstance(model.fusions[i].attention.spatial_gate, DeformableInteractiveAttention)
    assert isinstance(model.fusions[3].attention, ChannelExchange)
    assert isinstance(model.mamba_outputs[1], GlobalM) and isinstance(model.decoder[1], SqueezeExcitation)
    out = model(torch.randn(2, 3, 32, 32))
    assert out["out"].shape == (2, 6, 32, 32)
    out["out"].square().mean().backward()
    assert model.fusions[0].attention.spatial_gate.conv.weight.grad.abs().sum() > 0
    assert model.mamba_outputs[1].qkv_proj.weight.grad.abs().sum() > 0


def test_cmdbnet_places_follow_earlier_replacements():
    model = _cmdbnet()
    with pytest.raises(PluginError, match=r"has no plug-in place 'fusion\.level1\.spatial_attention'"):
        apply_plugins(model, {"fusion.level1.attention": "none", "fusion.level1.spatial_attention": "dia"})
    with pytest.raises(PluginError, match=r"Places: decoder\.output, encoder\.cnn\.output"):
        _cmdbnet(plugins={"fusion.level5.attention": "dia"})
