"""Python launchers of the fused SS2D kernels: ``ss2d_fwd`` / ``ss2d_bwd`` and their options.

Shapes: x ``(batch, Dm, H, W)``; delta ``(batch, K, Dm, H*W)`` and B, C ``(batch, K, N, H*W)`` in image
(row-major) order (``layout="image"``) or with directions 1 and 3 column-major (``layout="lines"``, see
``geomamba.ops.cross_scan.to_line_order``; the gradients come back in the same layout); A ``(K*Dm, N)``;
D, delta_bias ``(K*Dm,)``. State and accumulation are fp32 whatever
the input dtype (the "lines" kernels' two partial sums of y / dx between directions take the input dtype
unless ``SS2DOptions.partials_fp32``); outputs and gradients take their input's dtype. The kernels are those of the plain scan
(``scan_fwd.py``, ``scan_bwd.py``) with ``SS2D=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from geomamba.ops.cross_scan import LAYOUTS, from_line_order, to_line_order
from geomamba.ops.ss2d_scan import memory_format_of, project_dt
from geomamba.ops.triton.copy import permuted_copy_, strided_copy_, transposed
from geomamba.ops.triton.launch import (
    ScanConfig,
    _check,
    _device_ctx,
    _use_partial,
    in_input_dtypes,
    optional_inputs,
    or_dummy,
    pick_config,
)
from geomamba.ops.triton.scan_bwd import scan_bwd_kernel
from geomamba.ops.triton.scan_fwd import scan_fwd_kernel

__all__ = [
    "COL_COPY_MIN_PIXELS",
    "COL_COPY_MIN_PIXELS_CAPTURED",
    "SS2D_DEFAULTS",
    "SS2DOptions",
    "backward_options",
    "ss2d_bwd",
    "ss2d_fwd",
    "ss2d_states_shape",
]


@dataclass(frozen=True)
class SS2DOptions:
    """How the fused SS2D kernels address the column-major directions and merge the K directions.

    ``col_t3``: True = transpose (3-D memory-order tile flattened by ``tl.reshape``: loads contiguous
    along the image rows); False = gather (sequence-order offsets, 2-D tiles, strided loads).
    ``columns``: most image columns per column-major chunk (0 = as many as fill the chunk). ``seq_k``:
    one program runs the K directions in turn and merges y / dx with plain loads and stores (False: one
    program per direction, fp32 atomics). ``dbc_atomic``: dB/dC by atomics (False: per-block partial
    sums, summed by the launcher). ``col_copy`` (with ``seq_k``): the kernel scans every direction as
    coalesced rows of the ``"lines"`` layout: the launcher transposes x (and dy) into the column-major
    order, and for ``layout="image"`` inputs also the column-major directions' delta/B/C (and their
    gradients back); the column-major directions' y / dx are merged back by one transposed add
    (``col_t3`` and ``columns`` are then unused). A kernel that does not read the caller's layout gets
    converted inputs (``cross_scan.to_line_order`` / ``from_line_order``). ``partials_fp32`` (``col_copy``):
    keep the row and the column directions' partial sums of y / dx in fp32 between directions and for the
    merge; False (default) keeps them in the input dtype: each pair of directions is summed in fp32 and
    rounded once, as the composed path rounds every direction's output before its cross-merge, and the
    kernels and merges move half the bytes (the state and the scans stay fp32).

    Defaults per phase: ``SS2D_DEFAULTS``. On an H100 (triton 3.6) the transposed tiles gave wrong
    BACKWARD gradients for some tiles (e.g. (rows, TO, TI) = (4, 4, 32) with 2 warps, (2, 16, 32) with
    4 warps; the forward was right everywhere it was measured), so the backward gathers on small maps
    and uses ``col_copy`` from ``COL_COPY_MIN_PIXELS`` up, from ``COL_COPY_MIN_PIXELS_CAPTURED`` while a
    CUDA graph is captured (:func:`backward_options`, bench/NOTES_triton.md)."""

    col_t3: bool = False
    columns: int = 0
    seq_k: bool = True
    dbc_atomic: bool = False
    col_copy: bool = False
    partials_fp32: bool = False


# Options per phase when the caller gives none (bench/ss2d_route_gpu.py and bench/bwd_sweep_gpu.py
# measured them; see SS2DOptions). The backward of maps with at least COL_COPY_MIN_PIXELS pixels uses
# "backward_large" (transposed copies, the plain backward tile): on an H100, bf16, batch 16, N = 1, K = 4
# it took 1.45 ms at 64x64 (gather 6.58, composed 2.44) and 0.80 ms at 32x32 (gather 1.16, composed 1.56),
# but 1.03 ms at 16x16, where gather took 0.46 (round 3, bench/NOTES_triton.md). With the tiled copies
# (ops/triton/copy.py) its dB/dC atomics beat the partial sums at all four flagship shapes it serves (batch
# 32, replayed from a CUDA graph: e.g. 1.56 vs 1.80 ms at 256 x 64x64, 0.42 vs 0.49 at 256 x 32x32;
# bench/ss2d_copy_gpu.py), while the gather backward keeps the partial sums (1.12 vs 0.73 ms at 1024 x 16x16).
SS2D_DEFAULTS = {
    "forward": SS2DOptions(col_t3=True),
    "backward": SS2DOptions(col_t3=False),
    "backward_large": SS2DOptions(col_copy=True, dbc_atomic=True),
    # inputs in the "lines" layout: every direction a row scan, only x / dy transposed (and y / dx back)
    "forward_lines": SS2DOptions(col_copy=True),
    "backward_lines": SS2DOptions(col_copy=True, dbc_atomic=True),
}
COL_COPY_MIN_PIXELS = 1024
# The "lines" forward picks the states it stores for the backward by one masked sum per segment of the
# chunk (False: masked per-element stores, loop-invariant pointer tiles in forward order)
STATES_BY_SUM = True
# While a CUDA graph is captured (the compiled training step under ``reduce-overhead``) a replay pays no
# launch and the copies run the tiled Triton kernel, so the transposed copies pay from 16x16 up: GPU time
# of graph replays, H100, bf16, batch 16, d_inner 1024, 16x16: 0.267 ms against 0.406 for the gather
# backward (bench/ss2d_sweep_gpu.py; eagerly the gather stays: its launches are fewer and the host bounds it).
COL_COPY_MIN_PIXELS_CAPTURED = 256


def backward_options(x: torch.Tensor, layout: str = "image") -> SS2DOptions:
    """The backward's default options for the map ``x (batch, D, H, W)``: ``SS2D_DEFAULTS["backward_lines"]``
    for the ``"lines"`` layout; for ``"image"``, ``SS2D_DEFAULTS["backward_large"]`` (transposed copies)
    from ``COL_COPY_MIN_PIXELS`` pixels up, or from ``COL_COPY_MIN_PIXELS_CAPTURED`` while the current CUDA
    stream is capturing a graph, and ``SS2D_DEFAULTS["backward"]`` (gather) below."""
    if layout == "lines":
        return SS2D_DEFAULTS["backward_lines"]
    capturing = x.is_cuda and torch.cuda.is_current_stream_capturing()
    floor = COL_COPY_MIN_PIXELS_CAPTURED if capturing else COL_COPY_MIN_PIXELS
    return SS2D_DEFAULTS["backward_large" if x.shape[-2] * x.shape[-1] >= floor else "backward"]


def _colmajor_tile(h: int, chunk: int, columns: int = 0) -> tuple[int, int]:
    """(TO columns, TI rows) of a column-major chunk: whole (padded) columns when they fit."""
    ti = min(triton.next_power_of_2(max(h, 1)), chunk)
    to = chunk // ti
    if columns > 0:
        to = min(to, triton.next_power_of_2(columns))
    return max(1, to), ti


def _dirs(t, cols, hh, ww):
    """Directions ``cols`` (``[j]`` or ``[j, j + 2]``) of ``t (batch, K, C, hh*ww)`` as one 4-D view
    ``(batch * len(cols), C, hh, ww)``."""
    b, k, c, _ = t.shape
    v = t.view(b, k, c, hh, ww)
    return (v[:, cols[0] :: 2] if len(cols) > 1 else v[:, cols[0] : cols[0] + 1]).flatten(0, 1)


def _to_col_order(t, cols, h, w):
    """``(batch, K, C, H*W)`` in image order -> a tensor whose directions ``cols`` hold the same values in
    column-major order (``w`` major); the other directions are left unset (the kernel does not read them)."""
    out = torch.empty_like(t)
    strided_copy_(_dirs(out, cols, w, h).transpose(-1, -2), _dirs(t, cols, h, w))
    return out


def _from_col_order(dst, src, cols, h, w):
    """Inverse of ``_to_col_order`` for directions ``cols``: write ``src`` (column-major) into ``dst``."""
    strided_copy_(_dirs(dst, cols, h, w), _dirs(src, cols, w, h).transpose(-1, -2))


def _lines_kernel(opts, k):
    """Whether the kernel reads the "lines" layout (column-major directions as rows) with ``opts``."""
    return opts.col_copy and opts.seq_k and k > 1


def _to_kernel_layout(layout, lines, h, w, *ts):
    """delta/B/C from the caller's ``layout`` to the kernel's (``lines``: the "lines" layout)."""
    if lines == (layout == "lines"):
        return ts
    return tuple((to_line_order if lines else from_line_order)(t, h, w) for t in ts)


def _check_ss2d_args(x, delta, A, B, C, D, delta_bias, directions, layout="image", dt_weight=None):
    _check(directions in (1, 2, 4), f"directions must be 1, 2 or 4, got {directions}")
    _check(layout in LAYOUTS, f"layout must be one of {LAYOUTS}, got {layout!r}")
    _check(x.dim() == 4, f"x must be (batch, D, H, W), got {tuple(x.shape)}")
    batch, dm, h, w = x.shape
    k, length = directions, h * w
    if dt_weight is not None:
        _check(
            dt_weight.dim() == 3 and tuple(dt_weight.shape[:2]) == (k, dm),
            f"dt_weight must be (K={k}, D={dm}, R), got {tuple(dt_weight.shape)}",
        )
        r = dt_weight.shape[2]
        _check(
            tuple(delta.shape) == (batch, k, r, length),
            f"with dt_weight, delta must be dt_proj's input (batch={batch}, K={k}, R={r}, H*W={length}), "
            f"got {tuple(delta.shape)}",
        )
    else:
        _check(
            tuple(delta.shape) == (batch, k, dm, length),
            f"delta must be (batch={batch}, K={k}, D={dm}, H*W={length}) in image order, got {tuple(delta.shape)}",
        )
    _check(A.dim() == 2 and A.shape[0] == k * dm, f"A must be (K*D={k * dm}, N), got {tuple(A.shape)}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        _check(
            tuple(t.shape) == (batch, k, n, length),
            f"{name} must be (batch={batch}, K={k}, N={n}, H*W={length}), got {tuple(t.shape)}",
        )
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            _check(tuple(t.shape) == (k * dm,), f"{name} must be ({k * dm},), got {tuple(t.shape)}")
    return batch, dm, h, w, k, n


# The backward of the "lines" kernel (col_copy), N = 1: tile by map size (first row with H*W >= its bound).
# H100, bf16, batch 16, K = 4, reading the forward's states, partial sums in bf16 (graph replays,
# bench/NOTES_triton.md round 11): 64x64 4 x 64 0.464 ms (2 x 256 0.466, 4 x 128 0.469, 2 x 128 0.508);
# 32x32 4 x 64 0.252 (8 x 64 0.253, 4 x 128 0.259); round 10 (fp32 partials) had 16x16 4 x 64 0.169 (4 x 32
# 0.168, 4 x 128 0.183) and 2 x 128 first at 64x64. Other N: the plain backward's tile.
_BWD_LINES_N1_BY_PIXELS = ((0, ScanConfig(4, 64, 1, 3)),)
# Its forward, N = 1 (None: the plain forward's tile, 4 x 256 with 4 warps), storing the states; same setup
# (bench/ss2d_lines_sweep_gpu.py --fwd-tiles, results/ss2d_lines_fwd_sweep_gpu_nvidia_h100_80gb_hbm3.json):
# 16x16 8 x 64 0.073 ms (4 x 64 0.076, the plain tile 0.088); 32x32 and 64x64 within 1-2% of the best tile.
_FWD_LINES_N1_BY_PIXELS = ((1024, None), (0, ScanConfig(8, 64, 1, 3)))
# The same kernels with dt_proj fused (``dt_weight``), N = 1: tiles of at least 16 rows project delta by one
# ``tl.dot`` per chunk (16-bit inputs), narrower ones by rank-1 updates. The backward's chunk must stay the
# plain lines backward's (the forward stores its states for that chunk; ss2d_states_shape does not know
# whether dt_proj is fused). H100, bf16, batch 16, K = 4, dt_rank 8 / 16 / 32 (bench/ss2d_lines_sweep_gpu.py
# --dt-tiles, results/ss2d_lines_dt_sweep_gpu_nvidia_h100_80gb_hbm3.json): forward 16 x 256 0.343 ms at
# 64x64, 16 x 64 (4 warps) 0.169 at 32x32, 16 x 64 (1 warp) 0.100 at 16x16 (rank-1 updates in 4 x 256
# tiles: 0.381 / 0.314 / 0.342); backward 4 x 64 (rank-1 updates) 0.551 / 0.368 ms at 64x64 / 32x32 (the
# tl.dot tiles 0.44-2.95), 16 x 64 (2 warps, tl.dot) 0.291 at 16x16 (4 x 64 0.342). Unfused (dt_proj's
# matmul + these kernels on its delta): forward 0.332 / 0.171 / 0.097, backward 0.468 / 0.253 / 0.145 ms:
# fusing dt_proj costs time; it saves the delta activation (SS2DCore.fuse_dt_proj).
_BWD_LINES_DT_N1_BY_PIXELS = ((1024, ScanConfig(4, 64, 1, 3)), (0, ScanConfig(16, 64, 2, 3)))
_FWD_LINES_DT_N1_BY_PIXELS = (
    (4096, ScanConfig(16, 256, 4, 3)),
    (1024, ScanConfig(16, 64, 4, 3)),
    (0, ScanConfig(16, 64, 1, 3)),
)
# (dt_proj fused, backward) -> table
_LINES_N1_TABLES = {
    (False, False): _FWD_LINES_N1_BY_PIXELS,
    (False, True): _BWD_LINES_N1_BY_PIXELS,
    (True, False): _FWD_LINES_DT_N1_BY_PIXELS,
    (True, True): _BWD_LINES_DT_N1_BY_PIXELS,
}


def _ss2d_launch_geometry(n, dm, h, w, backward, config, opts, dt=False):
    # col_copy scans every direction as flat rows: the plain scan's tile unless the tables say otherwise
    if config is None and opts.col_copy and n == 1:
        config = next(c for bound, c in _LINES_N1_TABLES[dt, backward] if h * w >= bound)
    npad, cfg = pick_config(n, dm, h * w, backward=backward, ss2d=not opts.col_copy, override=config)
    to_c, ti_c = _colmajor_tile(h, cfg.chunk, opts.columns)
    nc_max = max(triton.cdiv(h * w, cfg.chunk), triton.cdiv(w, to_c) * triton.cdiv(h, ti_c))
    return npad, cfg, to_c, ti_c, nc_max


def _states_chunk(n, dm, h, w, k, layout):
    """Positions per chunk-entry state that the forward stores for the default backward (its chunk),
    or 0 where that backward does not read them: it must run the "lines" kernel (``layout="lines"``,
    K > 1, ``SS2D_DEFAULTS["backward_lines"]``), whose flat chunks the forward's directions share."""
    opts = SS2D_DEFAULTS["backward_lines"]
    if layout != "lines" or not _lines_kernel(opts, k) or h * w == 0:
        return 0
    return _ss2d_launch_geometry(n, dm, h, w, True, None, opts)[1].chunk


