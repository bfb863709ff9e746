"""The Triton backend's choice between the fused SS2D kernels and the composed path (CPU: no kernel runs)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from geomamba.ops.triton import route


@pytest.mark.parametrize(
    ("h", "w", "n", "backward", "expected"),
    [
        (16, 16, 1, False, True),
        (64, 64, 1, True, True),
        (65, 64, 1, False, False),  # larger than any measured map
        (16, 16, 16, False, False),  # N = 16 was measured slower fused
        (16, 16, 2, True, False),
    ],
)
def test_rule_follows_the_measured_table(monkeypatch, h, w, n, backward, expected):
    monkeypatch.delenv(route.ENV_FUSED, raising=False)
    monkeypatch.setattr(route, "FUSED_MAX_PIXELS", {"forward": 4096, "backward": 4096})
    monkeypatch.setattr(route, "FUSED_MAX_STATE", 1)
    assert route.fused_ss2d(h, w, n, backward=backward) is expected


def test_phases_are_decided_separately(monkeypatch):
    monkeypatch.delenv(route.ENV_FUSED, raising=False)
    monkeypatch.setattr(route, "FUSED_MAX_PIXELS", {"forward": 4096, "backward": 256})
    assert route.fused_ss2d(32, 32, 1, backward=False)
    assert not route.fused_ss2d(32, 32, 1, backward=True)


@pytest.mark.parametrize(
    ("value", "expected"), [("always", True), ("1", True), ("never", False), ("0", False)]
)
def test_environment_overrides_the_rule(monkeypatch, value, expected):
    monkeypatch.setenv(route.ENV_FUSED, value)
    assert route.fused_ss2d(512, 512, 16, backward=False) is expected
    assert route.fused_ss2d(4, 4, 1, backward=True) is expected


def test_unknown_environment_value_is_an_error(monkeypatch):
    monkeypatch.setenv(route.ENV_FUSED, "sometimes")
    with pytest.raises(ValueError, match="GEOMAMBA_SS2D_FUSED='sometimes'"):
        route.fused_ss2d(16, 16, 1, backward=False)


def test_routed_entry_points_call_the_chosen_path(monkeypatch):
    """ss2d_fwd_routed / ss2d_bwd_routed (the backend's SS2D pair) run the fused kernels or the composed
    path with the Triton backend, as the rule says."""
    import importlib

    ss2d_scan_mod = importlib.import_module("geomamba.ops.ss2d_scan")  # the module, not the function
    calls = []
    monkeypatch.setattr(route, "ss2d_fwd", lambda *a, **kw: calls.append("fused_fwd"))
    monkeypatch.setattr(route, "ss2d_bwd", lambda *a, **kw: calls.append("fused_bwd"))
    monkeypatch.setattr(
        ss2d_scan_mod, "composed_ss2d_fwd", lambda be, *a, **kw: calls.append(("fwd", be.name))
    )
    monkeypatch.setattr(
        ss2d_scan_mod, "composed_ss2d_bwd", lambda be, *a, **kw: calls.append(("bwd", be.name))
    )
    monkeypatch.setattr(route, "_triton_backend", lambda: type("B", (), {"name": "triton"})())
    x = torch.zeros(1, 2, 8, 8)
    A1, A16 = torch.zeros(8, 1), torch.zeros(8, 16)
    monkeypatch.delenv(route.ENV_FUSED, raising=False)
    route.ss2d_fwd_routed(x, None, A1, None, None)
    route.ss2d_bwd_routed(x, x, None, A16, None, None)
    monkeypatch.setenv(route.ENV_FUSED, "never")
    route.ss2d_fwd_routed(x, None, A1, None, None)
    assert calls == ["fused_fwd", ("bwd", "triton"), ("fwd", "triton")]


def test_backend_registers_the_routed_pair():
    from geomamba.ops.selective_scan._backends import get_backend

    be = get_backend("triton")
    assert be.ss2d_fwd is route.ss2d_fwd_routed and be.ss2d_bwd is route.ss2d_bwd_routed


def test_shipped_rule_at_the_flagship_maps(monkeypatch):
    """The measured decision (route.py): forward and backward fused at 64x64, 32x32 and 16x16 (round 3:
    the backward's column-major directions go through transposed copies from 32x32 up); larger maps and
    d_state 16 composed."""
    from geomamba.ops.triton.ss2d_launch import COL_COPY_MIN_PIXELS, SS2D_DEFAULTS

    monkeypatch.delenv(route.ENV_FUSED, raising=False)
    for backward in (False, True):
        assert all(route.fused_ss2d(s, s, 1, backward=backward) for s in (64, 32, 16))
        assert not route.fused_ss2d(128, 128, 1, backward=backward)
    assert not route.fused_ss2d(16, 16, 16, backward=False)
    assert 16 * 16 < COL_COPY_MIN_PIXELS <= 32 * 32
    assert SS2D_DEFAULTS["backward_large"].col_copy and not SS2D_DEFAULTS["backward"].col_copy


@pytest.mark.parametrize("capturing", [False, True])
def test_backward_options_while_a_graph_is_captured(monkeypatch, capturing):
    """The fused backward's default: transposed copies from 32x32 eagerly, from 16x16 while a CUDA graph
    is captured (replays pay no launch); gather below; a CPU map never asks CUDA."""
    from geomamba.ops.triton import ss2d_launch

    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: capturing)
    large, small = ss2d_launch.SS2D_DEFAULTS["backward_large"], ss2d_launch.SS2D_DEFAULTS["backward"]

    class FakeCuda:  # only shape and is_cuda are read
        is_cuda = True

        def __init__(self, h, w):
            self.shape = (2, 8, h, w)

    assert ss2d_launch.backward_options(FakeCuda(32, 32)) is large
    assert ss2d_launch.backward_options(FakeCuda(16, 16)) is (large if capturing else small)
    assert ss2d_launch.backward_options(FakeCuda(8, 16)) is small
    assert ss2d_launch.backward_options(torch.zeros(1, 1, 16, 16)) is small


def test_fused_forward_warps_by_map():
    """The fused SS2D forward's N = 1 tile (2 channels x up to 512 positions): 2 warps at 16x16 (256
    positions: measured faster than 4), 4 from 32x32; small maps keep one warp per 64 elements; an
    explicit config is taken as given."""
    from geomamba.ops.triton.launch import ScanConfig, pick_config

    def warps(length, **kw):
        return pick_config(1, 1024, length, backward=False, ss2d=True, **kw)[1].num_warps

    assert [warps(hw * hw) for hw in (4, 8, 16, 32, 64)] == [1, 2, 2, 4, 4]
    assert warps(256, override=ScanConfig(2, 256, 4)) == 4
    assert pick_config(1, 1024, 256, backward=True, ss2d=True)[1] == ScanConfig(2, 128, 1)
