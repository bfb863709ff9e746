"""``ss2d_scan``: the SS2D scan on the image layout, as the custom op ``geomamba::ss2d_scan``.

``ss2d_scan(x, delta, A, B, C, D=None, delta_bias=None, directions=4, backend="auto") -> y``

* x ``(batch, D, H, W)``: the map, shared by all K = ``directions`` scans (never copied K times by a
  fused backend);
* delta ``(batch, K, D, H*W)`` and B, C ``(batch, K, N, H*W)``: per direction, in IMAGE (row-major
  pixel) order: x_proj / dt_proj are pointwise, so they are computed on the image layout;
* A ``(K*D, N)``; D and delta_bias ``(K*D,)`` (direction k owns rows ``k*D .. k*D + D - 1``);
* y ``(batch, D, H, W)`` in x's dtype and memory format (channels-last for a channels-last x) = sum
  over k of the selective scan (softplus on delta + bias) run in direction k's order (0 row-major,
  1 column-major, 2 row-major reversed, 3 column-major reversed) and mapped back to image positions.

The composed path (the fallback of any backend without ``ss2d_fwd``/``ss2d_bwd``): reorder to scan
order + that backend's selective scan (G = K groups) + ``cross_merge``; the backward is the adjoint of
each step (``cross_scan`` of dy, the scan backward, ``cross_merge`` / ``from_scan_order`` of the
gradients). The reference backend's forward computes the same on the image layout without reordering
(``selective_scan/ss2d_reference.py``); its backward is the composed one.

(No ``from __future__ import annotations`` here: ``custom_op`` reads the annotations, and ``Optional``
rather than ``X | None`` because older torch versions infer op schemas from ``typing.Optional`` only.)
"""

# ruff: noqa: UP045

from typing import Optional

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from geomamba.ops.cross_scan import cross_merge, cross_scan, from_scan_order, to_scan_order
from geomamba.ops.selective_scan import check_scan_args
from geomamba.ops.selective_scan._backends import Backend, resolve_backend
from geomamba.ops.selective_scan._op import scan_flops

__all__ = ["composed_ss2d_bwd", "composed_ss2d_fwd", "ss2d_scan"]


def _scan_inputs(x, delta, B, C, directions):
    b, d, h, w = x.shape
    k, length = directions, h * w
    xs = cross_scan(x, k).reshape(b, k * d, length)
    ds = to_scan_order(delta, h, w).reshape(b, k * d, length)
    return xs, ds, to_scan_order(B, h, w), to_scan_order(C, h, w)


def composed_ss2d_fwd(be: Backend, x, delta, A, B, C, D, delta_bias, directions):
    """SS2D forward as reorder + ``be.fwd`` + cross_merge."""
    b, d, h, w = x.shape
    xs, ds, Bs, Cs = _scan_inputs(x, delta, B, C, directions)
    y, _ = be.fwd(xs, ds, A, Bs, Cs, D, None, delta_bias, True)
    return cross_merge(y.view(b, directions, d, h * w), h, w)


def composed_ss2d_bwd(be: Backend, dy, x, delta, A, B, C, D, delta_bias, directions):
    """SS2D backward as the adjoint of :func:`composed_ss2d_fwd`:
    ``(dx, ddelta, dA, dB, dC, dD, ddelta_bias)``."""
    b, d, h, w = x.shape
    k, length = directions, h * w
    xs, ds, Bs, Cs = _scan_inputs(x, delta, B, C, directions)
    dys = cross_scan(dy, k).reshape(b, k * d, length)
    du, dds, dA, dBs, dCs, dD, _, dbias = be.bwd(dys, xs, ds, A, Bs, Cs, D, None, delta_bias, True, None)
    dx = cross_merge(du.view(b, k, d, length), h, w)
    ddelta = from_scan_order(dds.view(b, k, d, length), h, w)
    return dx, ddelta, dA, from_scan_order(dBs, h, w), from_scan_order(dCs, h, w), dD, dbias


