"""Pretrained backbone weights from a local file: good files load, wrong or partial files are errors."""

from __future__ import annotations

import logging

import pytest
import torch
from timm.models.resnet import BasicBlock, ResNet

from geomamba.models import create_model
from geomamba.models.backbones.mit import MixTransformer
from geomamba.models.backbones.resnet import ResNetBackbone
from geomamba.models.pretrained import PretrainedWeightsError, load_backbone_weights, load_pretrained

TINY = {"layers": (1, 1, 1, 1), "channels": (8, 16, 32, 64)}


def _imagenet_like_file(tmp_path, in_chans: int = 3, name: str = "r.pth", wrap: str | None = None):
    """A full classifier ResNet state dict (with its ``fc``), as an ImageNet file would hold."""
    net = ResNet(block=BasicBlock, layers=TINY["layers"], channels=TINY["channels"], in_chans=in_chans)
    state = net.state_dict()
    path = tmp_path / name
    torch.save({wrap: state, "epoch": 3} if wrap else state, path)
    return path, state


def test_good_file_loads_and_ignores_classifier(tmp_path):
    path, state = _imagenet_like_file(tmp_path)
    backbone = ResNetBackbone(**TINY)
    report = load_backbone_weights(backbone, path)
    assert report.loaded > 0 and "fc.weight" in report.ignored
    torch.testing.assert_close(backbone.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])
    torch.testing.assert_close(backbone.bn1.running_var, state["bn1.running_var"])


def test_wrapped_and_dataparallel_files_load(tmp_path):
    path, state = _imagenet_like_file(tmp_path, wrap="state_dict")
    raw = torch.load(path, weights_only=True)
    raw["state_dict"] = {f"module.{k}": v for k, v in raw["state_dict"].items()}
    torch.save(raw, path)
    backbone = ResNetBackbone(**TINY)
    load_backbone_weights(backbone, path)
    torch.testing.assert_close(backbone.conv1.weight, state["conv1.weight"])


def test_safetensors_file_loads(tmp_path):
    from safetensors.torch import save_file

    _, state = _imagenet_like_file(tmp_path)
    path = tmp_path / "r.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    backbone = ResNetBackbone(**TINY)
    load_backbone_weights(backbone, path)
    torch.testing.assert_close(backbone.layer4[0].conv2.weight, state["layer4.0.conv2.weight"])


def test_three_band_file_adapts_to_four_bands(tmp_path):
    path, state = _imagenet_like_file(tmp_path)
    backbone = ResNetBackbone(in_channels=4, **TINY)
    report = load_backbone_weights(backbone, path)
    assert report.adapted == ["conv1.weight"]
    assert backbone.conv1.weight.shape[1] == 4
    # timm repeats the RGB kernels and rescales by 3/4
    torch.testing.assert_close(backbone.conv1.weight[:, :3], state["conv1.weight"] * 0.75)


def test_partial_file_names_the_missing_keys(tmp_path):
    path, state = _imagenet_like_file(tmp_path)
    del state["layer3.0.conv2.weight"], state["bn1.bias"]
    torch.save(state, path)
    with pytest.raises(PretrainedWeightsError, match=r"2 missing keys.*bn1\.bias, layer3\.0\.conv2\.weight"):
        load_backbone_weights(ResNetBackbone(**TINY), path)


def test_wrong_file_names_unexpected_keys_and_shapes(tmp_path):
    wrong = ResNet(block=BasicBlock, layers=(1, 1, 1, 1), channels=(8, 16, 32, 128))
    state = wrong.state_dict()
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(PretrainedWeightsError) as info:
        load_backbone_weights(ResNetBackbone(**TINY), path)
    msg = str(info.value)
    assert "extra.weight" in msg and "unexpected" in msg
    assert "layer4.0.conv1.weight: file (128, 32, 3, 3) vs model (64, 32, 3, 3)" in msg
    assert str(path) in msg


def test_a_resnet_file_does_not_fit_a_transformer(tmp_path):
    path, _ = _imagenet_like_file(tmp_path)
    with pytest.raises(PretrainedWeightsError, match=r"missing keys.*block1"):
        load_backbone_weights(MixTransformer(embed_dims=(8, 16, 32, 64), num_heads=(1, 1, 1, 1)), path)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_backbone_weights(ResNetBackbone(**TINY), tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match=r"cannot read.*bad\.pth"):
        load_backbone_weights(ResNetBackbone(**TINY), bad)
    notdict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], notdict)
    with pytest.raises(PretrainedWeightsError, match="not a state dict"):
        load_backbone_weights(ResNetBackbone(**TINY), notdict)


def test_no_file_logs_random_initialisation(caplog):
    with caplog.at_level(logging.WARNING, logger="geomamba.models.pretrained"):
        report = load_pretrained(ResNetBackbone(**TINY), None, what="test backbone")
    assert report.loaded == 0
    assert (
        "test backbone: no pretrained weights file given; starting from random initialisation" in caplog.text
    )


def test_key_map_renames_file_keys(tmp_path):
    _, state = _imagenet_like_file(tmp_path)
    path = tmp_path / "prefixed.pth"
    torch.save({f"encoder.{k}": v for k, v in state.items()}, path)
    backbone = ResNetBackbone(**TINY)
    load_pretrained(backbone, path, key_map={"encoder.": ""}, ignore=("fc.*",))
    torch.testing.assert_close(backbone.conv1.weight, state["conv1.weight"])


def test_factory_loads_a_torchvision_resnet18_file(tmp_path):
    import torchvision

    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    model = create_model("bit", pretrained=str(path))  # BIT keeps layer1-3: layer4 and fc are ignored
    torch.testing.assert_close(model.backbone.layer3[1].conv2.weight, tv.layer3[1].conv2.weight)
