"""The flagship network with the tiny variant (32x32 inputs; the interim scan is a slow loop)."""

import itertools

import pytest
import torch

import geomamba
from geomamba.layers.derivative import difference_of_gaussians
from geomamba.layers.ss2d import SS2DCore
from geomamba.models.change._subtask_ablation import (
    CORES,
    DECODER_VARIANTS,
    DIFFERENCE_VARIANTS,
    ENCODER_VARIANTS,
)
from geomamba.models.change.subtask_mamba import SubtaskMamba


def _n(m):
    return sum(p.numel() for p in m.parameters())


def _check_grads(model):
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing}"


def test_registered_variants():
    names = geomamba.list_models("subtask_mamba*")
    assert names == ["subtask_mamba", "subtask_mamba_base", "subtask_mamba_small", "subtask_mamba_tiny"]
    m = geomamba.create_model("subtask_mamba_tiny", in_channels=4, version="de_ca")
    assert isinstance(m, SubtaskMamba) and m.in_channels == 4 and m.version.endswith("de_ca-di_so_fo_m")
    assert m.dims == (8, 16, 32) and m.depths == (1, 1, 1)
    assert geomamba.create_model("subtask_mamba", depths=(1, 1, 1)).dims == (64, 128, 256)


def test_default_forward_backward_and_deep_supervision():
    model = geomamba.create_model("subtask_mamba_tiny", deep_supervision=True).train()
    x = torch.randn(2, 2, 3, 32, 32)
    out = model(x)
    assert set(out) == {"out", "aux"} and out["out"].shape == (2, 2, 32, 32)
    assert [a.shape for a in out["aux"]] == [(2, 2, 32, 32), (2, 2, 32, 32)]
    (out["out"].mean() + sum(a.mean() for a in out["aux"])).backward()
    _check_grads(model)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 2, 32, 32)  # eval: plain logits


# Every combination of the ablation switches (3 x 4 x 5 x 3 = 180): build, forward, backward, every
# parameter gets a gradient. One level at 8x8 input keeps it to a few seconds; every ablated module
# lives inside a level, so one level holds every combination of them.
ALL_COMBINATIONS = list(itertools.product(ENCODER_VARIANTS, DECODER_VARIANTS, DIFFERENCE_VARIANTS, CORES))


@pytest.mark.slow
def test_every_ablation_combination_trains():
    x = torch.randn(1, 2, 3, 8, 8)
    for enc, dec, dif, core in ALL_COMBINATIONS:
        model = SubtaskMamba(
            dims=(4,), depths=(1,), encoder=enc, decoder=dec, difference=dif, core=core, attention_reduction=4
        )
        out = model(x)
        assert out.shape == (1, 2, 8, 8), (enc, dec, dif, core)
        out.square().mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"{enc}-{dec}-{dif} core={core}: no gradient for {missing}"


REMOVALS = ["en_sicnn_simlp", "de_ca", "de_sa", "de", "di_so_m", "di_fo_m", "di_m", "di_so_fo"]


def test_each_removal_reduces_parameters():
    default = _n(geomamba.create_model("subtask_mamba_tiny"))
    for version in REMOVALS:
        assert _n(geomamba.create_model("subtask_mamba_tiny", version=version)) < default, version
    # the independent-branch encoder and the non-fused cores are alternatives, not removals
    assert _n(geomamba.create_model("subtask_mamba_tiny", version="en_incnn_inmlp")) > default
    assert _n(geomamba.create_model("subtask_mamba_tiny", core="shared")) < default
    # removing every part of one module removes more than removing one of its parts
    assert _n(geomamba.create_model("subtask_mamba_tiny", version="de")) < _n(
        geomamba.create_model("subtask_mamba_tiny", version="de_ca")
    )


@pytest.mark.parametrize("bands", [1, 3, 4, 13])
def test_any_band_count(bands):
    model = geomamba.create_model("subtask_mamba_tiny", in_channels=bands).eval()
    a, b = torch.randn(1, bands, 32, 32), torch.randn(1, bands, 32, 32)
    with torch.no_grad():
        out = model(torch.stack([a, b], dim=1))
        assert out.shape == (1, 2, 32, 32)
        torch.testing.assert_close(model(a, b), out)  # two tensors == stacked input
    with pytest.raises(ValueError, match=f"in_channels={bands}"):
        model(torch.randn(1, 2, bands + 1, 32, 32))


def test_deterministic_with_a_seed():
    x = torch.randn(1, 2, 3, 32, 32)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = geomamba.create_model("subtask_mamba_tiny").eval()
        with torch.no_grad():
            outs.append(model(x))
    assert torch.equal(outs[0], outs[1])
    torch.manual_seed(7)
    with torch.no_grad():
        assert not torch.equal(geomamba.create_model("subtask_mamba_tiny").eval()(x), outs[0])


def test_input_size_check_and_padding():
    model = geomamba.create_model("subtask_mamba_tiny").eval()
    x = torch.randn(1, 2, 3, 40, 24)
    with pytest.raises(ValueError, match=r"\(40, 24\) must be multiples of 16.*pad_input=True"):
        model(x)
    padded = geomamba.create_model("subtask_mamba_tiny", pad_input=True).eval()
    with torch.no_grad():
        assert padded(x).shape == (1, 2, 40, 24)
    with pytest.raises(ValueError, match="bitemporal"):
        model(torch.randn(1, 3, 32, 32))


def test_options_reach_the_modules():
    model = geomamba.create_model(
        "subtask_mamba_tiny",
        scan_backend="ref",
        edge_trainable=False,
        dog_sigmas=(0.6, 1.2),
        fadc_adakern=True,
        fadc_freq_select=True,
        fadc_sampler="composed",
        num_classes=3,
    )
    cores = [m for m in model.modules() if isinstance(m, SS2DCore)]
    assert cores and all(c.backend == "ref" for c in cores)
    edges = model.differences[0].edges
    assert not any(True for _ in edges.parameters())  # fixed kernels are buffers
    torch.testing.assert_close(edges.second.weight[0, 0], difference_of_gaussians(0.6, 1.2))
    fadc = model.differences[0].mamba.fadc
    assert fadc.adakern is not None and fadc.freq_select is not None
    assert {d.mamba.fadc.sampler for d in model.differences} == {"composed"}
    assert model.head.classifier.out_channels == 3
    trainable_edges = geomamba.create_model(
        "subtask_mamba_tiny", num_classes=3, fadc_adakern=True, fadc_freq_select=True
    )
    assert _n(model) < _n(trainable_edges)
