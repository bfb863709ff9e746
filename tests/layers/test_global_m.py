"""GlobalM: shapes of every axial strategy, row/column transpose equivalence, hybrid head split."""

from __future__ import annotations

import pytest
import torch

from geomamba.layers.global_m import GlobalM, axial_attention


def _transposed_copy(src: GlobalM, strategy: str) -> GlobalM:
    """A GlobalM with ``src``'s weights, another strategy, and every spatial kernel transposed."""
    dst = GlobalM(
        src.embed_dim, num_heads=src.num_heads, axial_strategy=strategy, local_branch=src.local is not None
    )
    state = {k: (v.transpose(-1, -2) if v.dim() == 4 else v) for k, v in src.state_dict().items()}
    dst.load_state_dict(state)
    return dst


@pytest.mark.parametrize("strategy", ["row", "column", "hybrid"])
@pytest.mark.parametrize("local_branch", [False, True])
def test_shapes_and_backward(strategy, local_branch):
    layer = GlobalM(16, num_heads=4, axial_strategy=strategy, local_branch=local_branch)
    x = torch.randn(2, 16, 6, 10, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in layer.parameters())


def test_axial_attention_row_on_transposed_equals_column():
    q, k, v = (torch.randn(2, 3, 4, 5, 7) for _ in range(3))
    col = axial_attention(q, k, v, axis="column")
    row_t = axial_attention(*(t.transpose(-1, -2) for t in (q, k, v)), axis="row").transpose(-1, -2)
    torch.testing.assert_close(row_t, col)
    assert not torch.allclose(col, axial_attention(q, k, v, axis="row"))


def test_row_attention_stays_within_rows():
    q, k, v = (torch.randn(1, 2, 4, 5, 6) for _ in range(3))
    out = axial_attention(q, k, v, axis="row")
    v2 = v.clone()
    v2[..., 2, :] += 1.0  # change row 2 only
    out2 = axial_attention(q, k, v2, axis="row")
    changed = (out2 - out).abs().amax(dim=(0, 1, 2, 4)) > 1e-6
    assert changed.tolist() == [False, False, True, False, False]


@pytest.mark.parametrize("local_branch", [False, True])
def test_row_module_on_transposed_input_equals_column_module(local_branch):
    row = GlobalM(16, num_heads=4, axial_strategy="row", local_branch=local_branch).eval()
    column = _transposed_copy(row, "column").eval()
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(row(x.transpose(-1, -2)).transpose(-1, -2), column(x), atol=1e-5, rtol=1e-5)


def test_hybrid_splits_heads_between_rows_and_columns():
    hybrid = GlobalM(16, num_heads=4, axial_strategy="hybrid").eval()
    row, column = (GlobalM(16, num_heads=4, axial_strategy=s).eval() for s in ("row", "column"))
    row.load_state_dict(hybrid.state_dict())
    column.load_state_dict(hybrid.state_dict())
    y = torch.randn(1, 16, 5, 6)
    a_h, a_r, a_c = hybrid.attention(y), row.attention(y), column.attention(y)
    torch.testing.assert_close(a_h[:, :8], a_r[:, :8])
    torch.testing.assert_close(a_h[:, 8:], a_c[:, 8:])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        GlobalM(10, num_heads=4)
    with pytest.raises(ValueError, match="even"):
        GlobalM(12, num_heads=3, axial_strategy="hybrid")
    with pytest.raises(ValueError, match="axial_strategy"):
        GlobalM(8, num_heads=2, axial_strategy="diagonal")
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        GlobalM(8, num_heads=2)(torch.zeros(1, 4, 3, 3))
