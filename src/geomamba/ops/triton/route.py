"""Which SS2D path the Triton backend runs for a shape: the fused kernels or the composed path.

The fused SS2D kernels (``ss2d_fwd`` / ``ss2d_bwd``) read x in each direction's order and merge the K
directions in place; the composed path is cross_scan / reorder + the Triton plain scan + cross_merge
(``geomamba.ops.ss2d_scan.composed_ss2d_fwd`` / ``_bwd`` with this backend). Both compute the same
function. The rule below sends a shape to the fused kernels only where they were measured faster on an
H100 (``bench/scan_gpu.py``, ``bench/NOTES_triton.md``); everything else runs composed, so SS2D on CUDA
is never slower than the composed path at the measured shapes. Forward and backward are decided
separately (they are separate custom ops).

Rule (:func:`fused_ss2d`): fused when ``N <= FUSED_MAX_STATE`` and ``H * W <= FUSED_MAX_PIXELS`` for the
phase (forward / backward). The environment variable ``GEOMAMBA_SS2D_FUSED`` overrides it:
``auto`` (default, the rule), ``1`` / ``always``, ``0`` / ``never``.
"""

from __future__ import annotations

import os

import torch

from geomamba.ops.triton.ss2d_launch import ss2d_bwd, ss2d_fwd, ss2d_states_shape

__all__ = [
    "ENV_FUSED",
    "FUSED_MAX_PIXELS",
    "FUSED_MAX_STATE",
    "fused_ss2d",
    "ss2d_bwd_routed",
    "ss2d_fwd_routed",
    "ss2d_fwd_states_routed",
    "ss2d_states_shape_routed",
]

ENV_FUSED = "GEOMAMBA_SS2D_FUSED"

# Largest map (H * W) run fused, per phase; 0 = never. H100, bf16, N = 1, K = 4, batch 16 and 32, fused
# vs composed time (bench/scan_gpu.py, bench/ss2d_route_gpu.py, bench/bwd_sweep_gpu.py,
# bench/NOTES_triton.md): forward fused 2.6x faster at 64x64, 2.7-3.8x at 32x32, 3.4-6.5x at 16x16;
# backward fused 1.69x at 64x64 and 1.95x at 32x32 (round 3: column-major directions through transposed
# copies, ss2d_launch.COL_COPY_MIN_PIXELS), 2.8x at 16x16 (gather). Larger maps were not measured: composed.
FUSED_MAX_PIXELS = {"forward": 4096, "backward": 4096}
# Largest d_state run fused (the fused kernels were measured at N = 1; N = 16 runs composed).
FUSED_MAX_STATE = 1

_ALWAYS = ("1", "always", "fused", "true", "yes")
_NEVER = ("0", "never", "composed", "false", "no")


def fused_ss2d(h: int, w: int, n: int, *, backward: bool) -> bool:
    """Whether the Triton backend runs an ``H x W`` SS2D scan with d_state ``n`` on the fused kernels."""
    env = os.environ.get(ENV_FUSED, "auto").strip().lower() or "auto"
    if env in _ALWAYS:
        return True
    if env in _NEVER:
        return False
    if env != "auto":
        raise ValueError(
            f"{ENV_FUSED}={env!r} is not understood: use auto, 1/always (fused kernels) or 0/never "
            "(cross_scan + Triton scan + cross_merge)"
        )
    limit = FUSED_MAX_PIXELS["backward" if backward else "forward"]
    return n <= FUSED_MAX_STATE and h * w <= limit


def _triton_backend():
    from geomamba.ops.selective_scan._backends import get_backend

    return get_backend("triton")


def _both_fused(h, w, n):
    return fused_ss2d(h, w, n, backward=False) and fused_ss2d(h, w, n, backward=True)


def ss2d_states_shape_routed(batch, dm, h, w, k, n, layout="image"):
    """Shape of the states :func:`ss2d_fwd_states_routed` returns: those of the fused kernels when both
    phases run fused (``ss2d_launch.ss2d_states_shape``), else ``(0,)``."""
    return ss2d_states_shape(batch, dm, h, w, k, n, layout) if _both_fused(h, w, n) else (0,)


def ss2d_fwd_routed(
    x, delta, A, B, C, D=None, delta_bias=None, directions=4, *, layout="image", dt_weight=None,
    channels_last=False,
):  # fmt: skip
    """The backend's SS2D forward: fused kernels or the composed path, by :func:`fused_ss2d`
    (``dt_weight``: dt_proj fused, see ``ss2d_launch.ss2d_fwd``; the composed path projects delta first;
    ``channels_last``: y in that memory format)."""
    if fused_ss2d(x.shape[-2], x.shape[-1], A.shape[-1], backward=False):
        return ss2d_fwd(
            x, delta, A, B, C, D, delta_bias, directions, layout=layout, dt_weight=dt_weight,
            channels_last=channels_last,
        )  # fmt: skip
    from geomamba.ops.ss2d_scan import composed_ss2d_fwd, project_dt

    if dt_weight is not None:
        delta = project_dt(delta, dt_weight)
    y = composed_ss2d_fwd(_triton_backend(), x, delta, A, B, C, D, delta_bias, directions, layout=layout)
    return y.contiguous(memory_format=torch.channels_last) if channels_last else y


def ss2d_fwd_states_routed(
    x, delta, A, B, C, D=None, delta_bias=None, directions=4, *, layout="image", dt_weight=None,
    channels_last=False,
):  # fmt: skip
    """``(y, states)``: the forward and the states its backward reads (shape
    :func:`ss2d_states_shape_routed`; ``(0,)``: none, the backward recomputes)."""
    if _both_fused(x.shape[-2], x.shape[-1], A.shape[-1]):
        return ss2d_fwd(
            x,
            delta,
            A,
            B,
            C,
            D,
            delta_bias,
            directions,
            layout=layout,
            return_states=True,
            dt_weight=dt_weight,
            channels_last=channels_last,
        )
    y = ss2d_fwd_routed(
        x, delta, A, B, C, D, delta_bias, directions, layout=layout, dt_weight=dt_weight,
        channels_last=channels_last,
    )  # fmt: skip
    return y, x.new_empty(0, dtype=torch.float32)


def ss2d_bwd_routed(
    dy,
    x,
    delta,
    A,
    B,
    C,
    D=None,
    delta_bias=None,
    directions=4,
    *,
    layout="image",
    states=None,
    dt_weight=None,
):
    """The backend's SS2D backward: fused kernels or the composed path, by :func:`fused_ss2d`
    (``states``: from :func:`ss2d_fwd_states_routed`, read by the fused kernels; ``dt_weight``: as for
    the forward, ddelta is the projected delta's gradient; dy in any memory format)."""
    if fused_ss2d(x.shape[-2], x.shape[-1], A.shape[-1], backward=True):
        return ss2d_bwd(
            dy,
            x,
            delta,
            A,
            B,
            C,
            D,
            delta_bias,
            directions,
            layout=layout,
            states=states,
            dt_weight=dt_weight,
        )
    from geomamba.ops.ss2d_scan import composed_ss2d_bwd, project_dt

    if dt_weight is not None:
        delta = project_dt(delta, dt_weight)
    return composed_ss2d_bwd(
        _triton_backend(), dy.contiguous(), x, delta, A, B, C, D, delta_bias, directions, layout=layout
    )
