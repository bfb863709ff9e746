"""``ss2d_scan``: the SS2D scan on the image layout, as the custom op ``geomamba::ss2d_scan``.

``ss2d_scan(x, delta, A, B, C, D=None, delta_bias=None, directions=4, backend="auto", layout="image") -> y``

* x ``(batch, D, H, W)``: the map, shared by all K = ``directions`` scans (never copied K times by a
  fused backend);
* delta ``(batch, K, D, H*W)`` and B, C ``(batch, K, N, H*W)``: per direction, in IMAGE (row-major
  pixel) order (``layout="image"``): x_proj / dt_proj are pointwise, so they are computed on the image
  layout; or with ``layout="lines"`` slices 1 and 3 (the column-major directions) column-major instead
  (``cross_scan.to_line_order``; the reversal is never stored). A pointwise projection writes either
  layout at the same cost, and the fused Triton kernels read ``"lines"`` as contiguous rows (no
  transposed copies of delta/B/C, none of their gradients); the gradients come back in the inputs'
  layout. Backends that read only ``"image"`` get converted inputs;
* A ``(K*D, N)``; D and delta_bias ``(K*D,)`` (direction k owns rows ``k*D .. k*D + D - 1``);
* y ``(batch, D, H, W)`` in x's dtype and memory format (channels-last for a channels-last x, or with
  ``channels_last=True``: a following LayerNorm over the channels then reads contiguous rows; the Triton
  backend's fused merge writes it so directly and splits the channels-last dy in one pass) = sum
  over k of the selective scan (softplus on delta + bias) run in direction k's order (0 row-major,
  1 column-major, 2 row-major reversed, 3 column-major reversed) and mapped back to image positions.

With ``dt_weight`` ``(K, D, R)`` (dt_proj fused), ``delta`` is dt_proj's input ``(batch, K, R, H*W)`` (in
``layout``) and the scan's delta is ``dt_weight @ delta`` per direction (:func:`project_dt`); a backend
registered with ``ss2d_dt`` (Triton's "lines" kernels) computes it inside its kernels, so the
``(batch, K, D, H*W)`` delta is never written, read or saved for the backward; other backends get it
materialized. The gradients of dt_proj's input and weight are formed here from the backend's ddelta.

The forward op returns ``(y, states)``: ``states`` is an implementation detail of the autograd formula
(as for ``geomamba::selective_scan``): the fp32 chunk-entry states of a backend with ``ss2d_fwd_states``
(the Triton backend's fused "lines" kernels), else an empty ``(0,)`` tensor; the backward op takes it
back and skips recomputing them. ``ss2d_scan`` returns y only.

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

from geomamba.ops.cross_scan import (
    LAYOUTS,
    cross_merge,
    cross_scan,
    from_line_order,
    from_scan_order,
    to_line_order,
    to_scan_order,
)
from geomamba.ops.selective_scan import check_scan_args
from geomamba.ops.selective_scan._backends import Backend, resolve_backend
from geomamba.ops.selective_scan._op import scan_flops

__all__ = ["composed_ss2d_bwd", "composed_ss2d_fwd", "project_dt", "ss2d_scan"]


def project_dt(dts: Tensor, dt_weight: Tensor) -> Tensor:
    """dt_proj of every direction: ``(K, D, R) @ (batch, K, R, L) -> (batch, K, D, L)`` in dts's dtype
    (pointwise in the positions, so any layout of them)."""
    return torch.matmul(dt_weight.to(dts.dtype), dts)


def _dt_grads(ddelta: Tensor, dts: Tensor, dt_weight: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of :func:`project_dt`'s input and weight from the projected delta's ``ddelta``."""
    w = dt_weight.to(ddelta.dtype)
    d_dts = torch.matmul(w.transpose(-1, -2), ddelta)  # (K, R, D) @ (batch, K, D, L)
    acc = torch.promote_types(ddelta.dtype, torch.float32)  # the batch sum in fp32 at least
    d_w = torch.matmul(ddelta, dts.to(ddelta.dtype).transpose(-1, -2)).sum(0, dtype=acc)
    return d_dts.to(dts.dtype), d_w.to(dt_weight.dtype)