def _states_geometry(batch, dm, h, w, k, n, layout):
    """``(chunk, shape)`` of the states the forward stores (``(0, (0,))``: none)."""
    sc = _states_chunk(n, dm, h, w, k, layout)
    return (sc, (batch, k, dm, triton.cdiv(h * w, sc) - 1, n)) if sc else (0, (0,))


def ss2d_states_shape(batch, dm, h, w, k, n, layout="image"):
    """Shape of the states ``ss2d_fwd(..., return_states=True)`` returns (default options) for x
    ``(batch, dm, h, w)``:
    ``(batch, K, dm, cdiv(H*W, chunk) - 1, N)`` fp32 (the state entering each of the default backward's
    chunks after the first, per direction, in its scan order), or ``(0,)`` where none is stored."""
    return _states_geometry(batch, dm, h, w, k, n, layout)[1]


def _accumulator(x, out, k, opts, lines):
    """Where the kernels sum y (dx) over the K directions: ``out`` itself for K = 1, fp32 zeros for the
    atomic merge, else a buffer of x's shape: in x's dtype for the "lines" kernels (their row directions'
    partial sum, unless ``opts.partials_fp32``), fp32 otherwise."""
    if k == 1:
        return out
    if not opts.seq_k:
        return torch.zeros(x.shape, device=x.device, dtype=torch.float32)
    dtype = x.dtype if lines and not opts.partials_fp32 else torch.float32
    return torch.empty(x.shape, device=x.device, dtype=dtype)


