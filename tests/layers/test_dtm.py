"""DTM and the 1-D Mamba mixer: sequence length, output shape, shallow-to-deep order, the prior."""

from __future__ import annotations

import pytest
import torch

from geomamba.layers.dtm import DeepTemporalMamba
from geomamba.layers.mamba1d import Mamba1d


def _feats(batch: int = 2) -> list[torch.Tensor]:
    return [torch.randn(batch, 8, 16, 16), torch.randn(batch, 16, 8, 8), torch.randn(batch, 24, 5, 5)]


@pytest.mark.parametrize(
    ("pool_size", "prior_tokens", "external", "length"),
    [(2, 0, 0, 12), (1, 0, 0, 3), (2, 3, 0, 15), (2, 0, 4, 16), (2, 3, 3, 15)],
)
def test_sequence_length_and_output_shape(pool_size, prior_tokens, external, length):
    dtm = DeepTemporalMamba(
        [8, 16, 24], dim=16, pool_size=pool_size, prior_tokens=prior_tokens, num_classes=5
    )
    prior = torch.randn(2, external, 16) if external else None
    assert dtm.tokens(_feats(), prior).shape == (2, length, 16)
    assert dtm.encode(_feats(), prior).shape == (2, length, 16)
    assert dtm.sequence_length(external or None) == length
    out = dtm(_feats(), prior)
    assert out.shape == (2, 5)
    out.sum().backward()
    assert all(p.grad is not None for p in dtm.parameters())


def test_no_head_returns_the_readout():
    dtm = DeepTemporalMamba([8, 16, 24], dim=12, num_classes=0, readout="mean")
    assert dtm(_feats(3)).shape == (3, 12)


def test_sequence_is_ordered_shallow_to_deep_and_causal():
    dtm = DeepTemporalMamba([8, 16, 24], dim=16, pool_size=2).eval()
    feats = _feats()
    changed = [f.clone() for f in feats]
    changed[2] += 1.0  # the deepest features only
    with torch.no_grad():
        a, b = dtm.encode(feats), dtm.encode(changed)
    # tokens of the two shallow depths come first and cannot see the deepest depth (causal scan)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_prior_changes_the_output():
    dtm = DeepTemporalMamba([8, 16, 24], dim=16, num_classes=3).eval()
    prior = torch.randn(2, 4, 16)
    with torch.no_grad():
        # (a constant shift of a token would vanish in the LayerNorms: perturb it randomly)
        feats = _feats()
        assert not torch.allclose(dtm(feats, prior), dtm(feats, prior + torch.randn_like(prior)), atol=1e-3)


def test_bad_inputs_are_named():
    dtm = DeepTemporalMamba([8, 16, 24], dim=16, prior_tokens=2)
    with pytest.raises(ValueError, match="expects 3 depth features"):
        dtm(_feats()[:2])
    with pytest.raises(ValueError, match="depth 1"):
        dtm([_feats()[0], torch.randn(2, 15, 8, 8), _feats()[2]])
    with pytest.raises(ValueError, match="prior_tokens=2"):
        dtm(_feats(), torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="readout"):
        DeepTemporalMamba([8], readout="first")


def test_mamba1d_shape_and_causality():
    mixer = Mamba1d(8, d_state=4).eval()
    x = torch.randn(2, 10, 8)
    with torch.no_grad():
        y = mixer(x)
        x2 = x.clone()
        x2[:, 6:] += 1.0
        y2 = mixer(x2)
    assert y.shape == (2, 10, 8)
    torch.testing.assert_close(y[:, :6], y2[:, :6])
    assert not torch.allclose(y[:, 6:], y2[:, 6:])
    with pytest.raises(ValueError, match=r"\(B, L, 8\)"):
        mixer(torch.randn(2, 8, 10, 1))
