"""ss2d_scan (image layout, K directions) against cross_scan + naive scan + cross_merge."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from geomamba.ops import cross_merge, cross_scan, ss2d_scan, to_line_order, to_scan_order
from geomamba.ops.selective_scan._backends import get_backend
from geomamba.ops.selective_scan.naive import selective_scan_naive
from geomamba.ops.ss2d_scan import composed_ss2d_bwd, composed_ss2d_fwd


def make_inputs(b, d, h, w, n, k, dtype=torch.float64):
    def leaf(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, dtype=dtype) * scale + shift).requires_grad_()

    return {
        "x": leaf(b, d, h, w),
        "delta": leaf(b, k, d, h * w, scale=0.5, shift=-1.0),
        "A": (-torch.rand(k * d, n, dtype=dtype) - 0.1).requires_grad_(),
        "B": leaf(b, k, n, h * w),
        "C": leaf(b, k, n, h * w),
        "D": leaf(k * d),
        "delta_bias": leaf(k * d, scale=0.3),
    }


def composed(x, delta, A, B, C, D, delta_bias, k):
    """The executable specification: reorder every input to scan order, naive scan, merge."""
    b, d, h, w = x.shape
    y = selective_scan_naive(
        cross_scan(x, k).reshape(b, k * d, h * w),
        to_scan_order(delta, h, w).reshape(b, k * d, h * w),
        A,
        to_scan_order(B, h, w),
        to_scan_order(C, h, w),
        D,
        None,
        delta_bias,
    )
    return cross_merge(y.view(b, k, d, h * w), h, w)


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize(("h", "w", "n"), [(3, 5, 1), (4, 3, 4)])
def test_ss2d_scan_matches_composed_path(k, h, w, n):
    inputs = make_inputs(2, 3, h, w, n, k)
    y = ss2d_scan(**inputs, directions=k)
    y_ref = composed(*inputs.values(), k)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    dy = torch.randn_like(y)
    grads = torch.autograd.grad((y * dy).sum(), list(inputs.values()))
    grads_ref = torch.autograd.grad((y_ref * dy).sum(), list(inputs.values()))
    for name, g, g_ref in zip(inputs, grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("k", [2, 4])
def test_lines_layout_gives_the_image_layouts_values_and_gradients(k):
    """layout="lines" (delta/B/C with the column-major directions column-major) is the same function:
    y equal, gradients equal after the same reordering; through the op (the reference backend converts
    to image order) and through the composed path (which reads "lines" directly)."""
    h, w = 3, 5
    inputs = make_inputs(2, 3, h, w, 2, k)
    names = list(inputs)
    y = ss2d_scan(**inputs, directions=k)
    dy = torch.randn_like(y)
    grads = torch.autograd.grad((y * dy).sum(), list(inputs.values()))
    expected = {n: to_line_order(g, h, w) if n in ("delta", "B", "C") else g for n, g in zip(names, grads)}
    lines = {n: to_line_order(t, h, w) if n in ("delta", "B", "C") else t for n, t in inputs.items()}
    y_lines = ss2d_scan(**lines, directions=k, layout="lines")
    torch.testing.assert_close(y_lines, y, rtol=1e-12, atol=1e-12)
    got = dict(zip(names, torch.autograd.grad((y_lines * dy).sum(), list(lines.values()))))
    for n in names:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-12, atol=1e-12, msg=n)
    be = get_backend("ref")
    args = [t.detach() for t in lines.values()]
    torch.testing.assert_close(composed_ss2d_fwd(be, *args, k, layout="lines"), y.detach())
    composed_grads = composed_ss2d_bwd(be, dy, *args, k, layout="lines")
    for n, g in zip(names, composed_grads):
        torch.testing.assert_close(g, expected[n], msg=n)
    with pytest.raises(ValueError, match="layout must be one of"):
        ss2d_scan(**lines, directions=k, layout="columns")


@pytest.mark.parametrize(("k", "layout"), [(4, "lines"), (2, "image"), (1, "lines")])
def test_dt_weight_is_the_projected_delta(k, layout):
    """ss2d_scan(..., dt_weight=W) with delta = dt_proj's input is ss2d_scan of W @ delta: same y, same
    gradients of the other inputs, and the projection's gradients (the reference backend projects inside
    the op)."""
    b, d, h, w, r = 2, 3, 3, 4, 2
    inputs = make_inputs(b, d, h, w, 2, k)
    dts = (torch.randn(b, k, r, h * w, dtype=torch.float64) * 0.5).requires_grad_()
    dt_w = torch.randn(k, d, r, dtype=torch.float64).requires_grad_()
    if layout == "lines":
        inputs = {
            n: to_line_order(t.detach(), h, w).requires_grad_() if n in ("B", "C") else t
            for n, t in inputs.items()
        }
    others = {n: t for n, t in inputs.items() if n != "delta"}
    y = ss2d_scan(**others, delta=dts, dt_weight=dt_w, directions=k, layout=layout)
    y_ref = ss2d_scan(**others, delta=torch.matmul(dt_w, dts), directions=k, layout=layout)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y)
    leaves = [dts, dt_w, *others.values()]
    grads = torch.autograd.grad((y * dy).sum(), leaves)
    grads_ref = torch.autograd.grad((y_ref * dy).sum(), leaves)
    for name, g, g_ref in zip(["dts", "dt_weight", *others], grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10, msg=name)
    with pytest.raises(ValueError, match=r"dt_weight must have shape \(K, D, R\)"):
        ss2d_scan(**others, delta=dts, dt_weight=dt_w[:, :2], directions=k, layout=layout)
    with pytest.raises(ValueError, match="with dt_weight, delta is dt_proj's input"):
        ss2d_scan(**others, delta=dts[:, :, :1], dt_weight=dt_w, directions=k, layout=layout)


def test_optional_d_and_bias_and_fp32():
    inputs = make_inputs(1, 4, 3, 3, 2, 4, dtype=torch.float32)
    inputs["D"] = inputs["delta_bias"] = None
    y = ss2d_scan(**inputs)
    assert y.dtype == torch.float32 and y.shape == (1, 4, 3, 3)
    torch.testing.assert_close(y, composed(*inputs.values(), 4), rtol=1e-5, atol=1e-5)
    y.sum().backward()
    assert inputs["D"] is None and inputs["x"].grad.shape == (1, 4, 3, 3)


def test_gradcheck_float64():
    inputs = make_inputs(1, 2, 2, 3, 2, 4)
    names = list(inputs)
    assert torch.autograd.gradcheck(
        lambda *args: ss2d_scan(**dict(zip(names, args))), tuple(inputs.values()), eps=1e-6, atol=1e-6
    )


def test_flops_and_opcheck():
    b, d, h, w, n, k = 1, 3, 3, 5, 2, 4
    inputs = make_inputs(b, d, h, w, n, k, dtype=torch.float32)
    with FlopCounterMode(display=False) as counter:
        ss2d_scan(**inputs).sum().backward()
    counts = {str(key): v for key, v in counter.get_flop_counts()["Global"].items()}
    assert counts["geomamba.ss2d_scan"] == 9 * b * k * d * h * w * n
    result = torch.library.opcheck(
        torch.ops.geomamba.ss2d_scan.default, (*inputs.values(), k, "ref", "image")
    )
    assert set(result.values()) == {"SUCCESS"}
    dts, dt_w = torch.randn(b, k, 2, h * w, requires_grad=True), torch.randn(k, d, 2, requires_grad=True)
    args = {**inputs, "delta": dts}
    result = torch.library.opcheck(
        torch.ops.geomamba.ss2d_scan.default, (*args.values(), k, "ref", "lines", dt_w)
    )
    assert set(result.values()) == {"SUCCESS"}


def test_channels_last_output_is_the_same_function():
    """``channels_last=True``: y in the channels-last memory format (a channels-first x), the same values
    and gradients; opcheck with the option (the fake kernel's strides match the real ones)."""
    b, d, h, w, n, k = 2, 3, 3, 5, 2, 4
    inputs = make_inputs(b, d, h, w, n, k)
    y = ss2d_scan(**inputs)
    y_cl = ss2d_scan(**inputs, channels_last=True)
    assert y.is_contiguous() and not y_cl.is_contiguous()
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, y, rtol=0, atol=0)
    dy = torch.randn_like(y)
    grads = torch.autograd.grad((y * dy).sum(), list(inputs.values()))
    grads_cl = torch.autograd.grad((y_cl * dy).sum(), list(inputs.values()))
    for name, g, g_cl in zip(inputs, grads, grads_cl):
        torch.testing.assert_close(g_cl, g, rtol=1e-12, atol=1e-12, msg=name)
    args = {n: t.detach().float().requires_grad_() for n, t in inputs.items()}
    result = torch.library.opcheck(
        torch.ops.geomamba.ss2d_scan.default, (*args.values(), k, "ref", "image", None, True)
    )
    assert set(result.values()) == {"SUCCESS"}


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("x", torch.randn(3, 4, 4), r"x must have shape \(batch, D, H, W\)"),
        ("delta", torch.randn(1, 2, 2, 12), r"delta must have shape \(batch, K, D, H\*W\)"),
        ("delta", torch.randn(1, 4, 3, 12), "delta must have D=2 channels"),
        ("B", torch.randn(1, 4, 3, 11), r"B must have shape \(batch, K, N, H\*W\)"),
        ("C", torch.randn(1, 4, 3, 12), "C has N=3 states but A has N=2"),
        ("A", torch.randn(7, 2), r"A must have shape \(D=8, N\)"),
        ("D", torch.randn(2), r"D must have shape \(D=8,\)"),
    ],
)
def test_bad_arguments(name, value, match):
    inputs = {key: v.detach() for key, v in make_inputs(1, 2, 3, 4, 2, 4).items()}
    inputs[name] = value.double()
    with pytest.raises(ValueError, match=match):
        ss2d_scan(**inputs)
    with pytest.raises(ValueError, match="directions must be 1, 2 or 4"):
        ss2d_scan(**{key: v.detach() for key, v in make_inputs(1, 2, 3, 4, 2, 4).items()}, directions=3)