def _with_dt(be: Backend, delta: Tensor, dt_weight: Optional[Tensor]):
    """``(delta, keyword args)`` for ``be``'s SS2D pair: dt_weight handed on if the pair fuses dt_proj,
    else delta projected here."""
    if dt_weight is None:
        return delta, {}
    if be.ss2d_dt:  # (registered only with an SS2D pair)
        return delta, {"dt_weight": dt_weight}
    return project_dt(delta, dt_weight), {}


def _to_scan(t, h, w, layout):
    """Per-direction tensor in ``layout`` -> scan order (``"lines"``: only the reversed ones change)."""
    if layout == "image":
        return to_scan_order(t, h, w)
    return t if t.shape[1] < 4 else torch.cat([t[:, :2], t[:, 2:].flip(-1)], dim=1)


def _from_scan(t, h, w, layout):
    """Inverse of :func:`_to_scan`."""
    return from_scan_order(t, h, w) if layout == "image" else _to_scan(t, h, w, layout)


def _scan_inputs(x, delta, B, C, directions, layout):
    b, d, h, w = x.shape
    k, length = directions, h * w
    xs = cross_scan(x, k).reshape(b, k * d, length)
    ds = _to_scan(delta, h, w, layout).reshape(b, k * d, length)
    return xs, ds, _to_scan(B, h, w, layout), _to_scan(C, h, w, layout)


def composed_ss2d_fwd(be: Backend, x, delta, A, B, C, D, delta_bias, directions, layout="image"):
    """SS2D forward as reorder + ``be.fwd`` + cross_merge (delta/B/C in ``layout``)."""
    b, d, h, w = x.shape
    xs, ds, Bs, Cs = _scan_inputs(x, delta, B, C, directions, layout)
    y, _ = be.fwd(xs, ds, A, Bs, Cs, D, None, delta_bias, True)
    return cross_merge(y.view(b, directions, d, h * w), h, w)


def composed_ss2d_bwd(be: Backend, dy, x, delta, A, B, C, D, delta_bias, directions, layout="image"):
    """SS2D backward as the adjoint of :func:`composed_ss2d_fwd`:
    ``(dx, ddelta, dA, dB, dC, dD, ddelta_bias)``, ddelta/dB/dC in ``layout``."""
    b, d, h, w = x.shape
    k, length = directions, h * w
    xs, ds, Bs, Cs = _scan_inputs(x, delta, B, C, directions, layout)
    dys = cross_scan(dy, k).reshape(b, k * d, length)
    du, dds, dA, dBs, dCs, dD, _, dbias = be.bwd(dys, xs, ds, A, Bs, Cs, D, None, delta_bias, True, None)
    dx = cross_merge(du.view(b, k, d, length), h, w)
    ddelta = _from_scan(dds.view(b, k, d, length), h, w, layout)
    return dx, ddelta, dA, _from_scan(dBs, h, w, layout), _from_scan(dCs, h, w, layout), dD, dbias


