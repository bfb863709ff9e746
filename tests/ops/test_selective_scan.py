"""The selective-scan op: reference backend against the naive loop, gradients, dtypes, long L, errors."""

import itertools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from geomamba.ops import selective_scan
from geomamba.ops.selective_scan import reference
from geomamba.ops.selective_scan.naive import selective_scan_naive

OPTIONALS = ("D", "z", "delta_bias")


def make_inputs(b, d, length, n, g, *, dtype=torch.float64, with_=OPTIONALS, bc3d=False):
    """Random scan inputs (leaf tensors requiring grad); A negative as in Mamba."""

    def leaf(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, dtype=dtype) * scale + shift).requires_grad_()

    bshape = (b, n, length) if bc3d else (b, g, n, length)
    return {
        "u": leaf(b, d, length),
        "delta": leaf(b, d, length, scale=0.5, shift=-1.0),
        "A": (-torch.rand(d, n, dtype=dtype) * 2 - 0.1).requires_grad_(),
        "B": leaf(*bshape),
        "C": leaf(*bshape),
        "D": leaf(d) if "D" in with_ else None,
        "z": leaf(b, d, length) if "z" in with_ else None,
        "delta_bias": leaf(d, scale=0.3) if "delta_bias" in with_ else None,
    }


def run_both(inputs, **kw):
    """(outputs, grads) of the op and of the naive loop, with a random cotangent on y and last_state."""
    results = []
    for fn in (selective_scan, selective_scan_naive):
        y, last = fn(**inputs, return_last_state=True, **kw)
        gen = torch.Generator().manual_seed(1)
        dy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.dtype)
        dlast = torch.randn(last.shape, generator=gen, dtype=torch.float64).to(last.dtype)
        leaves = [t for t in inputs.values() if t is not None]
        grads = torch.autograd.grad((y * dy).sum() + (last * dlast).sum(), leaves)
        results.append(((y, last), grads))
    return results


@pytest.fixture(params=["sequential", "chunked"])
def block_mode(request, monkeypatch):
    """Small blocks (several per sequence, L not a multiple of the chunk) in both block layouts."""
    monkeypatch.setattr(reference, "_BLOCK_ELEMS", 24 * 16)
    monkeypatch.setattr(reference, "_MIN_BLOCK", 8)
    monkeypatch.setattr(reference, "_SEQ_MIN", 1 if request.param == "sequential" else 10**9)
    return request.param


