"""SS2DCore / SS2D: equivalence with the composed path, shapes, gradients, determinism, FLOPs, init."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from geomamba.layers.ss2d import SS2D, SS2DCore
from geomamba.ops import cross_merge, cross_scan
from geomamba.ops.selective_scan.naive import selective_scan_naive


def composed_core(core: SS2DCore, x: torch.Tensor) -> torch.Tensor:
    """The former SS2DCore.forward: cross-scan, projections on the K copies, scan, cross-merge."""
    b, d, h, w = x.shape
    k, r, n = core.directions, core.dt_rank, core.d_state
    xs = cross_scan(x, k)
    x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, core.x_proj_weight)
    dts, bs, cs = torch.split(x_dbl, [r, n, n], dim=2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, core.dt_projs_weight)
    y = selective_scan_naive(
        xs.reshape(b, k * d, -1),
        dts.reshape(b, k * d, -1),
        -torch.exp(core.A_logs),
        bs,
        cs,
        core.Ds,
        delta_bias=core.dt_projs_bias.reshape(-1),
    )
    return cross_merge(y.view(b, k, d, -1), h, w)


@pytest.mark.parametrize(("directions", "d_state"), [(4, 1), (2, 4), (1, 16)])
@pytest.mark.parametrize("shape", [(2, 6, 5, 3), (1, 6, 4, 4)])
def test_core_matches_composed_path(directions, d_state, shape):
    core = SS2DCore(6, d_state=d_state, directions=directions).double()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    y, y_ref = core(x), composed_core(core, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    params = [x, *core.parameters()]
    grads = torch.autograd.grad(y.square().sum(), params)
    grads_ref = torch.autograd.grad(y_ref.square().sum(), params)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9)


def test_initialisation():
    core = SS2DCore(32, d_state=4, dt_rank="auto", dt_min=0.01, dt_max=0.05)
    assert core.dt_rank == 2 and core.x_proj_weight.shape == (4, 2 + 8, 32)
    torch.testing.assert_close(core.A_logs, torch.log(torch.arange(1.0, 5.0)).expand(4 * 32, 4))
    assert torch.equal(core.Ds, torch.ones(4 * 32))
    dt = F.softplus(core.dt_projs_bias)
    assert dt.min() >= 0.01 - 1e-6 and dt.max() <= 0.05 + 1e-6
    assert core.A_logs._no_weight_decay and core.Ds._no_weight_decay


@pytest.mark.parametrize("gate", [False, True])
@pytest.mark.parametrize("directions", [1, 2, 4])
def test_ss2d_odd_shapes_layouts_and_gradients(gate, directions):
    layer = SS2D(8, d_state=2, directions=directions, gate=gate)
    assert layer.core.dt_rank == math.ceil(8 / 16)
    x = torch.randn(2, 5, 7, 8, requires_grad=True)
    out = layer(x)
    assert out.shape == (2, 5, 7, 8)
    out.square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert torch.isfinite(x.grad).all()
    layer.channels_last = False  # same weights, channels-first layout
    torch.testing.assert_close(layer(x.permute(0, 3, 1, 2)), out.permute(0, 3, 1, 2))


def test_deterministic_with_a_seed():
    def run():
        torch.manual_seed(123)
        layer = SS2D(8, d_state=1)
        x = torch.randn(1, 6, 5, 8)
        out = layer(x)
        out.sum().backward()
        return out, [p.grad for p in layer.parameters()]

    (out1, grads1), (out2, grads2) = run(), run()
    assert torch.equal(out1, out2)
    assert all(torch.equal(a, b) for a, b in zip(grads1, grads2))


def test_flop_counter_includes_the_scan():
    b, h, w, c = 1, 4, 6, 8
    layer = SS2D(c, d_state=2, ssm_ratio=2.0)
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(b, h, w, c))
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    assert counts["geomamba.ss2d_scan"] == 9 * b * 4 * (2 * c) * h * w * 2
    assert counter.get_total_flops() > counts["geomamba.ss2d_scan"]  # projections counted too


def test_bf16_autocast_runs():
    layer = SS2D(8)
    x = torch.randn(1, 3, 5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.shape == x.shape and torch.isfinite(out.float()).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"SS2D expects x of shape \(B, H, W, C\) with C=8"):
        SS2D(8)(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="d_conv must be odd"):
        SS2D(8, d_conv=4)
    with pytest.raises(ValueError, match="directions must be 1, 2 or 4"):
        SS2DCore(8, directions=3)
    with pytest.raises(ValueError, match=r"SS2DCore expects x of shape \(B, d_inner=8, H, W\)"):
        SS2DCore(8)(torch.randn(1, 4, 3, 3))


@pytest.mark.parametrize("channels_last", [True, False])
def test_contiguous_keep_grad_format(channels_last):
    """The core's contiguous copy on CUDA: the same values, contiguous, and the gradient comes back in the
    input's memory format (what the convolution before it wants), with the same values."""
    from geomamba.layers.ss2d import contiguous_keep_grad_format

    x = torch.randn(2, 3, 4, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    y = contiguous_keep_grad_format(x)
    assert y.is_contiguous() and torch.equal(y, x)
    g = torch.randn(2, 3, 4, 5)
    y.backward(g)
    assert torch.equal(x.grad, g)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert x.grad.is_contiguous(memory_format=fmt)
    assert x.grad.is_contiguous() is not channels_last