def _c(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.contiguous()


def memory_format_of(x: Tensor) -> torch.memory_format:
    """x's memory format: channels-last for a channels-last (not also contiguous) x, else contiguous (the
    SS2D scan's output takes its input's)."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


@torch.library.custom_op("geomamba::ss2d_scan", mutates_args=())
def _ss2d_fwd(
    x: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor],
    delta_bias: Optional[Tensor],
    directions: int,
    backend: str,
) -> Tensor:
    be = resolve_backend(backend, x.device, x.dtype)
    if be.ss2d_fwd is not None and be.ss2d_strided:
        y = be.ss2d_fwd(x, delta, _c(A), _c(B), _c(C), _c(D), _c(delta_bias), directions)
    else:
        args = (_c(x), _c(delta), _c(A), _c(B), _c(C), _c(D), _c(delta_bias), directions)
        y = be.ss2d_fwd(*args) if be.ss2d_fwd is not None else composed_ss2d_fwd(be, *args)
    return y.contiguous(memory_format=memory_format_of(x))


@_ss2d_fwd.register_fake
def _ss2d_fwd_fake(x, delta, A, B, C, D, delta_bias, directions, backend):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format_of(x))


@torch.library.custom_op("geomamba::ss2d_scan_bwd", mutates_args=())
def _ss2d_bwd(
    dy: Tensor,
    x: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor],
    delta_bias: Optional[Tensor],
    directions: int,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(dx, ddelta, dA, dB, dC, dD, ddelta_bias)``; an empty tensor stands for None."""
    be = resolve_backend(backend, x.device, x.dtype)
    args = (_c(dy), _c(x), _c(delta), _c(A), _c(B), _c(C), _c(D), _c(delta_bias), directions)
    grads = be.ss2d_bwd(*args) if be.ss2d_bwd is not None else composed_ss2d_bwd(be, *args)
    return tuple(x.new_empty(0) if g is None else g.contiguous() for g in grads)


@_ss2d_bwd.register_fake
def _ss2d_bwd_fake(dy, x, delta, A, B, C, D, delta_bias, directions, backend):
    return tuple(
        x.new_empty(0) if t is None else t.new_empty(t.shape) for t in (x, delta, A, B, C, D, delta_bias)
    )


def _setup_context(ctx, inputs, output):
    x, delta, A, B, C, D, delta_bias, directions, backend = inputs
    ctx.save_for_backward(x, delta, A, B, C, D, delta_bias)
    ctx.directions, ctx.backend = directions, backend


def _backward(ctx, dy):
    x, delta, A, B, C, D, delta_bias = ctx.saved_tensors
    if dy.is_cuda:  # as the forward's inputs (see ss2d_scan): a copy torch.compile fuses into dy's producer
        dy = dy.contiguous()
    grads = torch.ops.geomamba.ss2d_scan_bwd(
        dy, x, delta, A, B, C, D, delta_bias, ctx.directions, ctx.backend
    )
    present = (x, delta, A, B, C, D, delta_bias)
    return (*(None if t is None else g for g, t in zip(grads, present)), None, None)


_ss2d_fwd.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.geomamba.ss2d_scan)
def _ss2d_fwd_flops(x_shape, delta_shape, A_shape, *args, out_shape=None, **kwargs) -> int:
    b, k, d, length = delta_shape
    return scan_flops(b, k * d, length, A_shape[1])


@register_flop_formula(torch.ops.geomamba.ss2d_scan_bwd)
def _ss2d_bwd_flops(dy_shape, x_shape, delta_shape, A_shape, *args, out_shape=None, **kwargs) -> int:
    b, k, d, length = delta_shape
    return 2 * scan_flops(b, k * d, length, A_shape[1])


def ss2d_scan(
    x: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor] = None,
    delta_bias: Optional[Tensor] = None,
    directions: int = 4,
    backend: str = "auto",
) -> Tensor:
    """The K-direction SS2D scan on the image layout (see the module docstring); differentiable."""
    where = "ss2d_scan"
    if directions not in (1, 2, 4):
        raise ValueError(f"{where}: directions must be 1, 2 or 4, got {directions!r}")
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"{where}: x must have shape (batch, D, H, W), got {getattr(x, 'shape', type(x))}")
    b, d, h, w = x.shape
    k, length = directions, h * w
    for name, t in (("delta", delta), ("B", B), ("C", C)):
        if (
            not isinstance(t, Tensor)
            or t.dim() != 4
            or t.shape[0] != b
            or t.shape[1] != k
            or t.shape[3] != length
        ):
            what = "(batch, K, D, H*W)" if name == "delta" else "(batch, K, N, H*W)"
            raise ValueError(
                f"{where}: {name} must have shape {what} = ({b}, {k}, {'D' if name == 'delta' else 'N'}, "
                f"{h}*{w}), got {getattr(t, 'shape', type(t))}"
            )
    if delta.shape[2] != d:
        raise ValueError(f"{where}: delta must have D={d} channels (x has {d}), got {tuple(delta.shape)}")
    # the same checks as the flat scan (A, D, delta_bias, N, dtypes, devices) on the scan-order shapes
    check_scan_args(
        x.new_empty(()).expand(b, k * d, length),
        delta.new_empty(()).expand(b, k * d, length),  # (shape checked above; no copy of a strided delta)
        A,
        B,
        C,
        D,
        None,
        delta_bias,
        where=where,
    )
    if x.is_cuda:
        # The CUDA kernels read contiguous tensors. Made so here, outside the custom op, a strided input
        # (B and C are slices of one projection) is copied by torch.compile's generated code, fused with
        # its producer, instead of by a strided copy inside the op; a no-op for contiguous tensors.
        x, delta, B, C = (t.contiguous() for t in (x, delta, B, C))
    return torch.ops.geomamba.ss2d_scan(x, delta, A, B, C, D, delta_bias, int(directions), str(backend))
