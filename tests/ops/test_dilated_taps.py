"""The custom op ``geomamba::dilated_tap_conv`` (FADC's sampler) against its composed reference."""

import pytest
import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

from geomamba.ops.dilated_taps import dilated_tap_conv, tap_conv


def _inputs(dtype=torch.float64, bias=True, scalar=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 7, 6, generator=g, dtype=dtype).requires_grad_()
    if scalar:
        d = torch.tensor(2.3, dtype=dtype)
    else:  # fractional dilations: no tap exactly on a pixel (a kink of bilinear sampling)
        d = (1.05 + 2.9 * torch.rand(2, 1, 7, 6, generator=g, dtype=dtype)).requires_grad_()
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(4, generator=g, dtype=dtype).requires_grad_() if bias else None
    return x, d, w, b


def _custom_op(x, d, w, b):
    return torch.ops.geomamba.dilated_tap_conv(x, d, w, b)[0]


@pytest.mark.parametrize("fn", [tap_conv, _custom_op], ids=["tap_conv", "custom_op"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("scalar", [False, True])
def test_op_matches_reference_values_and_gradients(fn, bias, scalar):
    """tap_conv (eager: an autograd.Function) and the custom op called directly (its registered autograd)."""
    x, d, w, b = _inputs(bias=bias, scalar=scalar)
    ref, got = dilated_tap_conv(x, d, w, b), fn(x, d, w, b)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    leaves = [t for t in (x, d, w, b) if t is not None and t.requires_grad]
    gy = torch.randn_like(ref)
    for a, e in zip(torch.autograd.grad(got, leaves, gy), torch.autograd.grad(ref, leaves, gy)):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def test_op_gradcheck_and_opcheck():
    x, d, w, b = _inputs()
    assert torch.autograd.gradcheck(tap_conv, (x, d, w, b))
    result = torch.library.opcheck(torch.ops.geomamba.dilated_tap_conv.default, (x, d, w, b))
    assert set(result.values()) == {"SUCCESS"}, result


def test_only_the_needed_gradients():
    """A frozen weight and a constant dilation: only dx is computed and returned."""
    x, d, w, _ = _inputs()
    d, w = d.detach(), w.detach()
    (dx,) = torch.autograd.grad(tap_conv(x, d, w, None).sum(), (x,))
    (want,) = torch.autograd.grad(dilated_tap_conv(x, d, w, None).sum(), (x,))
    torch.testing.assert_close(dx, want, rtol=1e-10, atol=1e-12)


def test_autocast_runs_the_product_in_the_autocast_dtype():
    x, d, w, b = (t.detach().float() for t in _inputs())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = tap_conv(x, d, w, b)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, dilated_tap_conv(x.bfloat16(), d, w, b), rtol=0, atol=0)
    err = (got.float() - dilated_tap_conv(x, d, w, b)).abs().max() / got.float().abs().max()
    assert err < 0.02, err


def test_compiled_graph_keeps_the_op_opaque_with_the_same_gradients():
    """Under torch.compile (fullgraph) the forward and backward graphs call the two custom ops (inductor
    would otherwise decompose grid_sample into gathers) and give the eager values and gradients."""
    graphs = []

    def record(gm, _example_inputs):
        graphs.append({str(n.target) for n in gm.graph.nodes if n.op == "call_function"})
        return make_boxed_func(gm.forward)

    torch._dynamo.reset()
    fn = torch.compile(tap_conv, backend=aot_autograd(fw_compiler=record, bw_compiler=record), fullgraph=True)
    x, d, w, b = _inputs()
    got = fn(x, d, w, b)
    grads = torch.autograd.grad(got.square().sum(), (x, d, w, b))
    ref = dilated_tap_conv(x, d, w, b)
    want = torch.autograd.grad(ref.square().sum(), (x, d, w, b))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    for a, e in zip(grads, want):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
    assert len(graphs) == 2
    assert any("geomamba.dilated_tap_conv.default" in t for t in graphs[0])
    assert any("geomamba.dilated_tap_conv_bwd.default" in t for t in graphs[1])
    assert not any("grid_sampler" in t for g in graphs for t in g)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_op_under_inductor_matches_cpu_reference():
    """On CUDA, compiled by inductor: float64 values and gradients equal the CPU reference; bf16 under
    autocast within bf16 rounding of it."""
    torch._dynamo.reset()
    fn = torch.compile(tap_conv, fullgraph=True)
    x, d, w, b = _inputs(seed=3)
    want = dilated_tap_conv(x, d, w, b)
    want_g = torch.autograd.grad(want.square().sum(), (x, d, w, b))
    xc, dc, wc, bc = (t.detach().cuda().requires_grad_() for t in (x, d, w, b))
    got = fn(xc, dc, wc, bc)
    got_g = torch.autograd.grad(got.square().sum(), (xc, dc, wc, bc))
    torch.testing.assert_close(got.cpu(), want, rtol=1e-9, atol=1e-10)
    for a, e in zip(got_g, want_g):
        torch.testing.assert_close(a.cpu(), e, rtol=1e-8, atol=1e-9 * float(e.abs().max()))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        half = fn(*(t.detach().float() for t in (xc, dc, wc, bc)))
    assert half.dtype == torch.bfloat16
    err = (half.float().cpu() - want.float()).abs().max() / want.abs().max()
    assert err < 0.02, err


def test_only_eager_calls_cache_the_tap_geometry():
    """The tap geometry is cached for eager calls only: the custom ops also run inside compiled graphs,
    where a cached tensor made during a CUDA-graph warm-up would sit untracked in the graphs' pool."""
    from geomamba.ops import dilated_taps

    dilated_taps._geometry_cache.cache_clear()
    x, d, w, b = _inputs()
    out = _custom_op(x, d, w, b)
    torch.autograd.grad(out.sum(), (x, d, w))
    assert dilated_taps._geometry_cache.cache_info().currsize == 0
    out = tap_conv(x, d, w, b)
    torch.autograd.grad(out.sum(), (x, d, w))
    assert dilated_taps._geometry_cache.cache_info().currsize == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_op_trains_under_cuda_graphs():
    """Compiled with ``mode="reduce-overhead"`` (inductor's CUDA-graph trees), training steps of the op
    record and replay (no pool error, no skipped graph) and give the eager gradients."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    fn = torch.compile(tap_conv, mode="reduce-overhead", fullgraph=True)
    x, d, w, b = (t.detach().cuda().float() for t in _inputs(seed=4))
    w = w.requires_grad_()
    want = torch.autograd.grad(tap_conv(x, d, w, b).square().sum(), w)[0]
    for _ in range(4):  # warm-up, recording, replays
        got = torch.autograd.grad(fn(x, d, w, b).square().sum(), w)[0].clone()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert counters["inductor"]["cudagraph_skips"] == 0
