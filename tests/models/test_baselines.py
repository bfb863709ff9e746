"""Comparison baselines: registry, output contract, backward, odd sizes, band counts."""

from __future__ import annotations

import pytest
import torch

from geomamba.models import as_logits, create_model, list_models

# models small enough to run forward + backward at 32x32 on a CPU in well under a second
SMALL = [
    "fc_ef",
    "fc_siam_conc",
    "fc_siam_diff",
    "snunet_tiny",
    "bit_tiny",
    "changeformer_tiny",
    "changer_ex_tiny",
    "changer_ex_globalm_tiny",
    "mamba_bcd_tiny",
]
REGISTERED = [
    *SMALL,
    "snunet",
    "snunet_c16",
    "snunet_c32",
    "bit",
    "changeformer",
    "changer_ex",
    "changer_ex_globalm",
    "mamba_bcd",
]


def test_every_baseline_is_registered_for_change():
    names = set(list_models(task="change"))
    assert set(REGISTERED) <= names, sorted(set(REGISTERED) - names)


@pytest.mark.parametrize("name", SMALL)
def test_output_shape_and_backward(name):
    model = create_model(name, in_channels=4)
    x = torch.randn(2, 2, 4, 32, 32)
    out = as_logits(model(x))
    assert out.shape == (2, 2, 32, 32)
    out.logsumexp(dim=1).mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", [n for n in SMALL if n != "mamba_bcd_tiny"])
def test_pair_input_odd_size_and_one_band(name):
    model = create_model(name, in_channels=1).eval()
    a, b = torch.randn(1, 1, 36, 44), torch.randn(1, 1, 36, 44)
    with torch.no_grad():
        out_pair = model(a, b)
        out_stack = model(torch.stack([a, b], dim=1))
    assert out_pair.shape == (1, 2, 36, 44)
    torch.testing.assert_close(out_pair, out_stack)


def test_mamba_bcd_tiny_odd_size():
    model = create_model("mamba_bcd_tiny", in_channels=3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 2, 3, 20, 28))
    assert out.shape == (1, 2, 20, 28)


def test_dates_matter_and_identical_dates_are_symmetric_for_diff_models():
    model = create_model("fc_siam_diff").eval()
    a, b = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model(a, b), model(a, a))


def test_changeformer_deep_supervision_returns_aux_in_training_only():
    model = create_model("changeformer_tiny", deep_supervision=True)
    out = model(torch.randn(2, 2, 3, 32, 32))
    assert set(out) == {"out", "aux"} and len(out["aux"]) == 4
    assert all(t.shape == (2, 2, 32, 32) for t in out["aux"])
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 2, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_changer_interactions_from_config_dicts():
    cfg = (
        "none",
        {"type": "spatial_exchange", "p": 0.5},
        {
            "type": "global_m",
            "num_heads": 2,
            "axial_strategy": "hybrid",
            "local_branch": True,
            "dates": "first",
        },
        {"type": "channel_exchange", "p": 1 / 4},
    )
    model = create_model("changer_ex_tiny", interaction_cfg=cfg).eval()
    kinds = [type(m).__name__ for m in model.interactions]
    assert kinds == ["_PairIdentity", "SpatialExchange", "SiameseLayer", "ChannelExchange"]
    assert model.interactions[2].layer.embed_dim == 32 and model.interactions[2].dates == "first"
    with torch.no_grad():
        assert model(torch.randn(1, 2, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_changer_seed_001_configuration():
    model = create_model("changer_ex_globalm")
    gm = model.interactions[1].layer
    assert (gm.embed_dim, gm.num_heads, gm.axial_strategy) == (128, 32, "row")
    assert [type(m).__name__ for m in model.interactions[2:]] == ["ChannelExchange", "ChannelExchange"]
    assert model.interactions[2].p == 0.5


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ((None, None, None), "one entry per ResNet stage"),
        ((None, "warp_exchange", None, None), "unknown interaction layer 'warp_exchange'"),
        ((None, {"type": "global_m", "embed_dim": 64}, None, None), "does not match the stage's 16"),
        ((None, 3, None, None), "interaction entry"),
    ],
)
def test_changer_bad_interaction_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        create_model("changer_ex_tiny", interaction_cfg=cfg)


def test_bad_bitemporal_input_is_named():
    model = create_model("fc_ef")
    with pytest.raises(ValueError, match=r"\(B, 2, C, H, W\)"):
        model(torch.randn(1, 3, 32, 32))
