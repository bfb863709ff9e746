"""Plug-in registry: names, shape contract per kind, conversions, errors, places (ChangerEx), GlobalM
row/column/hybrid built through the registry."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn as nn

from geomamba.layers import plugins
from geomamba.layers.dia import DeformableInteractiveAttention
from geomamba.layers.exchange import ChannelExchange
from geomamba.layers.global_m import GlobalM
from geomamba.layers.plugins import (
    PluginPlace,
    SiameseLayer,
    apply_plugins,
    build_plugin,
    get_submodule,
    list_places,
    list_plugins,
    plugin_from_config,
    register_plugin,
    replace_module,
)
from geomamba.models import create_model

HAS_ATTENTION = importlib.util.find_spec("geomamba.layers.attention") is not None


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry for tests that register names."""
    monkeypatch.setattr(plugins, "_PLUGINS", dict(plugins._PLUGINS))
    return plugins._PLUGINS


def test_builtin_names():
    names = list_plugins()
    assert {"dia", "global_m", "channel_exchange", "spatial_exchange", "dtm"} <= set(names)
    assert "channel_exchange" in list_plugins("interaction") and "global_m" in list_plugins("interaction")
    assert "channel_exchange" not in list_plugins("block")
    assert "dia" in list_plugins("gate") and "global_m" not in list_plugins("gate")
    assert list_plugins("depth_sequence") == ["dtm"]


@pytest.mark.parametrize("name", list_plugins("block"))
@pytest.mark.parametrize("size", [(8, 8), (5, 7)])
def test_every_block_plugin_keeps_the_shape(name, size):
    layer = build_plugin(name, 16, **({"num_heads": 4} if name == "global_m" else {}))
    x = torch.randn(2, 16, *size)
    assert layer(x).shape == x.shape


@pytest.mark.parametrize("name", list_plugins("gate"))
def test_every_gate_plugin_gives_a_broadcastable_gate(name):
    gate = build_plugin(name, 16, kind="gate")
    x = torch.randn(2, 16, 5, 7)
    g = gate(x)
    assert (x * g).shape == x.shape and g.shape != x.shape
    assert (g > 0).all() and (g < 1).all()


@pytest.mark.parametrize("name", list_plugins("interaction"))
def test_every_interaction_plugin_maps_a_pair(name):
    layer = build_plugin(name, 16, kind="interaction", **({"num_heads": 4} if name == "global_m" else {}))
    a, b = torch.randn(2, 16, 6, 6), torch.randn(2, 16, 6, 6)
    ya, yb = layer(a, b)
    assert ya.shape == a.shape and yb.shape == b.shape


def test_block_as_interaction_is_siamese_with_shared_weights():
    layer = build_plugin("global_m", 16, kind="interaction", num_heads=4, axial_strategy="column")
    assert isinstance(layer, SiameseLayer) and isinstance(layer.layer, GlobalM)
    a = torch.randn(1, 16, 5, 5)
    ya, yb = layer(a, a.clone())
    torch.testing.assert_close(ya, yb)
    first = build_plugin("dia", 16, kind="interaction", dates="first")
    b = torch.randn(1, 16, 5, 5)
    assert first(a, b)[1] is b


def test_gate_as_block_multiplies(registry):
    class HalfGate(nn.Module):
        def forward(self, x):
            return torch.full_like(x[:, :1], 0.5)

    register_plugin("half_gate", HalfGate, kinds=("gate",), channels_arg=None)
    block = build_plugin("half_gate", 8)  # a gate's default kind is gate
    assert block(torch.ones(1, 8, 2, 2)).shape == (1, 1, 2, 2)
    block = build_plugin("half_gate", 8, kind="block")
    torch.testing.assert_close(block(torch.ones(1, 8, 2, 2)), torch.full((1, 8, 2, 2), 0.5))
    assert "half_gate" in list_plugins("interaction")


