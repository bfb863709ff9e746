"""CMDBNet: registry, output contract, backward, ablation switches, checkpointing, pretrained loading.

The Mamba branch runs the (interim, slow) selective scan: inputs stay at 32x32 with the tiny variant.
"""

from __future__ import annotations

import pytest
import torch

from geomamba.models import create_model, list_models
from geomamba.models.backbones.resnet import ResNetBackbone
from geomamba.models.pretrained import PretrainedWeightsError

VARIANTS = ["cmdbnet", "cmdbnet_tiny", "cmdbnet_cnn_only", "cmdbnet_mamba_only", "cmdbnet_no_fusion"]
VARIANTS += ["cmdbnet_no_boundary"]
TINY = dict(
    cnn_layers=(1, 1, 1, 1),
    cnn_channels=(8, 16, 32, 64),
    mamba_depths=(1, 1, 1, 1),
    decoder_dim=16,
    boundary_dim=8,
    aux_dim=8,
    fusion_reduction=4,
)


def _grads_ok(model):
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_variants_are_registered_for_segmentation():
    assert set(VARIANTS) <= set(list_models(task="segmentation"))


def test_tiny_training_outputs_and_backward():
    model = create_model("cmdbnet_tiny", num_classes=6).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert set(out) == {"out", "aux", "boundary"}
    assert out["out"].shape == (2, 6, 32, 32) and out["boundary"].shape == (2, 1, 32, 32)
    assert [a.shape for a in out["aux"]] == [(2, 6, 32, 32)] * 2  # one per branch
    loss = out["out"].logsumexp(1).mean() + sum(a.logsumexp(1).mean() for a in out["aux"])
    (loss + out["boundary"].mean()).backward()
    _grads_ok(model)


def test_eval_returns_tensor_for_odd_sizes_and_band_counts():
    for bands in (1, 5):
        model = create_model("cmdbnet_tiny", in_channels=bands, num_classes=7).eval()
        with torch.no_grad():
            out = model(torch.randn(1, bands, 29, 35))
        assert isinstance(out, torch.Tensor) and out.shape == (1, 7, 29, 35)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("overrides", "keys", "n_aux"),
    [
        ({"branches": "cnn"}, {"out", "aux", "boundary"}, 1),
        ({"branches": "mamba", "boundary": False}, {"out", "aux"}, 1),
        ({"fusion": "sum", "boundary": False}, {"out", "aux"}, 2),
        ({"fusion": "concat"}, {"out", "aux", "boundary"}, 2),
        ({"fusion": "attention"}, {"out", "aux", "boundary"}, 2),
        ({"fusion": "gating", "aux_heads": False}, {"out", "boundary"}, 0),
    ],
)
def test_ablation_switches_build_run_and_train(overrides, keys, n_aux):
    model = create_model("cmdbnet_tiny", in_channels=4, **overrides).train()
    out = model(torch.randn(2, 4, 32, 32))
    assert set(out) == keys and len(out.get("aux", [])) == n_aux
    loss = out["out"].logsumexp(1).mean() + sum(a.mean() for a in out.get("aux", []))
    (loss + out["boundary"].mean() if "boundary" in out else loss).backward()
    _grads_ok(model)


def test_no_auxiliary_outputs_give_a_tensor_in_training():
    model = create_model("cmdbnet_tiny", branches="cnn", boundary=False, aux_heads=False).train()
    assert isinstance(model(torch.randn(2, 3, 32, 32)), torch.Tensor)


def test_registered_ablation_rows_are_the_documented_switches():
    def parts(name):
        m = create_model(name, **TINY)
        return m.cnn is not None, m.mamba is not None, m.fusion_kind, m.boundary is not None

    assert parts("cmdbnet_cnn_only") == (True, False, "cross_gated", False)
    assert parts("cmdbnet_mamba_only") == (False, True, "cross_gated", False)
    assert parts("cmdbnet_no_fusion") == (True, True, "sum", False)
    assert parts("cmdbnet_no_boundary") == (True, True, "cross_gated", False)
    assert parts("cmdbnet") == (True, True, "cross_gated", True)

    def count(name):
        return sum(p.numel() for p in create_model(name, **TINY).parameters())

    assert count("cmdbnet") > count("cmdbnet_no_boundary") > count("cmdbnet_no_fusion")
    assert count("cmdbnet_no_fusion") > max(count("cmdbnet_cnn_only"), count("cmdbnet_mamba_only"))


