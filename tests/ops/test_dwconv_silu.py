"""``ops.dwconv_silu``: the SS2D layer's depthwise conv + SiLU (Triton kernels on CUDA, reference elsewhere).

The kernels' math on CPU runs under the Triton interpreter (cases ``dwconv_*`` of
``_triton_interpret_cases.py``, checked by ``test_triton_interpret.py``); the GPU tests compare the
compiled kernels with the fp64 reference, eager and under ``torch.compile``, and the SS2D layer with
both convolution paths.
"""

import pytest
import torch
import torch.nn.functional as F

from geomamba.layers.ss2d import SS2D
from geomamba.ops.dwconv_silu import dwconv_silu, dwconv_silu_reference, uses_triton


def _inputs(b=2, h=5, w=7, c=6, k=3, bias=True, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, h, w, c, generator=g, dtype=torch.float64)
    wt = torch.randn(c, 1, k, k, generator=g, dtype=torch.float64) / k
    bs = torch.randn(c, generator=g, dtype=torch.float64) if bias else None
    x = x.to(device, dtype).requires_grad_()
    wt = wt.to(device, torch.float32 if dtype != torch.float64 else dtype).requires_grad_()
    bs = None if bs is None else bs.to(device, wt.dtype).requires_grad_()
    return x, wt, bs


def test_reference_is_silu_of_the_depthwise_conv_channels_first():
    x, wt, bs = _inputs()
    y = dwconv_silu_reference(x, wt, bs)
    assert y.shape == (2, 6, 5, 7) and y.is_contiguous()
    want = F.silu(F.conv2d(x.permute(0, 3, 1, 2), wt, bs, padding=1, groups=6))
    torch.testing.assert_close(y, want)
    # one channel, one interior pixel, by hand
    s = (x[1, 1:4, 2:5, 4] * wt[4, 0]).sum() + bs[4]
    torch.testing.assert_close(y[1, 4, 2, 3], s * torch.sigmoid(s))


def test_cpu_runs_the_reference_with_its_gradients():
    x, wt, bs = _inputs()
    assert not uses_triton(x)
    got, want = dwconv_silu(x, wt, bs), dwconv_silu_reference(x, wt, bs)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.autograd.gradcheck(dwconv_silu, (x, wt, bs))


@pytest.mark.parametrize("bias", [True, False])
def test_custom_op_opcheck_and_gradients_on_cpu(bias):
    """The op's CPU implementation (the reference, its backward by autograd) through the registered
    autograd formula, and torch.library's consistency checks (fake kernel, schema, autograd)."""
    x, wt, bs = _inputs(bias=bias, k=5)
    got = torch.ops.geomamba.dwconv_silu(x, wt, bs)
    want = dwconv_silu_reference(x, wt, bs)
    torch.testing.assert_close(got, want)
    leaves = [t for t in (x, wt, bs) if t is not None]
    gy = torch.randn_like(want)
    for a, e in zip(torch.autograd.grad(got, leaves, gy), torch.autograd.grad(want, leaves, gy)):
        torch.testing.assert_close(a, e)
    result = torch.library.opcheck(torch.ops.geomamba.dwconv_silu.default, (x, wt, bs))
    assert set(result.values()) == {"SUCCESS"}, result


@pytest.mark.parametrize(
    "shape, what",
    [
        ((2, 5, 7), "must be (batch, H, W, C)"),
        ((2, 5, 7, 5), "must be (C=5, 1, k, k)"),
    ],
)
def test_bad_shapes_are_named(shape, what):
    x = torch.randn(*shape)
    wt = torch.randn(6, 1, 3, 3)
    with pytest.raises(ValueError, match=r"dwconv_silu: .*" + what.replace("(", r"\(").replace(")", r"\)")):
        dwconv_silu(x, wt)


def test_even_kernel_and_bad_bias_are_refused():
    x = torch.randn(1, 4, 4, 3)
    with pytest.raises(ValueError, match="kernel size must be odd"):
        dwconv_silu(x, torch.randn(3, 1, 2, 2))
    with pytest.raises(ValueError, match=r"bias must be \(C=3,\)"):
        dwconv_silu(x, torch.randn(3, 1, 3, 3), torch.randn(4))


def test_ss2d_conv_backend_option():
    """The option is checked; on CPU "triton" runs the reference, the same function as "torch"."""
    with pytest.raises(ValueError, match="conv_backend must be"):
        SS2D(8, conv_backend="cudnn")
    torch.manual_seed(0)
    a, b = SS2D(8, conv_backend="torch"), SS2D(8, conv_backend="triton")
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 5, 6, 8)
    torch.testing.assert_close(a(x), b(x))


# ---- GPU ----------------------------------------------------------------------------------------------


def _rel(a, b):
    return ((a.double() - b.double()).norm() / (b.double().norm() + 1e-30)).item()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize(
    "k, bias, hw, c", [(3, True, (32, 32), 512), (3, False, (13, 9), 70), (5, True, (7, 20), 33)]
)
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_triton_kernels_match_the_fp64_reference(dtype, tol, k, bias, hw, c, compiled):
    x, wt, bs = _inputs(b=3, h=hw[0], w=hw[1], c=c, k=k, bias=bias, dtype=dtype, device="cuda")
    assert uses_triton(x)
    if compiled:  # (a fresh compile per case: the 18 cases would pass dynamo's recompile limit of 8)
        torch._dynamo.reset()
    fn = torch.compile(dwconv_silu, fullgraph=True) if compiled else dwconv_silu
    y = fn(x, wt, bs)
    assert y.dtype == dtype and y.shape == (3, c, *hw) and y.is_contiguous()
    gy = torch.randn_like(y)
    leaves = [t for t in (x, wt, bs) if t is not None]
    grads = torch.autograd.grad(y, leaves, gy)
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    ref = dwconv_silu_reference(ref_leaves[0], ref_leaves[1], ref_leaves[2] if bias else None)
    ref_grads = torch.autograd.grad(ref, ref_leaves, gy.double())
    assert _rel(y, ref) < tol
    for name, a, e in zip(("dx", "dweight", "dbias"), grads, ref_grads):
        assert a.dtype == (dtype if name == "dx" else torch.float32)
        assert _rel(a, e) < tol, (name, _rel(a, e))


@pytest.mark.gpu
def test_ss2d_layer_with_the_triton_conv_matches_cudnn():
    """The SS2D layer under bf16 autocast: conv_backend "triton" against "torch" (cuDNN + SiLU), outputs
    and every gradient, eager and compiled."""
    torch.manual_seed(0)
    a = SS2D(64, backend="triton", conv_backend="triton").cuda()
    b = SS2D(64, backend="triton").cuda()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 16, 16, 64, device="cuda")
    for compiled in (False, True):
        outs = []
        for module in (a, b):
            layer = torch.compile(module) if compiled else module
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = layer(x).float()
            outs.append((y, torch.autograd.grad(y.square().sum(), list(module.parameters()))))
        (ya, ga), (yb, gb) = outs
        assert _rel(ya, yb) < 2e-2
        for p_a, p_b in zip(ga, gb):
            assert _rel(p_a, p_b) < 5e-2