def _dt_args(dt_weight, x, k, dm, cfg, npad):
    """Kernel arguments of the fused dt_proj: the weight ``(K*Dm, R)`` in x's dtype and the constexprs
    (``DT_DOT``: one tl.dot per chunk where the tile has >= 16 rows and the inputs are 16-bit)."""
    if dt_weight is None:
        return {}
    r = dt_weight.shape[2]
    dot = cfg.bd * npad >= 16 and cfg.chunk >= 16 and x.dtype in (torch.bfloat16, torch.float16)
    return dict(
        dtw_ptr=dt_weight.detach().to(x.dtype).reshape(k * dm, r).contiguous(),
        DT_R=r,
        DT_RP=max(16, triton.next_power_of_2(r)),
        DT_DOT=dot,
    )


def ss2d_fwd(
    x, delta, A, B, C, D=None, delta_bias=None, directions=4, *, config=None, options=None, layout="image",
    return_states=False, dt_weight=None, channels_last=False,
):  # fmt: skip
    """Fused SS2D scan: ``y (batch, Dm, H, W)`` in x.dtype, the K directional scans merged (summed);
    ``channels_last``: y in the channels-last memory format (the "lines" kernels' merge writes it so, by
    3-D tiles, ``copy.permuted_copy_``: a LayerNorm over the channels then reads contiguous rows; other
    paths convert y).
    ``return_states``: return ``(y, states)``, ``states`` (shape :func:`ss2d_states_shape`) for
    ``ss2d_bwd(..., states=states)``, which then skips recomputing them (``"lines"`` inputs only).
    ``dt_weight`` ``(K, Dm, R)``: delta is dt_proj's input ``(batch, K, R, H*W)`` and the effective delta
    is ``dt_weight @ delta`` per direction (``ops.ss2d_scan.project_dt``); the "lines" kernel computes it
    tile by tile (never written), other paths materialize it first."""
    batch, dm, h, w, k, n = _check_ss2d_args(x, delta, A, B, C, D, delta_bias, directions, layout, dt_weight)
    opts = options or SS2D_DEFAULTS["forward_lines" if layout == "lines" else "forward"]
    lines = _lines_kernel(opts, k)
    if dt_weight is not None and not (lines and layout == "lines"):
        delta, dt_weight = project_dt(delta, dt_weight), None
    x, delta, B, C = x.contiguous(), delta.contiguous(), B.contiguous(), C.contiguous()
    delta, B, C = _to_kernel_layout(layout, lines, h, w, delta, B, C)
    A32 = A.detach().float().contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    y = torch.empty_like(x, memory_format=fmt if lines else torch.contiguous_format)
    sc, st_shape = _states_geometry(batch, dm, h, w, k, n, layout) if return_states and lines else (0, (0,))
    nsc = st_shape[3] if sc else 0  # entries per channel and direction (0: one chunk, none stored)
    states = torch.empty(st_shape, device=x.device, dtype=torch.float32)
    if x.numel() == 0:
        return (y, states) if return_states else y
    acc = _accumulator(x, y, k, opts, lines)
    if lines:
        accT = torch.empty(batch, dm, w, h, device=x.device, dtype=acc.dtype)
        xT = transposed(x)
    else:
        xT = accT = x
    npad, cfg, to_c, ti_c, _ = _ss2d_launch_geometry(n, dm, h, w, False, config, opts, dt_weight is not None)
    n_db = dm // cfg.bd
    progs = batch * n_db * (1 if opts.seq_k else k)
    opt, flags = optional_inputs(D, delta_bias, None, A32, x)
    flags.update(_dt_args(dt_weight, x, k, dm, cfg, npad))
    with _device_ctx(x):
        scan_fwd_kernel[(progs,)](
            x, delta, A32, B, C, *opt, y, acc, A32, states if nsc else A32, xT, accT,
            dm, k, 1, n, h * w, h * w, h, w, n_db, nsc, TINY=False, **flags,
            STORE_LAST=False, SS2D=True, SEQ_K=opts.seq_k, KC=k, COL_T3=opts.col_t3, COL_COPY=lines,
            BD=cfg.bd, NP=npad, CH=cfg.chunk, TO_C=to_c, TI_C=ti_c, STAGES=cfg.num_stages,
            SC=sc if nsc else 0, ST_SUM=STATES_BY_SUM, num_warps=cfg.num_warps,
        )  # fmt: skip
    if lines and channels_last:  # 3-D tiles: channels innermost in y
        y = permuted_copy_(y, accT.transpose(-1, -2), add=acc)
    elif lines:
        y = strided_copy_(y, accT.transpose(-1, -2), add=acc)
    elif k > 1 and not opts.seq_k:  # the atomic merge's fp32 sum
        y = acc.to(x.dtype)
    y = y.contiguous(memory_format=fmt)
    return (y, states) if return_states else y


