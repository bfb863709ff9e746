"""The reference backend's image-layout SS2D forward against the composed path (reorder + chunked
reference scan + cross_merge), with strided and channels-last inputs and channel blocks."""

import importlib

import pytest
import torch

from geomamba.ops import ss2d_scan
from geomamba.ops.selective_scan import get_backend
from geomamba.ops.ss2d_scan import composed_ss2d_fwd

ss2d_reference = importlib.import_module("geomamba.ops.selective_scan.ss2d_reference")

TOL = {
    torch.float64: {"rtol": 1e-12, "atol": 1e-12},
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.bfloat16: {"rtol": 1.6e-2, "atol": 2e-2},
}


def _inputs(b, d, h, w, n, k, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    sdt = torch.float64 if dtype == torch.float64 else torch.float32

    def r(*shape, dt=dtype, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g, dtype=sdt) * scale + shift).to(dt)

    return {
        "x": r(b, d, h, w),
        # large and small steps: a mix of fast decays and softplus' linear tail (delta + bias > 20)
        "delta": r(b, k, d, h * w, scale=3.0, shift=-1.0),
        "A": -torch.rand(k * d, n, generator=g, dtype=sdt) - 0.1,
        "B": r(b, k, n, h * w),
        "C": r(b, k, n, h * w),
        "D": r(k * d, dt=sdt),
        "delta_bias": r(k * d, dt=sdt, scale=0.3),
    }


def _composed(inputs, k):
    return composed_ss2d_fwd(get_backend("ref"), *inputs.values(), k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize(
    ("k", "n", "h", "w"),
    # square maps share the steps of directions 0/1 and 2/3; other maps scan each direction alone
    [
        (4, 1, 6, 6),
        (2, 3, 5, 5),
        (1, 1, 4, 4),
        (4, 1, 1, 1),
        (4, 1, 6, 9),
        (2, 3, 5, 4),
        (1, 1, 1, 7),
        (4, 2, 8, 1),
    ],
)
def test_forward_matches_composed_path(dtype, k, n, h, w):
    inputs = _inputs(2, 5, h, w, n, k, dtype)
    y = ss2d_scan(**inputs, directions=k, backend="ref")
    assert y.dtype == dtype and y.shape == (2, 5, h, w) and y.is_contiguous()
    # bf16: the composed path rounds each direction's output to bf16 before merging; this forward sums
    # in fp32 and rounds once, so it is compared with the composed path on the fp32 values
    exact = {name: t.float() if dtype == torch.bfloat16 else t for name, t in inputs.items()}
    torch.testing.assert_close(y, _composed(exact, k).to(dtype), **TOL[dtype])


@pytest.mark.parametrize("optional", [True, False])
def test_channel_blocks_and_optional_terms(monkeypatch, optional):
    """Channels processed in blocks of 3 (the memory cap of large maps) give the same output."""
    inputs = _inputs(1, 8, 7, 7, 2, 4, torch.float32, seed=1)
    if optional:
        inputs["D"] = inputs["delta_bias"] = None
    expected = _composed(inputs, 4)
    monkeypatch.setattr(ss2d_reference, "_MAX_ELEMS", 3 * 4 * 7 * 7 * 2)
    torch.testing.assert_close(
        ss2d_scan(**inputs, directions=4, backend="ref"), expected, **TOL[torch.float32]
    )


def test_strided_inputs_channels_last_output_and_gradients():
    """delta laid out (b, K, L, D) and a channels-last x are read as they are; the output is channels-last;
    values and gradients equal those of contiguous inputs."""
    base = _inputs(1, 6, 6, 6, 1, 4, torch.float64, seed=2)
    plain = {name: t.clone().requires_grad_() for name, t in base.items()}
    strided = {name: t.clone() for name, t in base.items()}
    strided["x"] = strided["x"].contiguous(memory_format=torch.channels_last)
    strided["delta"] = strided["delta"].transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not strided["delta"].is_contiguous()
    strided = {name: t.requires_grad_() for name, t in strided.items()}

    y0 = ss2d_scan(**plain, directions=4, backend="ref")
    y1 = ss2d_scan(**strided, directions=4, backend="ref")
    assert y0.is_contiguous() and y1.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y0)
    g0 = torch.autograd.grad((y0 * dy).sum(), list(plain.values()))
    g1 = torch.autograd.grad((y1 * dy).sum(), list(strided.values()))
    for name, a, b in zip(plain, g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


def test_opcheck_channels_last():
    """The fake kernel's output strides match the real ones for a channels-last x (torch.compile)."""
    inputs = _inputs(1, 4, 3, 5, 1, 4, torch.float32, seed=3)
    inputs["x"] = inputs["x"].contiguous(memory_format=torch.channels_last)
    args = (*inputs.values(), 4, "ref", "image")
    torch.library.opcheck(
        torch.ops.geomamba.ss2d_scan.default, args, test_utils=("test_schema", "test_faketensor")
    )


def test_softplus_tail_and_long_rows():
    """Lines of 64 steps with strong decays and steps past softplus' threshold stay finite and exact."""
    inputs = _inputs(1, 3, 64, 64, 1, 4, torch.float32, seed=4)
    inputs["delta"] = inputs["delta"] * 10.0
    y = ss2d_scan(**inputs, directions=4, backend="ref")
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, _composed(inputs, 4), **TOL[torch.float32])


def test_bf16_without_bias_computes_softplus_in_fp32():
    """A bf16 delta without bias goes through softplus in fp32 (as the composed path casts it first)."""
    inputs = _inputs(1, 4, 5, 5, 1, 4, torch.bfloat16, seed=5)
    inputs["delta_bias"] = None
    y = ss2d_scan(**inputs, directions=4, backend="ref")
    exact = {name: t.float() if t is not None else None for name, t in inputs.items()}
    expected = composed_ss2d_fwd(get_backend("ref"), *exact.values(), 4)
    torch.testing.assert_close(y.float(), expected, rtol=8e-3, atol=8e-3)
