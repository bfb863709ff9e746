import copy

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from geomamba.layers.fadc import FrequencyAdaptiveDilatedConv, FrequencySelection, dilated_tap_conv


def test_dilation_one_equals_plain_conv():
    conv = FrequencyAdaptiveDilatedConv(4, 6, bias=True)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 4, 7, 9)
    expected = F.conv2d(x, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(conv(x, dilation=1.0), expected, atol=1e-5, rtol=1e-5)
    # the predicted path with the predictor forced to D = 1 is the same plain conv
    torch.nn.init.constant_(conv.dilation_predictor.bias, -60.0)
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)


def test_integer_dilation_equals_dilated_conv():
    conv = FrequencyAdaptiveDilatedConv(3, 5)
    x = torch.randn(1, 3, 8, 8)
    expected = F.conv2d(x, conv.weight, padding=2, dilation=2)
    torch.testing.assert_close(conv(x, dilation=2.0), expected, atol=1e-5, rtol=1e-5)


def test_predicted_dilation_range_and_gradient():
    conv = FrequencyAdaptiveDilatedConv(4, 4, max_dilation=3.0, init_dilation=2.0)
    x = torch.randn(2, 4, 6, 6)
    d = conv.predict_dilation(x)
    assert d.shape == (2, 1, 6, 6)
    torch.testing.assert_close(d, torch.full_like(d, 2.0))
    torch.nn.init.normal_(conv.dilation_predictor.weight, std=5.0)
    d = conv.predict_dilation(x)
    assert torch.all((d >= 1.0) & (d <= 3.0)) and d.std() > 0
    conv(x).square().sum().backward()
    assert conv.dilation_predictor.weight.grad.abs().sum() > 0


def test_adakern_starts_as_plain_fadc_and_learns_scales():
    torch.manual_seed(0)
    plain = FrequencyAdaptiveDilatedConv(4, 6)
    ada = FrequencyAdaptiveDilatedConv(4, 6, adakern=True)
    ada.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(ada(x), plain(x), atol=1e-5, rtol=1e-5)
    torch.nn.init.normal_(ada.adakern.bias)
    assert not torch.allclose(ada(x), plain(x), atol=1e-3)


def test_frequency_selection_bands_sum_to_input_and_identity_at_init():
    fs = FrequencySelection(3, cutoffs=(2, 4))
    x = torch.randn(2, 3, 16, 12)
    bands = fs.bands(x)
    assert len(bands) == 3
    torch.testing.assert_close(sum(bands), x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fs(x), x, atol=1e-5, rtol=1e-5)
    # the lowest band of a constant map is the map itself
    const = torch.full((1, 3, 8, 8), 2.0)
    torch.testing.assert_close(fs.bands(const)[0], const, atol=1e-5, rtol=1e-5)
    conv = FrequencyAdaptiveDilatedConv(3, 3, freq_select=True)
    assert conv(x).shape == (2, 3, 16, 12)


@pytest.mark.parametrize("adakern", [False, True])
@pytest.mark.parametrize(("h", "w"), [(9, 7), (1, 5)])
def test_cpu_inference_sampler_matches_deform_conv(adakern, h, w):
    """Inference on CPU (grid_sample + matmul) gives deform_conv2d's output, fractional and integer
    dilations, taps falling outside the map included."""
    torch.manual_seed(0)
    m = FrequencyAdaptiveDilatedConv(6, 5, max_dilation=4.0, adakern=adakern, bias=True).eval()
    with torch.no_grad():
        m.dilation_predictor.weight.normal_(0, 0.5)
        if adakern:
            m.adakern.weight.normal_(0, 0.5)
    x = torch.randn(2, 6, h, w)
    for dilation in (None, 2.0, torch.rand(2, 1, h, w) * 3 + 1):
        expected = m(x, dilation=dilation)  # grad enabled: torchvision's deform_conv2d
        with torch.inference_mode():
            got = m(x, dilation=dilation)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    weight, d = torch.randn(3, 4, 3, 3), torch.rand(1, 1, 5, 6) * 3 + 1
    taps = torch.tensor([(i - 1, j - 1) for i in range(3) for j in range(3)]).float().reshape(1, -1, 1, 1)
    x = torch.randn(1, 4, 5, 6)
    torch.testing.assert_close(
        dilated_tap_conv(x, d, weight),
        deform_conv2d(x, ((d - 1) * taps).contiguous(), weight, padding=(1, 1)),
    )