@pytest.mark.parametrize("strategy", ["row", "column", "hybrid"])
def test_global_m_strategies_through_the_registry(strategy):
    layer = plugin_from_config({"type": "global_m", "num_heads": 4, "axial_strategy": strategy}, 16)
    assert isinstance(layer, GlobalM) and layer.axial_strategy == strategy
    x = torch.randn(2, 16, 5, 7)
    assert layer(x).shape == x.shape


def test_global_m_row_on_transposed_input_equals_column():
    row = build_plugin("global_m", 16, num_heads=4, axial_strategy="row").eval()
    col = build_plugin("global_m", 16, num_heads=4, axial_strategy="column").eval()
    # same weights with every spatial kernel transposed, so that only the attention axis differs
    col.load_state_dict(
        {k: (v.transpose(-1, -2) if v.dim() == 4 else v) for k, v in row.state_dict().items()}
    )
    x = torch.randn(2, 16, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(row(x.transpose(-1, -2)).transpose(-1, -2), col(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(row(x), col(x), atol=1e-3)


def test_dtm_through_the_registry():
    dtm = build_plugin("dtm", [8, 16], dim=16, num_classes=3)
    assert dtm([torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4)]).shape == (2, 3)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"unknown plug-in 'diaa'. Did you mean dia.*Choose one of:.*global_m"
    ):
        build_plugin("diaa", 8)
    with pytest.raises(ValueError, match=r"'channel_exchange' builds interaction, not block"):
        build_plugin("channel_exchange", 8, kind="block")
    with pytest.raises(ValueError, match="unknown plug-in kind"):
        list_plugins("pair")


def test_option_errors_are_named():
    with pytest.raises(ValueError, match="global_m embed_dim 32 does not match the place's 16 channels"):
        build_plugin("global_m", 16, embed_dim=32)
    with pytest.raises(ValueError, match="needs the channels"):
        build_plugin("global_m")
    with pytest.raises(ValueError, match="output='features' is fixed to 'mask'"):
        build_plugin("dia", 8, kind="gate", output="features")
    with pytest.raises(ValueError, match="bad options for plug-in 'dia'"):
        build_plugin("dia", 8, heads=3)
    with pytest.raises(ValueError, match="a block entry must be None, a name, a dict"):
        plugin_from_config(3, 8)


def test_lazy_registration_by_import_path(registry):
    register_plugin("later", "geomamba.layers.not_written_yet:Later")
    assert "later" not in list_plugins() and "later" in list_plugins(available_only=False)
    with pytest.raises(ImportError, match=r"geomamba\.layers\.not_written_yet:Later"):
        build_plugin("later", 8)
    register_plugin("dia_again", "geomamba.layers.dia:DeformableInteractiveAttention", channels_arg=None)
    assert isinstance(build_plugin("dia_again", 8), DeformableInteractiveAttention)
    with pytest.raises(ValueError, match="already registered"):
        register_plugin("dia", "geomamba.layers.dia:Other")


def test_decorator_registration(registry):
    @register_plugin("doubler", channels_arg=None)
    class Doubler(nn.Module):
        """Doubles its input."""

        def forward(self, x):
            return 2 * x

    assert Doubler.__name__ == "Doubler"  # the decorator returns the class
    assert registry["doubler"].doc == "Doubles its input."
    torch.testing.assert_close(build_plugin("doubler")(torch.ones(2)), torch.full((2,), 2.0))


@pytest.mark.skipif(not HAS_ATTENTION, reason="geomamba.layers.attention has not landed yet")
@pytest.mark.parametrize("name", ["channel_attention", "spatial_attention", "se"])
def test_attention_plugins_once_the_module_exists(name):
    assert name in list_plugins("block") and name in list_plugins("gate")
    x = torch.randn(2, 16, 5, 7)
    assert build_plugin(name, 16)(x).shape == x.shape
    gate = build_plugin(name, 16, kind="gate")(x)
    assert (x * gate).shape == x.shape and gate.shape != x.shape


# ------------------------------------------------------------------------------------------ places


def test_changer_places_and_apply():
    model = create_model("changer_ex_tiny").eval()
    places = list_places(model)
    assert places["encoder.stage2.interaction"] == PluginPlace(
        "interactions.1", "interaction", 16, doc="interaction of the dates after stage 2"
    )
    assert places["encoder.stage4.output"].kind == "block" and places["encoder.stage4.output"].channels == 64
    apply_plugins(
        model,
        {
            "encoder.stage2.interaction": {"type": "global_m", "num_heads": 4, "axial_strategy": "hybrid"},
            "encoder.stage3.output": "dia",
            "encoder.stage4.interaction": "none",
        },
    )
    assert isinstance(model.interactions[1], SiameseLayer) and model.interactions[1].layer.embed_dim == 16
    assert isinstance(model.stage_outputs[2], DeformableInteractiveAttention)
    assert type(model.interactions[3]).__name__ == "_PairIdentity"
    with torch.no_grad():
        assert model(torch.randn(1, 2, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_changer_plugins_option_changes_the_output():
    torch.manual_seed(0)
    plain = create_model("changer_ex_tiny").eval()
    torch.manual_seed(0)
    with_dia = create_model("changer_ex_tiny", plugins={"encoder.stage1.output": "dia"}).eval()
    assert isinstance(with_dia.stage_outputs[0], DeformableInteractiveAttention)
    # the plug-in adds parameters but leaves every existing key in place (pretrained files still load)
    assert set(plain.state_dict()) < set(with_dia.state_dict())
    x = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(plain(x), with_dia(x))


def test_unknown_place_lists_the_valid_ones():
    model = create_model("changer_ex_tiny")
    with pytest.raises(
        ValueError, match=r"no plug-in place 'decoder.spatial_attention'.*encoder.stage1.interaction"
    ):
        apply_plugins(model, {"decoder.spatial_attention": "dia"})
    with pytest.raises(ValueError, match=r"Did you mean encoder.stage2.interaction"):
        apply_plugins(model, {"encoder.stage2.interactions": "dia"})
    with pytest.raises(
        ValueError, match=r"place 'encoder.stage2.interaction': unknown interaction layer 'dai'"
    ):
        apply_plugins(model, {"encoder.stage2.interaction": "dai"})
    with pytest.raises(ValueError, match=r"'dtm' builds depth_sequence, not block"):
        apply_plugins(model, {"encoder.stage1.output": "dtm"})
    with pytest.raises(ValueError, match="declares no plugin_places"):
        apply_plugins(nn.Sequential(nn.Conv2d(3, 3, 1)), {"0": "dia"})


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU())

    def plugin_places(self):
        return {"body.conv": PluginPlace("body.0", "block", 4, mode="append")}

    def forward(self, x):
        return self.body(x)


def test_append_place_inserts_after_the_module():
    model = _Toy()
    conv = model.body[0]
    apply_plugins(model, {"body.conv": {"type": "dia", "distortion": True}})
    assert isinstance(model.body[0], nn.Sequential) and model.body[0][0] is conv
    assert isinstance(model.body[0][1], DeformableInteractiveAttention) and model.body[0][1].distortion
    assert model(torch.randn(1, 4, 5, 5)).shape == (1, 4, 5, 5)
    apply_plugins(model, {"body.conv": "none"})  # nothing to insert
    assert isinstance(model.body[0][1], DeformableInteractiveAttention)


def test_submodule_helpers_name_the_broken_path():
    model = _Toy()
    assert get_submodule(model, "body.1").__class__ is nn.ReLU
    old = replace_module(model, "body.1", nn.GELU())
    assert isinstance(old, nn.ReLU) and isinstance(model.body[1], nn.GELU)
    with pytest.raises(ValueError, match=r"no submodule 'head' in _Toy.*children: body"):
        get_submodule(model, "head.conv")
    with pytest.raises(ValueError, match=r"no submodule '5' in body.*children: 0, 1"):
        replace_module(model, "body.5", nn.Identity())


def test_exchange_via_registry_keeps_its_options():
    layer = build_plugin("channel_exchange", 16, kind="interaction", p=0.25)
    assert isinstance(layer, ChannelExchange) and layer.period == 4
