"""``ops.dt_proj``: SS2D's per-direction delta projection with a one-pass backward (Triton on CUDA).

The kernel's math on CPU runs under the Triton interpreter (cases ``dt_proj_*`` of
``_triton_interpret_cases.py``, checked by ``test_triton_interpret.py``); the GPU tests compare the
compiled kernel with fp64 products, eager and under ``torch.compile``, and the compiled SS2D layer with the
two matrix products autograd takes.
"""

import pytest
import torch

import geomamba.layers.ss2d as ss2d_mod
import geomamba.ops.dt_proj as dt_proj_mod
from geomamba.layers.ss2d import SS2D
from geomamba.ops._triton_gate import uses_triton
from geomamba.ops.dt_proj import MAX_CHANNELS, _reference_grads, dt_proj, dt_proj_reference, uses_kernel


def _inputs(b=2, k=4, d=12, r=3, length=10, dtype=torch.float64, device="cpu", seed=0, strided=True):
    """weight (K, D, R) and dts (B, K, R, L); dts is a split of a wider tensor (as SS2DCore's) when strided."""
    g = torch.Generator().manual_seed(seed)
    wide = torch.randn(b, k, r + 4, length, generator=g, dtype=torch.float64).to(device, dtype)
    dts = wide[:, :, 2 : r + 2] if strided else wide[:, :, :r].contiguous()
    wt = (torch.randn(k, d, r, generator=g, dtype=torch.float64) / r**0.5).to(device, dtype)
    return wt.requires_grad_(), dts.detach().requires_grad_()


def test_reference_is_the_per_direction_product():
    wt, dts = _inputs()
    out = dt_proj_reference(wt, dts)
    assert out.shape == (2, 4, 12, 10)
    # one entry by hand: batch 1, direction 2, channel 5, position 7
    torch.testing.assert_close(out[1, 2, 5, 7], (wt[2, 5] * dts[1, 2, :, 7]).sum())


def test_reference_gradient_formulas_match_autograd():
    """The explicit products the custom op's backward uses off the Triton path, against autograd."""
    wt, dts = _inputs()
    out = dt_proj_reference(wt, dts)
    dd = torch.randn_like(out)
    want_w, want_x = torch.autograd.grad(out, (wt, dts), dd)
    got_x, got_w = _reference_grads(dd, wt.detach(), dts.detach())
    torch.testing.assert_close(got_x, want_x)
    torch.testing.assert_close(got_w, want_w)


def test_cpu_runs_the_reference_with_its_gradients():
    wt, dts = _inputs()
    assert not uses_triton(dts) and not uses_kernel(wt, dts)
    torch.testing.assert_close(dt_proj(wt, dts), dt_proj_reference(wt, dts), rtol=0, atol=0)
    assert torch.autograd.gradcheck(dt_proj, (wt, dts))


def test_custom_op_opcheck_on_cpu():
    """torch.library's consistency checks of the backward op (schema, fake kernel) and its values."""
    wt, dts = _inputs()
    dd = torch.randn(2, 4, 12, 10, dtype=torch.float64)
    got = torch.ops.geomamba.dt_proj_bwd(dd, wt.detach(), dts.detach())
    want = _reference_grads(dd, wt.detach(), dts.detach())
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e)
    assert got[0].is_contiguous()
    result = torch.library.opcheck(torch.ops.geomamba.dt_proj_bwd.default, (dd, wt.detach(), dts.detach()))
    assert set(result.values()) == {"SUCCESS"}, result


@pytest.mark.parametrize(
    "wshape, xshape", [((4, 12, 3), (2, 4, 3)), ((4, 12, 3), (2, 2, 3, 10)), ((4, 12, 3), (2, 4, 5, 10))]
)
def test_bad_shapes_are_named(wshape, xshape):
    with pytest.raises(ValueError, match=r"dt_proj: weight must be \(K, D, R\) and dts \(B, K, R, L\)"):
        dt_proj(torch.randn(*wshape), torch.randn(*xshape))


# ---- GPU ----------------------------------------------------------------------------------------------


def _rel(a, b):
    return ((a.double() - b.double()).norm() / (b.double().norm() + 1e-30)).item()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize(
    "b, k, d, r, length",
    [(16, 4, 512, 16, 1024), (16, 4, 1024, 32, 256), (3, 4, 70, 8, 37), (2, 2, 300, 20, 1)],
    ids=["stage2", "stage3", "odd", "L1"],
)
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_triton_backward_matches_fp64_products(dtype, tol, b, k, d, r, length, compiled, monkeypatch):
    """Through dt_proj (eager and compiled); D = 1024 (several channel blocks, which dt_proj routes to the
    matrix products by default) with the routing limit raised, so that the kernel runs there too."""
    monkeypatch.setattr(dt_proj_mod, "MAX_CHANNELS", 4096)
    wt, dts = _inputs(b=b, k=k, d=d, r=r, length=length, dtype=dtype, device="cuda")
    assert uses_kernel(wt, dts)
    if compiled:  # (a fresh compile per case: dynamo's recompile limit is 8)
        torch._dynamo.reset()
    fn = torch.compile(dt_proj, fullgraph=True) if compiled else dt_proj
    out = fn(wt, dts)
    assert out.dtype == dtype and out.shape == (b, k, d, length)
    dd = torch.randn_like(out)
    gw, gx = torch.autograd.grad(out, (wt, dts), dd)
    rw, rx = wt.detach().double(), dts.detach().double()
    want_x = torch.matmul(rw.transpose(-1, -2), dd.double())
    want_w = torch.matmul(dd.double(), rx.transpose(-1, -2)).sum(0)
    assert gx.dtype == gw.dtype == dtype
    assert _rel(gx, want_x) < tol, _rel(gx, want_x)
    assert _rel(gw, want_w) < tol, _rel(gw, want_w)


@pytest.mark.gpu
def test_routing_by_channels():
    """The kernel up to MAX_CHANNELS channels, autograd's products above (measured faster there)."""
    for d, want in ((MAX_CHANNELS, True), (MAX_CHANNELS + 1, False)):
        wt, dts = _inputs(d=d, dtype=torch.bfloat16, device="cuda")
        assert uses_kernel(wt, dts) is want
        out = dt_proj(wt, dts)
        assert (out.grad_fn is not None and "DtProj" in type(out.grad_fn).__name__) is want


@pytest.mark.gpu
def test_ss2d_layer_with_the_one_pass_backward_matches_autograd(monkeypatch):
    """The compiled SS2D layer under bf16 autocast: outputs and every gradient with ``dt_proj`` against
    the layer with autograd's two products (``dt_proj_reference``)."""
    torch.manual_seed(0)
    layer = SS2D(64, backend="triton").cuda()
    x = torch.randn(2, 16, 16, 64, device="cuda")
    results = []
    for fn in (dt_proj, dt_proj_reference):
        monkeypatch.setattr(ss2d_mod, "dt_proj", fn)
        torch._dynamo.reset()
        compiled = torch.compile(layer)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = compiled(x).float()
        results.append((y, torch.autograd.grad(y.square().sum(), list(layer.parameters()))))
    (ya, ga), (yb, gb) = results
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)  # the same forward
    for p_a, p_b in zip(ga, gb):
        assert _rel(p_a, p_b) < 2e-2