def _c(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.contiguous()


def _native_layout(be: Backend, layout: str, x: Tensor, delta: Tensor, B: Tensor, C: Tensor):
    """``(delta, B, C, keyword args)`` for ``be``'s SS2D pair: ``layout`` if the pair reads it, else the
    inputs converted to ``"image"``."""
    if layout == "image":
        return delta, B, C, {}
    if layout in be.ss2d_layouts:
        return delta, B, C, {"layout": layout}
    h, w = x.shape[-2:]
    return (*(from_line_order(t, h, w) for t in (delta, B, C)), {})


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
    layout: str,
    dt_weight: Optional[Tensor] = None,
    channels_last: bool = False,
) -> tuple[Tensor, Tensor]:
    be = resolve_backend(backend, x.device, x.dtype)
    delta, dt_kw = _with_dt(be, delta, dt_weight)
    states = None
    if be.ss2d_fwd is None:
        args = (_c(x), _c(delta), _c(A), _c(B), _c(C), _c(D), _c(delta_bias), directions)
        y = composed_ss2d_fwd(be, *args, layout=layout)
    else:
        delta, B, C, kw = _native_layout(be, layout, x, delta, B, C)
        if not be.ss2d_strided:
            x, delta = x.contiguous(), delta.contiguous()
        args = (x, delta, _c(A), _c(B), _c(C), _c(D), _c(delta_bias), directions)
        kw.update(dt_kw)
        if channels_last and be.ss2d_channels_last:
            kw["channels_last"] = True
        if be.ss2d_fwd_states is not None:
            y, states = be.ss2d_fwd_states(*args, **kw)
        else:
            y = be.ss2d_fwd(*args, **kw)
    if states is None:
        states = x.new_empty(0, dtype=torch.float32)
    return y.contiguous(memory_format=_y_format(x, channels_last)), states.contiguous()


def _ss2d_states_shape(be, x, A, directions, layout) -> tuple[int, ...]:
    if be.ss2d_fwd is None or be.ss2d_states_shape is None:
        return (0,)
    native = layout == "image" or layout in be.ss2d_layouts
    b, d, h, w = x.shape
    return tuple(be.ss2d_states_shape(b, d, h, w, directions, A.shape[1], layout if native else "image"))


def _y_format(x: Tensor, channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else memory_format_of(x)


@_ss2d_fwd.register_fake
def _ss2d_fwd_fake(
    x, delta, A, B, C, D, delta_bias, directions, backend, layout, dt_weight=None, channels_last=False
):
    be = resolve_backend(backend, x.device, x.dtype)
    return (
        torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_y_format(x, channels_last)),
        x.new_empty(_ss2d_states_shape(be, x, A, directions, layout), dtype=torch.float32),
    )


