"""The CPU inference path of the flagship (image-layout SS2D forward, delta bias inside the product,
FADC taps by grid_sample) against the composed reference path and torchvision's deform_conv2d."""

import dataclasses

import torch

import geomamba
from geomamba.ops.selective_scan import _backends


def test_tiny_flagship_inference_matches_composed_reference(monkeypatch):
    torch.manual_seed(0)
    model = geomamba.create_model("subtask_mamba_tiny").eval()
    with torch.no_grad():  # a trained-looking FADC: dilations vary per pixel
        for m in model.modules():
            if hasattr(m, "dilation_predictor"):
                m.dilation_predictor.weight.normal_(0, 0.3)
    x = torch.randn(1, 2, 3, 32, 32)
    with torch.inference_mode():
        fast = model(x)
    ref = _backends._BACKENDS["ref"]
    composed = dataclasses.replace(ref, ss2d_fwd=None, ss2d_bwd=None, ss2d_strided=False)
    monkeypatch.setitem(_backends._BACKENDS, "ref", composed)
    with torch.enable_grad():  # grad mode: torchvision's deform_conv2d, composed SS2D scan
        expected = model(x)
    torch.testing.assert_close(fast, expected.detach(), rtol=1e-4, atol=1e-4)
