"""VSSBlock: layouts, odd shapes, gradients, options, torch.compile on CPU."""

import shutil

import pytest
import torch

from geomamba.layers.vss_block import VSSBlock


@pytest.mark.parametrize("mlp_ratio", [0.0, 2.0])
def test_shapes_layouts_and_gradients(mlp_ratio):
    block = VSSBlock(8, mlp_ratio=mlp_ratio, drop_path=0.1)
    assert (block.mlp is None) == (mlp_ratio == 0)
    x = torch.randn(2, 3, 5, 8, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape
    out.square().mean().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    block.eval()  # drop path off: both layouts give the same function
    ref = block(x)
    block.channels_last = False
    torch.testing.assert_close(block(x.permute(0, 3, 1, 2)), ref.permute(0, 3, 1, 2))


def test_options_reach_ss2d():
    block = VSSBlock(
        16, d_state=4, ssm_ratio=1.0, dt_rank=3, directions=2, d_conv=0, gate=True, backend="ref"
    )
    core = block.op.core
    assert (core.d_state, core.d_inner, core.dt_rank, core.directions, core.backend) == (4, 16, 3, 2, "ref")
    assert isinstance(block.op.conv2d, torch.nn.Identity) and block.op.gate
    assert block(torch.randn(1, 3, 3, 16)).shape == (1, 3, 3, 16)


def test_bad_input():
    with pytest.raises(ValueError, match=r"VSSBlock expects x of shape \(B, C, H, W\) with C=8"):
        VSSBlock(8, channels_last=False)(torch.randn(1, 4, 4, 8))


def _has_cxx() -> bool:
    return any(shutil.which(c) for c in ("c++", "g++", "clang++"))


@pytest.mark.slow
def test_torch_compile_on_cpu():
    """One graph (fullgraph): the scan ops are opaque custom ops with fake kernels; forward and backward
    match eager. Inductor needs a C++ compiler; without one the AOT path is still checked (aot_eager)."""
    torch.manual_seed(0)
    block = VSSBlock(8, mlp_ratio=2.0)
    x = torch.randn(1, 5, 7, 8, requires_grad=True)
    ref = block(x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    compiled = torch.compile(block, backend="inductor" if _has_cxx() else "aot_eager", fullgraph=True)
    out = compiled(x)
    (g,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)