def test_gradient_checkpointing_gives_the_same_gradients_and_statistics():
    base = create_model("cmdbnet_tiny", drop_path_rate=0.2).train()
    ckpt = create_model(
        "cmdbnet_tiny", drop_path_rate=0.2, checkpoint_cnn=True, checkpoint_mamba=True
    ).train()
    ckpt.load_state_dict(base.state_dict())
    x = torch.randn(2, 3, 32, 32)
    grads, buffers = [], []
    for model in (base, ckpt):
        torch.manual_seed(3)  # same dropout / drop-path masks
        out = model(x)
        (out["out"].square().mean() + out["boundary"].mean() + sum(a.mean() for a in out["aux"])).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
        buffers.append(dict(model.named_buffers()))
    for name, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][name], msg=name)
    for name, b in buffers[0].items():
        torch.testing.assert_close(b, buffers[1][name], msg=name)


def test_full_size_parameters_near_the_seed():
    # seed 002: 34.8 M; ours 34.60 M (34.30 M without the two training-only auxiliary heads)
    full = create_model("cmdbnet")
    n = sum(p.numel() for p in full.parameters())
    assert abs(n - 34.8e6) <= 0.02 * 34.8e6, n
    assert sum(p.numel() for p in full.cnn.parameters()) == 21_284_672  # torchvision ResNet-34 without fc
    low = create_model("cmdbnet", low_memory=True)
    assert low.mamba.depths == (2, 2, 4, 2) and full.mamba.depths == (2, 2, 6, 2)
    stage3 = sum(p.numel() for p in full.mamba.layers[2].blocks[0].parameters())
    assert n - sum(p.numel() for p in low.parameters()) == 2 * stage3


def test_pretrained_resnet_file_loads_into_the_cnn_branch(tmp_path):
    src = ResNetBackbone(depth=34, layers=(1, 1, 1, 1), channels=(8, 16, 32, 64))
    state = {**src.state_dict(), "fc.weight": torch.zeros(10, 64), "fc.bias": torch.zeros(10)}
    path = tmp_path / "r34.pth"
    torch.save(state, path)
    model = create_model("cmdbnet", pretrained=path, in_channels=3, **TINY)
    torch.testing.assert_close(model.cnn.layer3[0].conv1.weight, src.layer3[0].conv1.weight)
    four = create_model("cmdbnet_cnn_only", pretrained=path, in_channels=4, **TINY)  # first conv adapted
    assert four.cnn.conv1.weight.shape[1] == 4
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4")}, path)
    with pytest.raises(PretrainedWeightsError, match="missing keys"):
        create_model("cmdbnet", pretrained=path, **TINY)
    with pytest.raises(ValueError, match="no CNN branch"):
        create_model("cmdbnet", pretrained=path, branches="mamba", **TINY)


def test_bad_options_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="branches must be one of"):
        create_model("cmdbnet_tiny", branches="both_ways")
    with pytest.raises(ValueError, match="fusion must be one of"):
        create_model("cmdbnet_tiny", fusion="add")
    with pytest.raises(ValueError, match="needs both branches"):
        create_model("cmdbnet_tiny", branches="cnn", fusion="sum")
    with pytest.raises(ValueError, match="give one or the other"):
        create_model("cmdbnet_tiny", low_memory=True)  # the tiny depths (1, 1, 1, 1) conflict
    with pytest.raises(ValueError, match="same widths per level"):
        create_model("cmdbnet_tiny", mamba_dims=(8, 16, 32, 32))
    model = create_model("cmdbnet_tiny", in_channels=4)
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\), got \(1, 3, 32, 32\)"):
        model(torch.randn(1, 3, 32, 32))
