"""BoundaryRefinementModule."""

from __future__ import annotations

import pytest
import torch

from geomamba.layers.boundary_refinement import BoundaryRefinementModule


def test_shapes_and_detail_resize():
    brm = BoundaryRefinementModule(16, detail_channels=4, hidden=8)
    x = torch.randn(2, 16, 8, 10)
    refined, boundary = brm(x, torch.randn(2, 4, 4, 5))
    assert refined.shape == x.shape and boundary.shape == (2, 1, 8, 10)


def test_boundary_depends_on_detail_and_gets_gradient_through_refinement():
    brm = BoundaryRefinementModule(16, detail_channels=4, hidden=8).eval()
    x, d = torch.randn(1, 16, 8, 8), torch.randn(1, 4, 8, 8)
    _, b1 = brm(x, d)
    _, b2 = brm(x, d + 1)
    assert not torch.allclose(b1, b2)
    brm.train()
    refined, _ = brm(x, d)
    refined.square().mean().backward()  # no boundary loss: the boundary head still learns from the refinement
    assert brm.boundary.weight.grad is not None and brm.boundary.weight.grad.abs().sum() > 0


def test_without_detail_map():
    brm = BoundaryRefinementModule(8, hidden=4)
    refined, boundary = brm(torch.randn(1, 8, 5, 5))
    assert refined.shape == (1, 8, 5, 5) and boundary.shape == (1, 1, 5, 5)
    with pytest.raises(ValueError, match="detail_channels=0"):
        brm(torch.randn(1, 8, 5, 5), torch.randn(1, 2, 5, 5))


def test_bad_inputs_are_named():
    brm = BoundaryRefinementModule(8, detail_channels=4, hidden=4)
    with pytest.raises(ValueError, match=r"features must be \(B, 8, H, W\), got \(1, 6, 5, 5\)"):
        brm(torch.randn(1, 6, 5, 5), torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match=r"detail map must be .* got \(1, 3, 5, 5\)"):
        brm(torch.randn(1, 8, 5, 5), torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match="got None"):
        brm(torch.randn(1, 8, 5, 5))
