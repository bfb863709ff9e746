"""Backend table and dispatch: "auto", "ref", the environment variable, errors, SS2D fallback."""

import logging

import pytest
import torch

from geomamba.ops import BackendUnavailableError, available_backends, selective_scan, ss2d_scan
from geomamba.ops.selective_scan import _backends, ref_bwd, ref_fwd, register_backend, resolve_backend


def tiny(dtype=torch.float32):
    return (
        torch.randn(1, 4, 6, dtype=dtype),
        torch.randn(1, 4, 6, dtype=dtype),
        -torch.rand(4, 2, dtype=dtype),
        torch.randn(1, 2, 2, 6, dtype=dtype),
        torch.randn(1, 2, 2, 6, dtype=dtype),
    )


@pytest.fixture
def clean_table(monkeypatch):
    """Isolate the backend table, import records and the log-once set."""
    monkeypatch.setattr(_backends, "_BACKENDS", dict(_backends._BACKENDS))
    monkeypatch.setattr(_backends, "_IMPORT_ERRORS", dict(_backends._IMPORT_ERRORS))
    monkeypatch.setattr(_backends, "_IMPORTED", set(_backends._IMPORTED))
    monkeypatch.setattr(_backends, "_LOGGED", set())
    monkeypatch.delenv(_backends.ENV_VAR, raising=False)


def counting_backend(name, calls, *, ss2d=False, available=(True, "")):
    def fwd(*args):
        calls.append("fwd")
        return ref_fwd(*args)

    def bwd(*args):
        calls.append("bwd")
        return ref_bwd(*args)

    extra = {}
    if ss2d:

        def ss2d_fwd(x, *args):
            calls.append("ss2d_fwd")
            return torch.zeros_like(x)

        def ss2d_bwd(dy, x, delta, A, B, C, D, delta_bias, directions):
            calls.append("ss2d_bwd")
            return tuple(
                None if t is None else torch.zeros_like(t) for t in (x, delta, A, B, C, D, delta_bias)
            )

        extra = {"ss2d_fwd": ss2d_fwd, "ss2d_bwd": ss2d_bwd}
    return register_backend(
        name,
        fwd=fwd,
        bwd=bwd,
        is_available=lambda: available,
        supports_device=lambda device: device.type == "cpu",
        **extra,
    )


def test_auto_on_cpu_takes_ref_and_logs_once(clean_table, caplog):
    with caplog.at_level(logging.INFO, logger="geomamba.ops"):
        assert resolve_backend("auto", "cpu").name == "ref"
        assert resolve_backend("auto", "cpu").name == "ref"
    records = [r for r in caplog.records if r.name == "geomamba.ops"]
    assert len(records) == 1
    assert "'ref'" in records[0].getMessage() and "triton" in records[0].getMessage()


def test_explicit_backend_is_called_forward_and_backward(clean_table):
    calls = []
    counting_backend("counting", calls)
    u, delta, A, B, C = (t.requires_grad_() for t in tiny())
    y = selective_scan(u, delta, A, B, C, backend="counting")
    y.sum().backward()
    assert calls == ["fwd", "bwd"]
    torch.testing.assert_close(y, selective_scan(u, delta, A, B, C, backend="ref"))


def test_env_var_overrides_auto_only(clean_table, monkeypatch):
    calls = []
    counting_backend("counting", calls)
    monkeypatch.setenv(_backends.ENV_VAR, "counting")
    selective_scan(*tiny())
    assert calls == ["fwd"]
    selective_scan(*tiny(), backend="ref")  # an explicit name wins over the variable
    assert calls == ["fwd"]
    monkeypatch.setenv(_backends.ENV_VAR, "no_such_backend")
    with pytest.raises(ValueError, match=r"unknown selective-scan backend 'no_such_backend' \(from the env"):
        selective_scan(*tiny())


def test_auto_gives_float64_to_the_reference(clean_table, monkeypatch):
    counting_backend("fast", [])
    monkeypatch.setattr(_backends, "_PREFERENCE", ("fast", "ref"))
    assert resolve_backend("auto", "cpu", torch.float32).name == "fast"
    assert resolve_backend("auto", "cpu", torch.float64).name == "ref"


