"""cross_scan / cross_merge / to_scan_order / from_scan_order / to_line_order / from_line_order: values,
round trips, adjointness."""

import pytest
import torch

from geomamba.ops import (
    cross_merge,
    cross_scan,
    from_line_order,
    from_scan_order,
    to_line_order,
    to_scan_order,
)


def test_exact_values_on_a_small_grid():
    x = torch.arange(6.0).view(1, 1, 2, 3)  # [[0, 1, 2], [3, 4, 5]]
    seqs = cross_scan(x, 4)[0, :, 0]
    expected = torch.tensor(
        [[0, 1, 2, 3, 4, 5], [0, 3, 1, 4, 2, 5], [5, 4, 3, 2, 1, 0], [5, 2, 4, 1, 3, 0]], dtype=torch.float32
    )
    assert torch.equal(seqs, expected)
    assert torch.equal(cross_scan(x, 2)[0, :, 0], expected[:2])
    assert torch.equal(cross_scan(x, 1)[0, :, 0], expected[:1])


@pytest.mark.parametrize("k", [1, 2, 4])
def test_merge_of_scan_is_k_times_x(k):
    x = torch.randn(2, 3, 5, 7)
    torch.testing.assert_close(cross_merge(cross_scan(x, k), 5, 7), k * x)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_scan_order_round_trip_and_consistency(k):
    h, w = 3, 5
    t = torch.randn(2, k, 4, h * w)
    assert torch.equal(from_scan_order(to_scan_order(t, h, w), h, w), t)
    assert torch.equal(to_scan_order(from_scan_order(t, h, w), h, w), t)
    x = torch.randn(2, 4, h, w)
    repeated = x.flatten(2)[:, None].expand(2, k, 4, h * w)
    assert torch.equal(to_scan_order(repeated, h, w), cross_scan(x, k))
    torch.testing.assert_close(from_scan_order(t, h, w).sum(1), cross_merge(t, h, w).flatten(2))


@pytest.mark.parametrize("k", [1, 2, 4])
def test_line_order_is_scan_order_without_reversal(k):
    h, w = 3, 5
    t = torch.randn(2, k, 4, h * w)
    lines = to_line_order(t, h, w)
    assert torch.equal(from_line_order(lines, h, w), t)
    scan = to_scan_order(t, h, w)
    for j in range(k):  # direction j's line order = its scan order, reversed back for j = 2, 3
        assert torch.equal(lines[:, j], scan[:, j].flip(-1) if j >= 2 else scan[:, j])
    if k > 1:  # the column-major slices are transposed (not a no-op)
        assert not torch.equal(lines[:, 1], t[:, 1])
    with pytest.raises(ValueError, match="to_line_order expects"):
        to_line_order(torch.randn(1, 3, 2, 6), 2, 3)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_merge_is_adjoint_of_scan(k):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    y = torch.randn(2, k, 3, 20, dtype=torch.float64)
    lhs = (cross_scan(x, k) * y).sum()
    rhs = (x * cross_merge(y, 4, 5)).sum()
    torch.testing.assert_close(lhs, rhs)
    # and autograd agrees: the backward of each is the other
    x.requires_grad_()
    (g,) = torch.autograd.grad((cross_scan(x, k) * y).sum(), x)
    torch.testing.assert_close(g, cross_merge(y, 4, 5))


def test_bad_arguments():
    with pytest.raises(ValueError, match="directions must be 1, 2 or 4"):
        cross_scan(torch.randn(1, 2, 3, 3), 3)
    with pytest.raises(ValueError, match=r"cross_scan expects x of shape \(B, C, H, W\)"):
        cross_scan(torch.randn(2, 3, 3))
    with pytest.raises(ValueError, match=r"cross_merge expects .*H\*W = 4\*5"):
        cross_merge(torch.randn(1, 4, 3, 21), 4, 5)
    with pytest.raises(ValueError, match="to_scan_order expects"):
        to_scan_order(torch.randn(1, 3, 2, 6), 2, 3)
