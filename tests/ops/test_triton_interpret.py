"""CPU coverage of the Triton scan kernels: their math under the Triton interpreter, argument checks.

The interpreter runs in a subprocess (``TRITON_INTERPRET=1`` must precede triton's import); the cases
live in ``_triton_interpret_cases.py``. Kernel errors are relative errors against float64 references,
the kernels computing in fp32: they must stay under 1e-4 (2^-5 for the case with bf16 inputs, outputs and
partial sums, which the interpreter truncates).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")

CASES = Path(__file__).with_name("_triton_interpret_cases.py")
SRC = Path(__file__).resolve().parents[2] / "src"
_PLAIN_ALL = {"y", "last_state", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"}
_SS2D_ALL = {"y", "dx", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias"}
# the cases whose forward stores states: whether it stored some, whether the backward read them
_SS2D_STATES = _SS2D_ALL | {"stored", "ignored"}
EXPECTED = {
    "plain_N4_G2_all": _PLAIN_ALL,
    "plain_N1_G1_bare": {"y", "last_state", "du", "ddelta", "dA", "dB", "dC"},
    "plain_N1_L1": _PLAIN_ALL,
    "plain_N1_G2_all": _PLAIN_ALL,
    "plain_N16_G1": _PLAIN_ALL - {"dz"},
    "plain_N16_seq_4groups": _PLAIN_ALL,
    "plain_N16_seq_prefetch": _PLAIN_ALL,
    "plain_N16_seq_prefetch_even": _PLAIN_ALL - {"dz"},
    "plain_N16_seq_bf16_words": _PLAIN_ALL - {"ddelta_bias"},
    "strided_copy": {"transpose", "add_cast", "directions"},
    "permuted_copy": {"merge_cl", "split"},
    "ss2d_K4_5x3": _SS2D_ALL,
    "ss2d_K4_20x3_N2": _SS2D_ALL,
    "ss2d_K2_4x6": _SS2D_ALL,
    "ss2d_K4_13x9_cols": _SS2D_ALL,
    "ss2d_K4_13x9_t3_atomic": _SS2D_ALL,
    "ss2d_K4_13x9_colcopy": _SS2D_ALL,
    "ss2d_K2_5x7_colcopy_atomic": _SS2D_ALL,
    "ss2d_K4_13x9_lines": _SS2D_ALL,
    "ss2d_K2_5x7_lines_partial": _SS2D_ALL,
    "ss2d_K4_5x3_lines_gather": _SS2D_ALL,
    "ss2d_K4_13x23_lines_states": _SS2D_STATES,
    "ss2d_K2_9x15_lines_states_N2": _SS2D_STATES,
    "ss2d_K4_13x23_lines_bf16": _SS2D_STATES,
    "ss2d_K4_13x23_lines_cl": _SS2D_STATES | {"layout"},
    "ss2d_K2_9x15_lines_cl_N2": _SS2D_ALL | {"layout"},
    "ss2d_K4_13x23_lines_dt": _SS2D_STATES,
    "ss2d_K2_9x15_lines_dt_N2": _SS2D_STATES,
    "ss2d_K4_13x23_lines_dt_dot_bf16": _SS2D_STATES,
    "dwconv_k3_bias": {"y", "dx", "dweight", "dbias"},
    "dwconv_k3_nobias": {"y", "dx", "dweight"},
    "dwconv_k5_nobias": {"y", "dx", "dweight"},
    "dt_proj_one_block": {"ddts", "dweight"},
    "dt_proj_blocks": {"ddts", "dweight"},
    "dt_proj_fp16": {"ddts", "dweight"},
    "plain_N2_G2_atomic_dbc": _PLAIN_ALL - {"dz"},
    "plain_N1_G2_states": _PLAIN_ALL,
    "plain_N4_G1_states": _PLAIN_ALL - {"dz"},
    "plain_N1_states_short_fwd_chunks": _PLAIN_ALL - {"dz"},
}


@pytest.fixture(scope="module")
def interpreted():
    env = dict(
        os.environ,
        TRITON_INTERPRET="1",
        PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run([sys.executable, str(CASES)], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"{CASES.name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    return result


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_kernels_match_reference_under_interpreter(interpreted, case):
    errs = interpreted[case]
    assert set(errs) == EXPECTED[case]
    tol = {"add_cast": 2**-8, "merge_cl": 2**-8}  # bf16 outputs (the interpreter truncates)
    if case.endswith("_bf16"):  # bf16 outputs and partial sums, truncated: a few units of 2^-8
        tol = dict.fromkeys(errs, 2**-5) | {"stored": 1e-4, "ignored": 1e-4}
    if case.endswith("_fp16"):  # fp16 inputs and outputs: a unit of 2^-11 or so
        tol = dict.fromkeys(errs, 1e-3)
    bad = {name: err for name, err in errs.items() if not err < tol.get(name, 1e-4)}
    assert not bad, f"{case}: relative errors above tolerance: {bad}"


def _scan_inputs(batch=1, dim=4, length=8, n=2, groups=2):
    return (
        torch.randn(batch, dim, length),
        torch.randn(batch, dim, length),
        -torch.rand(dim, n),
        torch.randn(batch, groups, n, length),
        torch.randn(batch, groups, n, length),
    )


@pytest.mark.parametrize(
    ("index", "bad", "needle"),
    [
        (1, torch.randn(1, 4, 9), "delta"),
        (2, -torch.rand(3, 2), "A must be"),
        (3, torch.randn(1, 3, 2, 8), "G dividing 4"),
        (3, torch.randn(1, 2, 3, 8), "N=2"),
        (4, torch.randn(1, 2, 2, 7), "C must"),
    ],
)
def test_scan_bad_arguments_name_the_tensor(index, bad, needle):
    from geomamba.ops.triton import selective_scan_fwd

    args = list(_scan_inputs())
    args[index] = bad
    with pytest.raises(ValueError, match=needle):
        selective_scan_fwd(*args)


def test_scan_rejects_large_state_and_bad_optional_shapes():
    from geomamba.ops.triton import selective_scan_fwd

    u, delta, A, B, C = _scan_inputs(n=2)
    with pytest.raises(ValueError, match="delta_bias"):
        selective_scan_fwd(u, delta, A, B, C, None, None, torch.zeros(5))
    with pytest.raises(ValueError, match="z must"):
        selective_scan_fwd(u, delta, A, B, C, None, torch.zeros(1, 4, 3))
    u, delta, A, B, C = _scan_inputs(n=17, groups=1)
    with pytest.raises(ValueError, match="N <= 16"):
        selective_scan_fwd(u, delta, A, B, C)


def test_ss2d_bad_arguments_name_the_tensor():
    from geomamba.ops.triton import ss2d_fwd

    x = torch.randn(1, 4, 3, 5)
    delta, A = torch.randn(1, 4, 4, 15), -torch.rand(16, 1)
    B = C = torch.randn(1, 4, 1, 15)
    with pytest.raises(ValueError, match="directions"):
        ss2d_fwd(x, delta, A, B, C, None, None, 3)
    with pytest.raises(ValueError, match="image order"):
        ss2d_fwd(x, delta[:, :2], A, B, C, None, None, 4)
    with pytest.raises(ValueError, match="B must"):
        ss2d_fwd(x, delta, A, B[..., :7], C, None, None, 4)
    with pytest.raises(ValueError, match=r"D must be \(16,\)"):
        ss2d_fwd(x, delta, A, B, C, torch.ones(4), None, 4)


def test_availability_reports_a_reason():
    import geomamba.ops.triton as tr

    ok, reason = tr.is_available()
    assert isinstance(reason, str) and reason
    assert ok == (torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8)
    assert tr.supports_device("cuda:0") and not tr.supports_device(torch.device("cpu"))
