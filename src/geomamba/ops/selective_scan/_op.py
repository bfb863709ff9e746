"""The custom ops ``geomamba::selective_scan`` and ``geomamba::selective_scan_bwd``.

Both are ``torch.library.custom_op``s with fake (meta) kernels, so ``torch.compile`` treats the scan as
one opaque op and ``FlopCounterMode`` sees it (FLOP formulas registered below). The implementation
resolves the backend named by its ``backend`` argument (``"auto"`` included) and calls that backend's
``fwd``/``bwd``; the autograd formula calls the backward op, which recomputes.

The forward op returns ``(y, last_state, states)``: ``states`` is an implementation detail of the
autograd formula (saved for the backward, never returned by ``selective_scan``): the fp32 chunk-entry
states of a backend with ``fwd_states`` (the Triton backend on CUDA, N small enough), else an empty
``(0,)`` tensor; the backward op takes it back and skips recomputing them.

(No ``from __future__ import annotations`` here: ``custom_op`` reads the annotations, and ``Optional``
rather than ``X | None`` because older torch versions infer op schemas from ``typing.Optional`` only.)
"""

# ruff: noqa: UP045

from typing import Optional

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from geomamba.ops.selective_scan._backends import resolve_backend

__all__ = ["state_dtype"]


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the state / accumulation for inputs of ``dtype``: fp64 for fp64, else fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _c(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.contiguous()


@torch.library.custom_op("geomamba::selective_scan", mutates_args=())
def _scan_fwd(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor],
    z: Optional[Tensor],
    delta_bias: Optional[Tensor],
    delta_softplus: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    be = resolve_backend(backend, u.device, u.dtype)
    args = (_c(u), _c(delta), _c(A), _c(B), _c(C), _c(D), _c(z), _c(delta_bias), delta_softplus)
    if be.fwd_states is not None:
        y, last, states = be.fwd_states(*args)
    else:
        y, last = be.fwd(*args)
        states = u.new_empty(0, dtype=torch.float32)
    return y.contiguous(), last.contiguous(), states.contiguous()


def _states_shape(be, u, A, B) -> tuple[int, ...]:
    if be.states_shape is None:
        return (0,)
    return tuple(be.states_shape(u.shape[0], u.shape[1], u.shape[2], A.shape[1], B.shape[1], u.dtype))


@_scan_fwd.register_fake
def _scan_fwd_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend):
    be = resolve_backend(backend, u.device, u.dtype)
    return (
        u.new_empty(u.shape),
        u.new_empty((u.shape[0], u.shape[1], A.shape[1]), dtype=state_dtype(u.dtype)),
        u.new_empty(_states_shape(be, u, A, B), dtype=torch.float32),
    )


@torch.library.custom_op("geomamba::selective_scan_bwd", mutates_args=())
def _scan_bwd(
    dy: Tensor,
    dlast_state: Optional[Tensor],
    states: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor],
    z: Optional[Tensor],
    delta_bias: Optional[Tensor],
    delta_softplus: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)``; an empty tensor stands for None.
    ``states``: the forward op's third output (a ``(0,)`` tensor: none saved)."""
    be = resolve_backend(backend, u.device, u.dtype)
    extra = {} if states.dim() == 1 and states.numel() == 0 else {"states": states}
    grads = be.bwd(
        _c(dy),
        _c(u),
        _c(delta),
        _c(A),
        _c(B),
        _c(C),
        _c(D),
        _c(z),
        _c(delta_bias),
        delta_softplus,
        _c(dlast_state),
        **extra,
    )
    return tuple(u.new_empty(0) if g is None else g.contiguous() for g in grads)


@_scan_bwd.register_fake
def _scan_bwd_fake(dy, dlast_state, states, u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend):
    return tuple(
        u.new_empty(0) if t is None else t.new_empty(t.shape) for t in (u, delta, A, B, C, D, z, delta_bias)
    )


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2])
    ctx.mark_non_differentiable(output[2])
    ctx.delta_softplus, ctx.backend = delta_softplus, backend


def _backward(ctx, dy, dlast_state, dstates):
    u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
    grads = torch.ops.geomamba.selective_scan_bwd(
        dy, dlast_state, states, u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, ctx.backend
    )
    present = (u, delta, A, B, C, D, z, delta_bias)
    return (*(None if t is None else g for g, t in zip(grads, present)), None, None)


_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def scan_flops(batch: int, dim: int, length: int, d_state: int) -> int:
    """FLOPs counted for one selective scan: about 9 per (batch, channel, position, state)."""
    return 9 * batch * dim * length * d_state


@register_flop_formula(torch.ops.geomamba.selective_scan)
def _scan_fwd_flops(u_shape, delta_shape, A_shape, *args, out_shape=None, **kwargs) -> int:
    return scan_flops(u_shape[0], u_shape[1], u_shape[2], A_shape[1])


@register_flop_formula(torch.ops.geomamba.selective_scan_bwd)
def _scan_bwd_flops(
    dy_shape, dlast_shape, states_shape, u_shape, delta_shape, A_shape, *args, out_shape=None, **kwargs
):
    # the backward is counted as twice the forward, the convention FlopCounterMode uses for matmuls
    return 2 * scan_flops(u_shape[0], u_shape[1], u_shape[2], A_shape[1])
