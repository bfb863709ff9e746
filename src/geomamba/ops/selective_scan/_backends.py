"""The selective-scan backend table and the choice of a backend.

A backend is registered with :func:`register_backend` and provides

* ``fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus) -> (y, last_state)``:
  y ``(batch, D, L)`` in u's dtype, last_state ``(batch, D, N)`` fp32 (fp64 for fp64 inputs);
* ``bwd(dy, u, delta, A, B, C, D, z, delta_bias, delta_softplus, dlast_state=None)
  -> (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)``: each gradient has its input's shape and dtype,
  None where the input is None; the backward recomputes what it needs;
* ``is_available() -> (bool, reason)`` and ``supports_device(device) -> bool``;
* optionally ``fwd_states(u, delta, A, B, C, D, z, delta_bias, delta_softplus) -> (y, last_state,
  states)`` with ``states_shape(batch, D, L, N, G, dtype) -> shape`` (the fake kernel's): a forward that
  also returns an fp32 tensor of saved states (shape ``(0,)`` when it saves none), which the autograd
  formula keeps and hands back as ``bwd(..., states=states)`` (only when its shape is not ``(0,)``), so
  the backward need not recompute them;
* optionally the SS2D image-layout pair ``ss2d_fwd(x, delta, A, B, C, D, delta_bias, directions) -> y``
  and ``ss2d_bwd(dy, x, delta, A, B, C, D, delta_bias, directions)
  -> (dx, ddelta, dA, dB, dC, dD, ddelta_bias)`` (see :func:`geomamba.ops.ss2d_scan`); a backend
  without them runs SS2D as reorder + its ``fwd``/``bwd`` + merge. With ``ss2d_strided=True`` the
  backend's ``ss2d_fwd`` takes x and delta with any strides (no ``contiguous`` copy before the call).
  ``ss2d_layouts`` names the layouts of delta/B/C the pair reads (``"image"``, and ``"lines"`` when it
  also takes the keyword ``layout="lines"``); the op converts other layouts to ``"image"`` for it.
  Optionally ``ss2d_fwd_states`` (the arguments of ``ss2d_fwd``) ``-> (y, states)`` with
  ``ss2d_states_shape(batch, D, H, W, K, N, layout) -> shape``: as ``fwd_states`` for the SS2D pair
  (fp32 states, ``(0,)`` when none; handed back as ``ss2d_bwd(..., states=states)``).
  ``ss2d_dt=True``: the pair (and ``ss2d_fwd_states``) also take ``dt_weight=(K, D, R)``, with delta then
  dt_proj's input ``(batch, K, R, H*W)`` (projected inside, see ``ops.ss2d_scan.project_dt``); its
  ``ss2d_bwd`` still returns the gradient of the projected delta. ``ss2d_channels_last=True``: the
  forwards also take ``channels_last=True`` (y in the channels-last memory format, made in their merge)
  and ``ss2d_bwd`` takes dy in any memory format (the op does not copy a channels-last dy first).

Choice (:func:`resolve_backend`): ``"auto"`` (or the ``GEOMAMBA_SCAN_BACKEND`` environment variable,
which overrides ``"auto"`` only) takes the first of ``_PREFERENCE`` that is registered, available and
supports the tensors' device (for float64 tensors: the reference, the only one computing in fp64), and
logs once per device type which one it took and why the faster ones were skipped. An explicitly named backend that cannot run raises :class:`BackendUnavailableError`
saying why and how to fix it; an unknown name raises ``ValueError``.

The optional backends live in modules imported lazily, once (``_OPTIONAL``): ``geomamba.ops.triton``
registers ``"triton"`` when triton and CUDA can be used. An import failure is recorded with its reason
(never swallowed silently: it is logged by ``"auto"`` and raised for an explicit request).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "ENV_VAR",
    "Backend",
    "BackendUnavailableError",
    "available_backends",
    "get_backend",
    "register_backend",
    "resolve_backend",
]

log = logging.getLogger("geomamba.ops")

ENV_VAR = "GEOMAMBA_SCAN_BACKEND"
# Fastest first; "auto" takes the first one that can run.
_PREFERENCE = ("triton", "ref")
# Backend name -> module that registers it when imported.
_OPTIONAL = {"triton": "geomamba.ops.triton"}
# Device types an optional backend can serve: "auto" does not import it for other devices.
_OPTIONAL_DEVICES = {"triton": ("cuda",)}
# Backends that compute in fp64 for fp64 inputs: "auto" gives fp64 inputs to these only.
_FP64_BACKENDS = ("ref",)
_HOW_TO_FIX = {
    "triton": "install the GPU extra (`pip install 'geomamba[gpu]'`, which brings triton), put the tensors "
    "on a CUDA device, or use backend='ref' (the pure-PyTorch reference, any device)",
}


class BackendUnavailableError(RuntimeError):
    """A selective-scan backend was requested explicitly but cannot run here (the message says why)."""


@dataclass(frozen=True)
class Backend:
    """One entry of the backend table (see the module docstring for each callable's contract)."""

    name: str
    fwd: Callable
    bwd: Callable
    is_available: Callable[[], tuple[bool, str]]
    supports_device: Callable[[torch.device], bool]
    ss2d_fwd: Callable | None = None
    ss2d_bwd: Callable | None = None
    ss2d_strided: bool = False
    fwd_states: Callable | None = None
    states_shape: Callable | None = None
    ss2d_layouts: tuple[str, ...] = ("image",)
    ss2d_fwd_states: Callable | None = None
    ss2d_states_shape: Callable | None = None
    ss2d_dt: bool = False
    ss2d_channels_last: bool = False


_BACKENDS: dict[str, Backend] = {}
_IMPORT_ERRORS: dict[str, str] = {}
_IMPORTED: set[str] = set()
_LOGGED: set[tuple[str, str, str]] = set()
_LOCK = threading.Lock()


def register_backend(
    name: str,
    *,
    fwd: Callable,
    bwd: Callable,
    is_available: Callable[[], tuple[bool, str]],
    supports_device: Callable[[torch.device], bool],
    ss2d_fwd: Callable | None = None,
    ss2d_bwd: Callable | None = None,
    ss2d_strided: bool = False,
    fwd_states: Callable | None = None,
    states_shape: Callable | None = None,
    ss2d_layouts: tuple[str, ...] = ("image",),
    ss2d_fwd_states: Callable | None = None,
    ss2d_states_shape: Callable | None = None,
    ss2d_dt: bool = False,
    ss2d_channels_last: bool = False,
) -> Backend:
    """Add (or replace) backend ``name`` in the table and return its entry."""
    if not name or not isinstance(name, str) or name == "auto":
        raise ValueError(f"register_backend: invalid backend name {name!r}")
    if (ss2d_fwd is None) != (ss2d_bwd is None):
        raise ValueError(f"register_backend({name!r}): give both ss2d_fwd and ss2d_bwd or neither")
    if (fwd_states is None) != (states_shape is None):
        raise ValueError(f"register_backend({name!r}): give both fwd_states and states_shape or neither")
    if (ss2d_fwd_states is None) != (ss2d_states_shape is None) or (ss2d_fwd_states and ss2d_fwd is None):
        raise ValueError(
            f"register_backend({name!r}): give both ss2d_fwd_states and ss2d_states_shape or neither "
            "(and only with ss2d_fwd / ss2d_bwd)"
        )
    entry = Backend(
        name,
        fwd,
        bwd,
        is_available,
        supports_device,
        ss2d_fwd,
        ss2d_bwd,
        ss2d_strided=ss2d_strided,
        fwd_states=fwd_states,
        states_shape=states_shape,
        ss2d_layouts=tuple(ss2d_layouts),
        ss2d_fwd_states=ss2d_fwd_states,
        ss2d_states_shape=ss2d_states_shape,
        ss2d_dt=bool(ss2d_dt and ss2d_fwd is not None),
        ss2d_channels_last=bool(ss2d_channels_last and ss2d_fwd is not None),
    )
    _BACKENDS[name] = entry
    return entry


def _import_optional(name: str) -> None:
    """Import the module that registers backend ``name`` (once); record why it failed."""
    module = _OPTIONAL.get(name)
    if module is None or name in _IMPORTED:
        return
    with _LOCK:
        if name in _IMPORTED:
            return
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                _IMPORT_ERRORS[name] = f"module {module} is not part of this installation"
            else:
                _IMPORT_ERRORS[name] = f"importing {module} failed: {type(exc).__name__}: {exc}"
        except Exception as exc:  # any import-time failure is recorded and reported, never hidden
            _IMPORT_ERRORS[name] = f"importing {module} failed: {type(exc).__name__}: {exc}"
        else:
            if name not in _BACKENDS:
                _IMPORT_ERRORS[name] = f"{module} was imported but did not register backend {name!r}"
        _IMPORTED.add(name)


def _why_not(name: str, device: torch.device) -> str | None:
    """None if backend ``name`` can run on ``device``, else the reason."""
    _import_optional(name)
    entry = _BACKENDS.get(name)
    if entry is None:
        return _IMPORT_ERRORS.get(name, f"backend {name!r} is not registered")
    ok, reason = entry.is_available()
    if not ok:
        return f"backend {name!r} is not available: {reason}"
    if not entry.supports_device(device):
        return f"backend {name!r} does not support {device.type} tensors"
    return None


def _known_names() -> list[str]:
    return sorted(set(_BACKENDS) | set(_OPTIONAL) | {"auto"})


def resolve_backend(name: str, device: torch.device | str, dtype: torch.dtype | None = None) -> Backend:
    """The backend that runs a scan requested as ``name`` for tensors on ``device``; with ``dtype``
    float64, ``"auto"`` only considers backends that compute in fp64 (the reference)."""
    device = torch.device(device)
    if not isinstance(name, str):
        raise ValueError(f"backend must be a string, got {type(name).__name__}")
    requested = name
    if name == "auto":
        name = os.environ.get(ENV_VAR, "").strip() or "auto"
    if name != "auto":
        if name not in _BACKENDS and name not in _OPTIONAL:
            source = f" (from the environment variable {ENV_VAR})" if requested == "auto" else ""
            raise ValueError(
                f"unknown selective-scan backend {name!r}{source}; known backends: {', '.join(_known_names())}"
            )
        reason = _why_not(name, device)
        if reason is not None:
            source = f" (set by {ENV_VAR})" if requested == "auto" else ""
            fix = _HOW_TO_FIX.get(name, "use backend='ref' (the pure-PyTorch reference, any device)")
            raise BackendUnavailableError(
                f"selective-scan backend {name!r}{source} cannot run on {device.type} tensors: {reason}. "
                f"To fix: {fix}."
            )
        return _BACKENDS[name]
    skipped = []
    for candidate in _PREFERENCE:
        if candidate in _OPTIONAL_DEVICES and device.type not in _OPTIONAL_DEVICES[candidate]:
            skipped.append(f"{candidate}: runs on {'/'.join(_OPTIONAL_DEVICES[candidate])} tensors only")
            continue
        if dtype == torch.float64 and candidate not in _FP64_BACKENDS:
            skipped.append(
                f"{candidate}: float64 inputs are computed in fp64 by {', '.join(_FP64_BACKENDS)} only"
            )
            continue
        reason = _why_not(candidate, device)
        if reason is None:
            _log_choice(candidate, device, skipped)
            return _BACKENDS[candidate]
        skipped.append(f"{candidate}: {reason}")
    raise BackendUnavailableError(f"no selective-scan backend can run on {device.type}: {'; '.join(skipped)}")


def _log_choice(name: str, device: torch.device, skipped: list[str]) -> None:
    key = (name, device.type, "; ".join(skipped))
    if key in _LOGGED:
        return
    _LOGGED.add(key)
    why = f" (skipped {'; '.join(skipped)})" if skipped else ""
    # A GPU run falling back to the reference is worth a warning; on CPU the reference is expected.
    level = logging.WARNING if device.type == "cuda" and skipped else logging.INFO
    log.log(level, "selective scan on %s tensors: backend %r%s", device.type, name, why)


def get_backend(name: str) -> Backend:
    """The registered entry ``name`` (importing its optional module first); KeyError if absent."""
    _import_optional(name)
    if name not in _BACKENDS:
        raise KeyError(f"backend {name!r} is not registered ({_IMPORT_ERRORS.get(name, 'unknown name')})")
    return _BACKENDS[name]


def available_backends(device: torch.device | str = "cpu") -> dict[str, str]:
    """Every known backend with ``"ok"`` or the reason it cannot run on ``device``."""
    device = torch.device(device)
    return {name: _why_not(name, device) or "ok" for name in _known_names() if name != "auto"}