def test_tap_sampler_gradients_match_deform_conv():
    """The sampler path (used on CUDA for training) has deform_conv2d's gradients for x, the weight and the
    dilation, at fractional dilations (no tap exactly on a pixel, where the slope is one-sided)."""
    torch.manual_seed(1)
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64, requires_grad=True)
    d = (torch.rand(2, 1, 7, 9, dtype=torch.float64) * 3 + 1.05).requires_grad_()
    weight = torch.randn(3, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    taps = torch.tensor([(i - 1, j - 1) for i in range(3) for j in range(3)]).double().reshape(1, -1, 1, 1)
    grads = []
    for fn in (
        lambda: dilated_tap_conv(x, d, weight),
        lambda: deform_conv2d(x, ((d - 1) * taps).contiguous(), weight, padding=(1, 1)),
    ):
        out = fn()
        grads.append(torch.autograd.grad(out.square().sum(), (x, d, weight)))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)


def _fadc_with_varied_dilation(c_in: int, c_out: int, seed: int) -> FrequencyAdaptiveDilatedConv:
    """A float64 FADC with AdaKern and a bias whose predictor gives fractional dilations varying per pixel."""
    torch.manual_seed(seed)
    m = FrequencyAdaptiveDilatedConv(c_in, c_out, adakern=True, bias=True).double()
    with torch.no_grad():
        m.dilation_predictor.weight.normal_(0, 0.3)
        m.adakern.weight.normal_(0, 0.3)
    return m


def test_every_sampler_gives_the_layer_the_same_values_and_gradients():
    """``sampler`` picks the implementation only: taps (explicit backward), composed (autograd) and
    deform_conv2d give the same output and gradients (x, every parameter) in float64, AdaKern on; an
    unknown name is refused."""
    m = _fadc_with_varied_dilation(6, 5, seed=4)
    x = torch.randn(2, 6, 11, 9, dtype=torch.float64)
    results = {}
    for sampler in ("taps", "composed", "deform"):
        m.sampler = sampler
        xx = x.clone().requires_grad_()
        m.zero_grad()
        out = m(xx)
        out.square().mean().backward()
        results[sampler] = [out.detach(), xx.grad] + [p.grad.clone() for p in m.parameters()]
    for sampler in ("taps", "composed"):
        for got, want in zip(results[sampler], results["deform"]):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)
    assert results["taps"][1].abs().sum() > 0 and m.dilation_predictor.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="sampler must be one of"):
        FrequencyAdaptiveDilatedConv(4, 4, sampler="bilinear")


def test_tap_sampler_keeps_fp32_coordinates_for_half_inputs():
    """bf16 inputs: taps sampled at fp32 positions (bf16 ones would be up to 1/4 pixel off on a 64-pixel
    map), product and output in bf16."""
    torch.manual_seed(2)
    x = torch.randn(1, 8, 64, 64)
    d = torch.rand(1, 1, 64, 64) * 3 + 1
    weight = torch.randn(8, 8, 3, 3) / 8
    ref = dilated_tap_conv(x, d, weight)
    got = dilated_tap_conv(x.bfloat16(), d, weight)
    assert got.dtype == torch.bfloat16
    err = (got.float() - ref).abs().max() / ref.abs().max()
    assert err < 0.02, err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fadc_matches_the_cpu_deform_conv_path():
    """On CUDA the layer runs the sampler (training too): the CPU training path's outputs and gradients
    (torchvision's deform_conv2d), fractional dilations predicted per pixel, AdaKern on. In float64, so
    that no TF32 convolution (cuDNN's default for fp32) moves the predicted dilations."""
    m = _fadc_with_varied_dilation(16, 16, seed=3)
    x = torch.randn(2, 16, 24, 20, dtype=torch.float64)
    outs, grads = [], []
    for dev in ("cpu", "cuda"):
        mm = copy.deepcopy(m).to(dev)
        xx = x.to(dev).detach().requires_grad_()
        out = mm(xx)
        out.square().mean().backward()
        outs.append(out.cpu())
        grads.append([xx.grad.cpu()] + [p.grad.cpu() for p in mm.parameters()])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-7, atol=1e-9)
    assert len(grads[0]) == 1 + len(list(m.parameters()))
    for g_cuda, g_cpu in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_cuda, g_cpu, rtol=1e-6, atol=1e-7 * float(g_cpu.abs().max()) + 1e-12)
