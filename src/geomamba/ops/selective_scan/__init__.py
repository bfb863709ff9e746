"""Selective scan (Mamba S6) as a custom op with backend dispatch.

``selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
return_last_state=False, backend="auto")``::

    delta_t = softplus(delta_t + delta_bias)           (softplus only when delta_softplus)
    h_t     = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t     = <C_t, h_t> + D * u_t                      (then y * silu(z) when z is given)

Shapes: u, delta, z ``(batch, D, L)``; A ``(D, N)``; B, C ``(batch, G, N, L)`` with G dividing D
(channel d uses group ``d // (D / G)``; ``(batch, N, L)`` is taken as G = 1); D, delta_bias ``(D,)``.
Output ``(batch, D, L)`` in u's dtype; with ``return_last_state`` also the last state ``(batch, D, N)``
(fp32; fp64 for fp64 inputs). State and accumulation are fp32 whatever the input dtype
(bf16 / fp16 / fp32), fp64 for fp64 inputs.

Backends: see :mod:`geomamba.ops.selective_scan._backends` (``"auto"``, ``"ref"``, ``"triton"``;
environment variable ``GEOMAMBA_SCAN_BACKEND``). ``selective_scan_naive`` is the executable
specification (tests and benchmarks only).
"""

from __future__ import annotations

import torch
from torch import Tensor

from geomamba.ops.selective_scan import _op  # noqa: F401  (registers the custom ops)
from geomamba.ops.selective_scan._backends import (
    ENV_VAR,
    BackendUnavailableError,
    available_backends,
    get_backend,
    register_backend,
    resolve_backend,
)
from geomamba.ops.selective_scan.naive import selective_scan_naive
from geomamba.ops.selective_scan.reference import ref_bwd, ref_fwd
from geomamba.ops.selective_scan.ss2d_reference import ref_ss2d_fwd

__all__ = [
    "ENV_VAR",
    "BackendUnavailableError",
    "available_backends",
    "check_scan_args",
    "register_backend",
    "resolve_backend",
    "selective_scan",
    "selective_scan_naive",
]


def _ref_ss2d_bwd(*args):
    """The reference SS2D backward: the composed path (adjoint reorderings + :func:`ref_bwd`)."""
    from geomamba.ops.ss2d_scan import composed_ss2d_bwd

    return composed_ss2d_bwd(get_backend("ref"), *args)


register_backend(
    "ref",
    fwd=ref_fwd,
    bwd=ref_bwd,
    is_available=lambda: (True, "pure PyTorch"),
    supports_device=lambda device: True,
    ss2d_fwd=ref_ss2d_fwd,
    ss2d_bwd=_ref_ss2d_bwd,
    ss2d_strided=True,
)


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_scan_args(u, delta, A, B, C, D=None, z=None, delta_bias=None, *, where="selective_scan"):
    """Validate the scan's arguments; return B and C as ``(batch, G, N, L)``.

    Raises ``ValueError`` naming the offending tensor and what is wrong."""
    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}
    for name, t in named.items():
        if t is None and name in ("D", "z", "delta_bias"):
            continue
        if not isinstance(t, Tensor):
            raise ValueError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{where}: {name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.device != u.device:
            raise ValueError(f"{where}: {name} is on {t.device} but u is on {u.device}")
    if u.dim() != 3:
        raise ValueError(f"{where}: u must have shape (batch, D, L), got {_shape(u)}")
    batch, dim, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"{where}: delta must have u's shape {_shape(u)} (batch, D, L), got {_shape(delta)}")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"{where}: A must have shape (D={dim}, N), got {_shape(A)}")
    n = A.shape[1]
    out = []
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 3:
            t = t.unsqueeze(1)
        if t.dim() != 4:
            raise ValueError(f"{where}: {name} must have shape (batch, G, N, L), got {_shape(t)}")
        if t.shape[0] != batch or t.shape[3] != length:
            raise ValueError(
                f"{where}: {name} must have shape (batch={batch}, G, N={n}, L={length}), got {_shape(t)}"
            )
        if t.shape[2] != n:
            raise ValueError(
                f"{where}: {name} has N={t.shape[2]} states but A has N={n} ({name}: {_shape(t)})"
            )
        if t.shape[1] == 0 or dim % t.shape[1] != 0:
            raise ValueError(f"{where}: {name} has G={t.shape[1]} groups, which does not divide D={dim}")
        out.append(t)
    if out[0].shape != out[1].shape:
        raise ValueError(f"{where}: B {_shape(out[0])} and C {_shape(out[1])} must have the same shape")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and _shape(t) != (dim,):
            raise ValueError(f"{where}: {name} must have shape (D={dim},), got {_shape(t)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"{where}: z must have u's shape {_shape(u)}, got {_shape(z)}")
    return out[0], out[1]


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    return_last_state: bool = False,
    backend: str = "auto",
):
    """Selective scan, see the module docstring. Returns y ``(batch, D, L)`` (and the last state
    ``(batch, D, N)`` when ``return_last_state``); differentiable in every tensor argument."""
    B, C = check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    y, last, _ = torch.ops.geomamba.selective_scan(
        u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), str(backend)
    )
    return (y, last) if return_last_state else y
