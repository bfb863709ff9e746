import torch

from geomamba.layers.ss2d import SS2D
from geomamba.layers.vss_block import VSSBlock
from geomamba.ops import cross_merge, cross_scan, selective_scan
from geomamba.ops.selective_scan.naive import selective_scan_naive


def test_ss2d_shapes_odd_size():
    layer = SS2D(8, d_state=1)
    out = layer(torch.randn(2, 5, 7, 8))
    assert out.shape == (2, 5, 7, 8)
    block = VSSBlock(8, channels_last=False)
    assert block(torch.randn(1, 8, 3, 5)).shape == (1, 8, 3, 5)


def test_cross_merge_is_adjoint_of_cross_scan():
    x = torch.randn(2, 3, 4, 5)
    y = torch.randn(2, 4, 3, 20)
    lhs = (cross_scan(x) * y).sum()
    rhs = (x * cross_merge(y, 4, 5)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_scan_matches_naive():
    u, dt = torch.randn(2, 4, 9), torch.randn(2, 4, 9)
    A, B, C = -torch.rand(4, 2), torch.randn(2, 2, 2, 9), torch.randn(2, 2, 2, 9)
    torch.testing.assert_close(selective_scan(u, dt, A, B, C), selective_scan_naive(u, dt, A, B, C))
