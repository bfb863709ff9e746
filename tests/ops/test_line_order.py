"""The custom op ``geomamba::line_order`` against to_line_order / from_line_order: values, gradients,
its copy path (the slices' views) and the fake kernel."""

import pytest
import torch

import geomamba.ops.line_order as lo
from geomamba.ops import from_line_order, to_line_order
from geomamba.ops.line_order import line_order


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("copy_path", [False, True])
def test_values_and_gradients(k, copy_path, monkeypatch):
    if copy_path:  # the CUDA branch's views, with PyTorch's copy in place of the tiled Triton one
        monkeypatch.setattr(lo, "_strided_copy", lambda t: lambda dst, src: dst.copy_(src))
    h, w = 3, 5
    t = torch.randn(2, k, 4, h * w, dtype=torch.float64, requires_grad=True)
    out = line_order(t, h, w)
    assert out.is_contiguous() and (out is t) == (k == 1)
    torch.testing.assert_close(out, to_line_order(t, h, w), rtol=0, atol=0)
    back = line_order(out, h, w, inverse=True)
    torch.testing.assert_close(back, t, rtol=0, atol=0)
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * g).sum(), t)
    torch.testing.assert_close(grad, from_line_order(g, h, w), rtol=0, atol=0)


def test_opcheck_and_bad_shape():
    t = torch.randn(1, 4, 2, 6, requires_grad=True)
    for k in (1, 4):
        torch.library.opcheck(torch.ops.geomamba.line_order.default, (t[:, :k], 2, 3, False))
    with pytest.raises(ValueError, match=r"line_order expects .*H\*W = 2\*4"):
        line_order(t, 2, 4)