def test_unknown_backend_name(clean_table):
    with pytest.raises(ValueError, match="unknown selective-scan backend 'fast'; known backends: auto, ref"):
        selective_scan(*tiny(), backend="fast")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_explicit_triton_without_cuda_raises_a_clear_error(clean_table):
    with pytest.raises(BackendUnavailableError) as info:
        selective_scan(*tiny(), backend="triton")
    message = str(info.value)
    assert "'triton' cannot run on cpu tensors" in message
    assert "To fix:" in message and "backend='ref'" in message


def test_failed_optional_import_is_recorded_and_reported(clean_table, monkeypatch):
    monkeypatch.setitem(_backends._OPTIONAL, "broken", "geomamba.ops._no_such_module_for_test")
    monkeypatch.setattr(_backends, "_PREFERENCE", ("broken", "ref"))
    with pytest.raises(
        BackendUnavailableError, match=r"module geomamba\.ops\._no_such_module_for_test is not part"
    ):
        resolve_backend("broken", "cpu")
    assert "broken" in available_backends("cpu") and available_backends("cpu")["ref"] == "ok"
    assert resolve_backend("auto", "cpu").name == "ref"  # auto skips it, with the reason logged


def test_unavailable_and_wrong_device(clean_table):
    counting_backend("off", [], available=(False, "driver too old"))
    with pytest.raises(BackendUnavailableError, match="not available: driver too old"):
        resolve_backend("off", "cpu")
    counting_backend("cpuonly", [])
    with pytest.raises(BackendUnavailableError, match="does not support meta tensors"):
        resolve_backend("cpuonly", "meta")


def test_register_backend_validates():
    with pytest.raises(ValueError, match="invalid backend name"):
        register_backend(
            "auto", fwd=ref_fwd, bwd=ref_bwd, is_available=lambda: (True, ""), supports_device=bool
        )
    with pytest.raises(ValueError, match="both ss2d_fwd and ss2d_bwd"):
        register_backend(
            "half",
            fwd=ref_fwd,
            bwd=ref_bwd,
            is_available=lambda: (True, ""),
            supports_device=bool,
            ss2d_fwd=id,
        )


def ss2d_inputs():
    x = torch.randn(1, 2, 3, 3, requires_grad=True)
    rest = [torch.randn(1, 4, 2, 9), torch.randn(8, 1).neg().exp().neg(), torch.randn(1, 4, 1, 9)]
    delta, A, B = (t.requires_grad_() for t in rest)
    return x, delta, A, B, torch.randn(1, 4, 1, 9)