@torch.library.custom_op("geomamba::ss2d_scan_bwd", mutates_args=())
def _ss2d_bwd(
    dy: Tensor,
    states: Tensor,
    x: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor],
    delta_bias: Optional[Tensor],
    directions: int,
    backend: str,
    layout: str,
    dt_weight: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(dx, ddelta, dA, dB, dC, dD, ddelta_bias, ddt_weight)``; an empty tensor stands for None (with
    dt_weight, ddelta is the gradient of dt_proj's input). ``states``: the forward op's second output
    (a ``(0,)`` tensor: none saved)."""
    be = resolve_backend(backend, x.device, x.dtype)
    dts = delta
    delta, dt_kw = _with_dt(be, delta, dt_weight)
    if be.ss2d_bwd is None:
        args = (_c(dy), _c(x), _c(delta), _c(A), _c(B), _c(C), _c(D), _c(delta_bias), directions)
        grads = composed_ss2d_bwd(be, *args, layout=layout)
    else:
        dl, Bi, Ci, kw = _native_layout(be, layout, x, delta, B, C)
        if not (states.dim() == 1 and states.numel() == 0):
            kw["states"] = states
        dyi = dy if be.ss2d_channels_last else _c(dy)  # (it splits a channels-last dy itself)
        args = (dyi, _c(x), _c(dl), _c(A), _c(Bi), _c(Ci), _c(D), _c(delta_bias), directions)
        grads = be.ss2d_bwd(*args, **kw, **dt_kw)
        if layout != "image" and "layout" not in kw:  # converted to image order: gradients back
            h, w = x.shape[-2:]  # (ddelta, dB, dC are grads 1, 3, 4)
            grads = tuple(to_line_order(g, h, w) if i in (1, 3, 4) else g for i, g in enumerate(grads))
    grads, d_w = list(grads), None
    if dt_weight is not None:  # dt_proj's gradients from the projected delta's
        grads[1], d_w = _dt_grads(grads[1], dts, dt_weight)
    return tuple(x.new_empty(0) if g is None else g.contiguous() for g in (*grads, d_w))


@_ss2d_bwd.register_fake
def _ss2d_bwd_fake(dy, states, x, delta, A, B, C, D, delta_bias, directions, backend, layout, dt_weight=None):
    return tuple(
        x.new_empty(0) if t is None else t.new_empty(t.shape)
        for t in (x, delta, A, B, C, D, delta_bias, dt_weight)
    )


def _setup_context(ctx, inputs, output):
    x, delta, A, B, C, D, delta_bias, directions, backend, layout, dt_weight, channels_last = inputs
    ctx.save_for_backward(x, delta, A, B, C, D, delta_bias, dt_weight, output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.directions, ctx.backend, ctx.layout = directions, backend, layout
    ctx.y_format = _y_format(x, channels_last)


def _backward(ctx, dy, dstates):
    x, delta, A, B, C, D, delta_bias, dt_weight, states = ctx.saved_tensors
    if dy.is_cuda:  # as the forward's inputs (see ss2d_scan): a copy torch.compile fuses into dy's producer
        dy = dy.contiguous(memory_format=ctx.y_format)
    grads = torch.ops.geomamba.ss2d_scan_bwd(
        dy, states, x, delta, A, B, C, D, delta_bias, ctx.directions, ctx.backend, ctx.layout, dt_weight
    )
    present = (x, delta, A, B, C, D, delta_bias)
    out = [None if t is None else g for g, t in zip(grads, present)]
    return (*out, None, None, None, None if dt_weight is None else grads[7], None)


_ss2d_fwd.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.geomamba.ss2d_scan)
def _ss2d_fwd_flops(x_shape, delta_shape, A_shape, *args, out_shape=None, **kwargs) -> int:
    (b, d), (k, length) = x_shape[:2], delta_shape[1::2]  # (delta: dt_proj's input with dt_weight)
    return scan_flops(b, k * d, length, A_shape[1])


@register_flop_formula(torch.ops.geomamba.ss2d_scan_bwd)
def _ss2d_bwd_flops(
    dy_shape, states_shape, x_shape, delta_shape, A_shape, *args, out_shape=None, **kwargs
) -> int:
    (b, d), (k, length) = x_shape[:2], delta_shape[1::2]
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
    layout: str = "image",
    dt_weight: Optional[Tensor] = None,
    channels_last: bool = False,
) -> Tensor:
    """The K-direction SS2D scan on the image layout (see the module docstring); differentiable.
    ``layout``: how delta/B/C hold each direction, ``"image"`` or ``"lines"`` (column-major directions
    column-major). ``dt_weight`` ``(K, D, R)``: delta is dt_proj's input ``(batch, K, R, H*W)``, projected
    by ``dt_weight`` (inside the kernels where the backend fuses it). ``channels_last``: y in the
    channels-last memory format whatever x's."""
    where = "ss2d_scan"
    if directions not in (1, 2, 4):
        raise ValueError(f"{where}: directions must be 1, 2 or 4, got {directions!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"{where}: layout must be one of {LAYOUTS}, got {layout!r}")
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
    if dt_weight is not None:
        if not isinstance(dt_weight, Tensor) or dt_weight.dim() != 3 or tuple(dt_weight.shape[:2]) != (k, d):
            raise ValueError(
                f"{where}: dt_weight must have shape (K, D, R) = ({k}, {d}, R), got "
                f"{getattr(dt_weight, 'shape', type(dt_weight))}"
            )
        if delta.shape[2] != dt_weight.shape[2]:
            raise ValueError(
                f"{where}: with dt_weight, delta is dt_proj's input (batch, K, R={dt_weight.shape[2]}, H*W), "
                f"got {tuple(delta.shape)}"
            )
        if dt_weight.device != x.device:
            raise ValueError(f"{where}: dt_weight is on {dt_weight.device}, x on {x.device}")
    elif delta.shape[2] != d:
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
    return torch.ops.geomamba.ss2d_scan(
        x,
        delta,
        A,
        B,
        C,
        D,
        delta_bias,
        int(directions),
        str(backend),
        str(layout),
        dt_weight,
        bool(channels_last),
    )[0]