def ss2d_bwd(
    dy, x, delta, A, B, C, D=None, delta_bias=None, directions=4, *, config=None, options=None, layout="image",
    states=None, dt_weight=None,
):  # fmt: skip
    """Backward of the fused SS2D scan: ``(dx, ddelta, dA, dB, dC, dD, ddelta_bias)``, ddelta/dB/dC in
    ``layout``. ``states``: what ``ss2d_fwd(..., return_states=True)`` returned for these inputs; read
    (instead of recomputing the chunk-entry states) when this backward runs the "lines" kernel with the
    chunk they were stored for. ``dt_weight``: as for :func:`ss2d_fwd` (delta is dt_proj's input);
    ddelta is then the gradient of the effective delta ``(batch, K, Dm, H*W)`` (the caller forms dt_proj's
    gradients from it: ``ops.ss2d_scan``). dy may be channels-last (the gradient of a ``channels_last``
    forward's y): the "lines" kernels' launcher splits it into its channels-first and transposed copies in
    one pass (other paths copy it to channels-first first)."""
    batch, dm, h, w, k, n = _check_ss2d_args(x, delta, A, B, C, D, delta_bias, directions, layout, dt_weight)
    _check(dy.shape == x.shape, f"dy must have x's shape {tuple(x.shape)}, got {tuple(dy.shape)}")
    opts = options or backward_options(x, layout)
    col_copy = _lines_kernel(opts, k)
    # the kernel reads "lines" (col_copy) or "image"; col_copy on "image" inputs transposes the column
    # directions itself (below); a gathering kernel on "lines" inputs gets them in image order
    to_image = layout == "lines" and not col_copy
    native = col_copy and layout == "lines"
    if dt_weight is not None and not native:
        delta, dt_weight = project_dt(delta, dt_weight), None
    dy_cl = dy if col_copy and memory_format_of(dy) == torch.channels_last else None
    x, delta, B, C = x.contiguous(), delta.contiguous(), B.contiguous(), C.contiguous()
    dy = dy.contiguous() if dy_cl is None else torch.empty(x.shape, device=x.device, dtype=dy.dtype)
    if to_image:
        delta, B, C = (from_line_order(t, h, w) for t in (delta, B, C))
    A32 = A.detach().float().contiguous()
    dev, f32 = x.device, torch.float32
    atomic = k > 1 and not opts.seq_k
    dx = torch.empty_like(x)
    dxacc = _accumulator(x, dx, k, opts, col_copy)
    ddelta = torch.empty(batch, k, dm, h * w, device=dev, dtype=delta.dtype)
    dA = torch.zeros(k * dm, n, device=dev, dtype=f32)
    dB = torch.zeros(B.shape, device=dev, dtype=f32)
    dC = torch.zeros(C.shape, device=dev, dtype=f32)
    dD = torch.zeros(k * dm, device=dev, dtype=f32) if D is not None else None
    dbias = torch.zeros(k * dm, device=dev, dtype=f32) if delta_bias is not None else None
    if col_copy:
        cols = [1, 3] if k == 4 else [1]
        accT = torch.empty(batch, dm, w, h, device=dev, dtype=dxacc.dtype)
        xT = transposed(x)
        if dy_cl is None:
            dyT = transposed(dy)
        else:  # one pass: channels-last dy -> channels-first dy and dy^T
            dyT = torch.empty(batch, dm, w, h, device=dev, dtype=dy.dtype)
            permuted_copy_(dy, dy_cl, dst2=dyT.transpose(-1, -2))
        if native:  # the column directions' inputs and gradients are already column-major
            deltaT, BT, CT, ddeltaT, dBT, dCT = delta, B, C, ddelta, dB, dC
        else:
            deltaT, BT, CT = (_to_col_order(t, cols, h, w) for t in (delta, B, C))
            ddeltaT = torch.empty_like(ddelta)
            dBT = torch.zeros(B.shape, device=dev, dtype=f32)
            dCT = torch.zeros(C.shape, device=dev, dtype=f32)
    else:
        xT = deltaT = BT = CT = dyT = accT = ddeltaT = x
    if x.numel() > 0:
        npad, cfg, to_c, ti_c, nc_max = _ss2d_launch_geometry(
            n, dm, h, w, True, config, opts, dt_weight is not None
        )
        n_db = dm // cfg.bd
        progs = batch * n_db * (1 if opts.seq_k else k)
        # the forward's states serve the "lines" kernel when stored for this chunk (nc - 1 entries per
        # channel and direction); one chunk needs none
        nc = triton.cdiv(h * w, cfg.chunk)
        has_st = native and (
            nc == 1 or (states is not None and states.dim() == 5 and states.shape[3] == nc - 1)
        )
        if has_st and nc > 1:
            _check(
                tuple(states.shape) == (batch, k, dm, nc - 1, n) and states.dtype == f32,
                f"states must be fp32 ({batch}, {k}, {dm}, {nc - 1}, {n}) (from ss2d_fwd on these inputs), "
                f"got {states.dtype} {tuple(states.shape)}",
            )
            st, nc_max = states.contiguous(), nc - 1
        elif has_st:
            st, nc_max = dA, 0  # one chunk: every direction starts from the zero state, nothing is read
        else:
            st = torch.empty(progs * nc_max * cfg.bd * npad, device=dev, dtype=f32)
        partial = not opts.dbc_atomic and _use_partial(None, 2 * 4 * batch * k * n_db * n * h * w)
        if partial:
            dBp = torch.empty(batch, k, n_db, n, h * w, device=dev, dtype=f32)
            dCp = torch.empty_like(dBp)
            if col_copy:
                dBT, dCT = (dBp, dCp) if native else (torch.empty_like(dBp), torch.empty_like(dBp))
        opt, flags = optional_inputs(D, delta_bias, None, A32, x)
        flags.update(_dt_args(dt_weight, x, k, dm, cfg, npad))
        with _device_ctx(x):
            scan_bwd_kernel[(progs,)](
                x, delta, A32, B, C, *opt, dy, A32, st,
                dx, dxacc, ddelta, dA, dBp if partial else dB, dCp if partial else dC,
                or_dummy(dD, dA), or_dummy(dbias, dA), dx,
                xT, deltaT, BT, CT, dyT, accT, ddeltaT, dBT if col_copy else dx, dCT if col_copy else dx,
                dm, k, 1, n, h * w, h * w, h, w, n_db, nc_max, TINY=False, **flags, HAS_DLAST=False,
                SS2D=True, SEQ_K=opts.seq_k, KC=k, COL_T3=opts.col_t3,
                DBC_ATOMIC=not partial, COL_COPY=col_copy,
                BD=cfg.bd, NP=npad, CH=cfg.chunk, TO_C=to_c, TI_C=ti_c, STAGES=cfg.num_stages, HAS_ST=has_st,
                num_warps=cfg.num_warps,
            )  # fmt: skip
        if partial:
            dB, dC = dBp.sum(2), dCp.sum(2)
            if col_copy and not native:
                dBT, dCT = dBT.sum(2), dCT.sum(2)
        if atomic:
            dx = dxacc.to(x.dtype)
        if col_copy and not native:
            _from_col_order(ddelta, ddeltaT, cols, h, w)
            _from_col_order(dB, dBT, cols, h, w)
            _from_col_order(dC, dCT, cols, h, w)
        if col_copy:
            strided_copy_(dx, accT.transpose(-1, -2), add=dxacc)
    else:
        ddelta.zero_()
    if to_image:
        ddelta, dB, dC = (to_line_order(t, h, w) for t in (ddelta, dB, dC))
    return (dx, ddelta, *in_input_dtypes((dA, dB, dC, dD, dbias), (A, B, C, D, delta_bias)))