def test_ss2d_uses_backend_pair_when_present_else_composed_path(clean_table):
    calls = []
    counting_backend("plain", calls)
    inputs = ss2d_inputs()
    y = ss2d_scan(*inputs, backend="plain")
    y.sum().backward()
    assert calls == ["fwd", "bwd"]  # composed path on that backend
    torch.testing.assert_close(y, ss2d_scan(*inputs, backend="ref"))
    calls.clear()
    counting_backend("fused", calls, ss2d=True)
    x, *rest = ss2d_inputs()
    y = ss2d_scan(x, *rest, backend="fused")
    y.sum().backward()
    assert calls == ["ss2d_fwd", "ss2d_bwd"] and torch.equal(y, torch.zeros_like(y))
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_saved_forward_states_reach_the_backward_eager_and_compiled(clean_table):
    """A backend with ``fwd_states``: the op's third output is saved by autograd and handed to
    ``bwd(..., states=...)`` (eager, and under torch.compile whose fake kernel takes its shape from
    ``states_shape``); ``selective_scan`` itself still returns y only."""
    seen = []

    def fwd_states(*args):
        y, last = ref_fwd(*args)
        return y, last, torch.full((3, 5), 7.0)

    def bwd(*args, states=None):
        seen.append(None if states is None else states.clone())
        return ref_bwd(*args)

    register_backend(
        "stateful",
        fwd=ref_fwd,
        bwd=bwd,
        is_available=lambda: (True, ""),
        supports_device=lambda device: True,
        fwd_states=fwd_states,
        states_shape=lambda batch, dim, length, n, groups, dtype: (3, 5),
    )
    u, delta, A, B, C = tiny()
    ref_grads = []
    for fn in (
        lambda *a: selective_scan(*a, backend="ref"),
        lambda *a: selective_scan(*a, backend="stateful"),
        torch.compile(lambda *a: selective_scan(*a, backend="stateful"), backend="aot_eager"),
    ):
        leaves = [t.clone().requires_grad_() for t in (u, delta, A, B, C)]
        y = fn(*leaves)
        assert isinstance(y, torch.Tensor) and y.shape == u.shape
        y.square().sum().backward()
        ref_grads.append([t.grad for t in leaves])
    assert len(seen) == 2 and all(s is not None and s.shape == (3, 5) and (s == 7).all() for s in seen)
    for grads in ref_grads[1:]:
        for g, r in zip(grads, ref_grads[0], strict=True):
            torch.testing.assert_close(g, r)
    with pytest.raises(ValueError, match="fwd_states and states_shape"):
        register_backend(
            "half", fwd=ref_fwd, bwd=ref_bwd, is_available=lambda: (True, ""),
            supports_device=lambda d: True, fwd_states=fwd_states,
        )  # fmt: skip


def test_saved_ss2d_states_reach_the_backward_eager_and_compiled(clean_table):
    """A backend with ``ss2d_fwd_states``: the SS2D op's second output is saved by autograd and handed to
    ``ss2d_bwd(..., states=...)`` (eager, and under torch.compile, whose fake kernel asks
    ``ss2d_states_shape`` with the map's shape); ``ss2d_scan`` returns y only; the gradients are the
    reference's."""
    from geomamba.ops.selective_scan import get_backend

    ref, seen, asked = get_backend("ref"), [], []

    def fwd_states(*args, **kw):
        return ref.ss2d_fwd(*args, **kw), torch.full((2, 3), 5.0)

    def bwd(*args, states=None, **kw):
        seen.append(None if states is None else states.clone())
        return ref.ss2d_bwd(*args, **kw)

    def states_shape(batch, dm, h, w, k, n, layout):
        asked.append((batch, dm, h, w, k, n, layout))
        return (2, 3)

    register_backend(
        "stateful2d", fwd=ref_fwd, bwd=ref_bwd, is_available=lambda: (True, ""),
        supports_device=lambda device: True, ss2d_fwd=ref.ss2d_fwd, ss2d_bwd=bwd,
        ss2d_fwd_states=fwd_states, ss2d_states_shape=states_shape,
    )  # fmt: skip
    inputs = ss2d_inputs()
    grads = []
    for fn in (
        lambda *a: ss2d_scan(*a, backend="ref"),
        lambda *a: ss2d_scan(*a, backend="stateful2d"),
        torch.compile(lambda *a: ss2d_scan(*a, backend="stateful2d"), backend="aot_eager"),
    ):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        y = fn(*leaves)
        assert isinstance(y, torch.Tensor) and y.shape == leaves[0].shape
        y.square().sum().backward()
        grads.append([t.grad for t in leaves])
    assert len(seen) == 2 and all(s is not None and s.shape == (2, 3) and (s == 5).all() for s in seen)
    assert asked and set(asked) == {(1, 2, 3, 3, 4, 1, "image")}
    for g in grads[1:]:
        for a, b in zip(g, grads[0], strict=True):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="ss2d_fwd_states and ss2d_states_shape"):
        register_backend(
            "half2d", fwd=ref_fwd, bwd=ref_bwd, is_available=lambda: (True, ""),
            supports_device=lambda d: True, ss2d_fwd=ref.ss2d_fwd, ss2d_bwd=bwd, ss2d_fwd_states=fwd_states,
        )  # fmt: skip
