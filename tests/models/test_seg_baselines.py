"""Segmentation baselines U-Net and DeepLabV3+: registry, shapes, backward, band counts, sizes."""

from __future__ import annotations

import pytest
import torch

from geomamba.models import create_model, list_models
from geomamba.models.backbones.resnet import ResNetBackbone

SMALL = {
    "unet": dict(base_channels=4),
    "deeplabv3plus": dict(
        backbone_depth=18,
        resnet_layers=(1, 1, 1, 1),
        resnet_channels=(8, 16, 32, 64),
        aspp_channels=16,
        low_level_channels=8,
    ),
}


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registered_for_segmentation():
    assert {"unet", "deeplabv3plus"} <= set(list_models(task="segmentation"))


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("bands", [1, 4])
def test_shapes_backward_every_parameter(name, bands):
    model = create_model(name, in_channels=bands, num_classes=7, **SMALL[name]).train()
    out = model(torch.randn(2, bands, 37, 45))  # not a multiple of 16
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7, 37, 45)
    out.logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_wrong_band_count_is_named(name):
    model = create_model(name, in_channels=4, **SMALL[name])
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\), got \(1, 3, 32, 32\)"):
        model(torch.randn(1, 3, 32, 32))


def test_full_size_parameter_counts():
    assert abs(_count(create_model("unet")) - 31.04e6) <= 0.01e6  # Ronneberger et al.: 31.0 M
    deeplab = create_model("deeplabv3plus")
    assert deeplab.backbone.strides[-1] == 16 and deeplab.backbone.out_channels == (256, 512, 1024, 2048)
    n, n_plain = _count(deeplab), _count(create_model("deeplabv3plus", separable=False))
    assert abs(n - 26.68e6) <= 0.01e6 and n_plain > n + 10e6  # separable ASPP saves ~13.7 M


def test_deeplab_output_stride_8_doubles_the_rates_and_keeps_the_size():
    model = create_model("deeplabv3plus", output_stride=8, **SMALL["deeplabv3plus"]).eval()
    rates = [b.conv_dw.dilation[0] for b in model.aspp.branches[1:]]
    assert rates == [12, 24, 36]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 40, 40)).shape == (1, 6, 40, 40)
    with pytest.raises(ValueError, match="output_stride must be 8 or 16"):
        create_model("deeplabv3plus", output_stride=32)


def test_deeplab_pretrained_backbone_file(tmp_path):
    kw = SMALL["deeplabv3plus"]
    src = ResNetBackbone(
        depth=18, layers=kw["resnet_layers"], channels=kw["resnet_channels"], output_stride=16
    )
    torch.save({"state_dict": {**src.state_dict(), "fc.weight": torch.zeros(3, 64)}}, tmp_path / "r18.pth")
    model = create_model("deeplabv3plus", pretrained=tmp_path / "r18.pth", **kw)
    torch.testing.assert_close(model.backbone.layer4[0].conv2.weight, src.layer4[0].conv2.weight)


def test_unet_depth_option():
    shallow = create_model("unet", base_channels=4, depth=2).eval()
    assert len(shallow.encoder) == 3 and len(shallow.decoder) == 2
    with torch.no_grad():
        assert shallow(torch.randn(1, 3, 13, 17)).shape == (1, 6, 13, 17)
    assert _count(shallow) < _count(create_model("unet", base_channels=4))