@pytest.mark.parametrize("n", [1, 4, 16])
@pytest.mark.parametrize("g", [1, 4])
def test_reference_matches_naive_values_and_gradients(block_mode, n, g):
    inputs = make_inputs(2, 8, 61, n, g)
    (out, grads), (out_ref, grads_ref) = run_both(inputs)
    for a, b in zip(out, out_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    for name, a, b in zip([k for k, v in inputs.items() if v is not None], grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=lambda m, name=name: f"d{name}: {m}")


@pytest.mark.parametrize("with_", [(), ("D",), ("z",), ("delta_bias",), ("D", "z")])
@pytest.mark.parametrize("softplus", [True, False])
def test_optional_inputs_and_softplus(block_mode, with_, softplus):
    inputs = make_inputs(1, 4, 23, 2, 2, with_=with_)
    if not softplus:  # delta must stay positive without the softplus
        inputs["delta"] = (inputs["delta"].detach().abs() * 0.3).requires_grad_()
    (out, grads), (out_ref, grads_ref) = run_both(inputs, delta_softplus=softplus)
    for a, b in zip((*out, *grads), (*out_ref, *grads_ref)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_fp32_default_blocks_match_naive():
    inputs = make_inputs(2, 16, 300, 4, 2, dtype=torch.float32)
    (out, grads), (out_ref, grads_ref) = run_both(inputs)
    for a, b in zip((*out, *grads), (*out_ref, *grads_ref)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_three_dim_b_c_means_one_group():
    inputs = make_inputs(1, 4, 9, 3, 1, bc3d=True)
    y = selective_scan(**inputs)
    y_ref = selective_scan_naive(**{**inputs, "B": inputs["B"][:, None], "C": inputs["C"][:, None]})
    torch.testing.assert_close(y, y_ref)


@pytest.mark.parametrize("mode", ["sequential", "chunked"])
def test_gradcheck_float64(monkeypatch, mode):
    monkeypatch.setattr(reference, "_BLOCK_ELEMS", 6 * 8)  # blocks of 6 and 1 positions
    monkeypatch.setattr(reference, "_MIN_BLOCK", 1)
    monkeypatch.setattr(reference, "_SEQ_MIN", 1 if mode == "sequential" else 10**9)
    inputs = make_inputs(1, 4, 7, 2, 2)
    names = list(inputs)

    def fn(*args):
        y, last = selective_scan(**dict(zip(names, args)), return_last_state=True)
        return y, last

    assert torch.autograd.gradcheck(fn, tuple(inputs.values()), eps=1e-6, atol=1e-6)


# Low-precision inputs: state and accumulation are fp32, so against the fp32 computation on the same
# (rounded) inputs only the final rounding of y and of the gradients remains.
LOW_PRECISION_TOL = {torch.bfloat16: 2e-2, torch.float16: 4e-3}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_against_fp32(dtype):
    inputs = make_inputs(2, 8, 40, 4, 2, dtype=torch.float32)
    low = {k: None if v is None else v.detach().to(dtype).requires_grad_() for k, v in inputs.items()}
    high = {k: None if v is None else v.detach().float().requires_grad_() for k, v in low.items()}
    y, last = selective_scan(**low, return_last_state=True)
    assert y.dtype == dtype and last.dtype == torch.float32
    y32, last32 = selective_scan(**high, return_last_state=True)
    tol = LOW_PRECISION_TOL[dtype]
    scale = y32.detach().abs().max().item()
    torch.testing.assert_close(y.float(), y32, rtol=tol, atol=tol * scale)
    torch.testing.assert_close(last, last32, rtol=1e-5, atol=1e-5 * last32.detach().abs().max().item())
    y.float().sum().backward()
    y32.sum().backward()
    for name in low:
        if low[name] is None:
            continue
        g, g32 = low[name].grad, high[name].grad
        assert g.dtype == dtype, name
        torch.testing.assert_close(g.float(), g32, rtol=tol, atol=tol * g32.abs().max().item(), msg=name)


def test_long_sequence_stays_finite():
    b, d, n, length = 1, 4, 4, 16384
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(b, d, length, generator=gen)
    # channel 0: strong decay (delta*A ~ -160 per step), channel 3: almost none (delta ~ 1e-4)
    delta = torch.tensor([10.0, 0.0, -3.0, -9.0])[None, :, None].expand(b, d, length).clone()
    A = -torch.tensor([16.0, 4.0, 1.0, 0.01])[:, None].expand(d, n).clone()
    B, C = torch.randn(b, 1, n, length, generator=gen), torch.randn(b, 1, n, length, generator=gen)
    leaves = [t.requires_grad_() for t in (u, delta, A, B, C)]
    y, last = selective_scan(u, delta, A, B, C, D=torch.ones(d), return_last_state=True)
    assert torch.isfinite(y).all() and torch.isfinite(last).all()
    # y at the last position = <C_L, h_L> + u_L (D = 1)
    torch.testing.assert_close(y[..., -1], (last * C[:, 0, :, -1][:, None]).sum(-1) + u[..., -1])
    (y.sum() + last.sum()).backward()
    for t in leaves:
        assert torch.isfinite(t.grad).all()


def test_empty_sequence():
    inputs = make_inputs(1, 2, 0, 3, 1, dtype=torch.float32)
    y, last = selective_scan(**inputs, return_last_state=True)
    assert y.shape == (1, 2, 0) and torch.equal(last, torch.zeros(1, 2, 3))


def test_block_plan_bounds_memory():
    length, per_pos = 100_003, 2 * 192 * 16
    plan = reference._plan(length, per_pos)
    assert plan[0][0] == 0 and sum(size for _, size, _, _ in plan) == length
    assert all(start + size == nxt for (start, size, _, _), (nxt, *_) in itertools.pairwise(plan))
    # a block's working tensors hold at most max(_BLOCK_ELEMS, _MIN_BLOCK * per_pos) elements, whatever L
    bound = max(reference._BLOCK_ELEMS, reference._MIN_BLOCK * per_pos)
    assert all(t * nc >= size and size * per_pos <= bound for _, size, t, nc in plan)
    assert len(plan) > 100
    assert all(nc == 1 for *_, nc in plan)  # one position is large: sequential blocks
    small = reference._plan(4096, 2 * 192)  # N = 1: chunked blocks, T ~ nc ~ sqrt(S)
    assert all(nc > 1 and abs(t - nc) <= 2 for *_, t, nc in small)


def test_flop_counter_counts_the_scan():
    b, d, length, n = 2, 8, 32, 4
    inputs = make_inputs(b, d, length, n, 2, dtype=torch.float32)
    with FlopCounterMode(display=False) as counter:
        selective_scan(**inputs).sum().backward()
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    assert counts["geomamba.selective_scan"] == 9 * b * d * length * n
    assert counts["geomamba.selective_scan_bwd"] == 2 * 9 * b * d * length * n


def test_opcheck_custom_op():
    inputs = make_inputs(1, 4, 6, 2, 2, dtype=torch.float32)
    args = (*inputs.values(), True, "ref")
    result = torch.library.opcheck(torch.ops.geomamba.selective_scan.default, args)
    assert set(result.values()) == {"SUCCESS"}


def _bad(**overrides):
    inputs = {k: v.detach() if v is not None else None for k, v in make_inputs(2, 8, 5, 4, 2).items()}
    inputs.update(overrides)
    return inputs


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"u": torch.randn(2, 8)}, r"u must have shape \(batch, D, L\)"),
        ({"delta": torch.randn(2, 8, 6)}, "delta must have u's shape"),
        ({"A": torch.randn(7, 4)}, r"A must have shape \(D=8, N\)"),
        ({"B": torch.randn(2, 3, 4, 5)}, "B has G=3 groups, which does not divide D=8"),
        ({"C": torch.randn(2, 2, 3, 5)}, "C has N=3 states but A has N=4"),
        ({"B": torch.randn(2, 2, 4, 6)}, r"B must have shape \(batch=2, G, N=4, L=5\)"),
        ({"C": torch.randn(2, 4, 4, 5)}, "B .* and C .* must have the same shape"),
        ({"D": torch.randn(7)}, r"D must have shape \(D=8,\)"),
        ({"delta_bias": torch.randn(8, 1)}, r"delta_bias must have shape \(D=8,\)"),
        ({"z": torch.randn(2, 8, 4)}, "z must have u's shape"),
        ({"u": torch.ones(2, 8, 5, dtype=torch.long)}, "u must be a floating-point tensor"),
        ({"B": [1.0]}, "B must be a torch.Tensor"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_tensor(overrides, match):
    with pytest.raises(ValueError, match=match):
        selective_scan(**_bad(**overrides))
