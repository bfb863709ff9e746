"""Python launchers of the Triton selective-scan kernels: the plain scan (the backend's fwd/bwd), the tile
table and the helpers the SS2D launchers (``ss2d_launch.py``) share.

Shapes (plain scan): u, delta, z ``(batch, D, L)``; A ``(D, N)`` fp32; B, C ``(batch, G, N, L)`` with G
dividing D; D, delta_bias ``(D,)``. State and accumulation are fp32 whatever the input dtype; outputs and
gradients take their input's dtype.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton

from geomamba.ops.triton.scan_bwd import scan_bwd_kernel
from geomamba.ops.triton.scan_bwd_seq import scan_bwd_seq_kernel
from geomamba.ops.triton.scan_fwd import scan_fwd_kernel
from geomamba.ops.triton.scan_fwd_n import scan_fwd_n_kernel, scan_fwd_seq_kernel

__all__ = [
    "STATE_LOOP_MIN_N",
    "ScanConfig",
    "pick_config",
    "selective_scan_bwd",
    "selective_scan_fwd",
    "states_chunk",
    "states_shape",
]


@dataclass(frozen=True)
class ScanConfig:
    """Tile of one program: ``bd`` channels x ``chunk`` positions (x the padded state size); warps;
    ``num_stages``: software-pipelining depth of the chunk loop (``tl.range(num_stages=...)``: the next
    chunks' loads are issued while this one computes; 1 = none). ``state_groups`` (the sequential N = 16
    forward, ``chunk = 0``): threads sharing one channel, each scanning ``N / state_groups`` states;
    ``prefetch`` (sequential kernels): the next chunk's rows are loaded into registers while this one
    computes (software pipelining without shared memory)."""

    bd: int
    chunk: int
    num_warps: int
    num_stages: int = 1
    state_groups: int = 1
    prefetch: bool = False


# Tiles by padded state size: (plain fwd, plain bwd, SS2D fwd, SS2D bwd); the tile holds BD * NP state rows
# of ``chunk`` positions. Chosen from the sweeps of bench/scan_gpu.py and bench/ss2d_route_gpu.py on an
# H100 (bench/NOTES_triton.md). Warps as they ran (a program gets at most one warp per 64 tile elements).
_TABLE = {
    1: (ScanConfig(4, 256, 4, 3), ScanConfig(4, 64, 1, 3), ScanConfig(2, 512, 4), ScanConfig(2, 128, 1)),
    2: (ScanConfig(4, 128, 4), ScanConfig(2, 128, 2), ScanConfig(2, 128, 2), ScanConfig(2, 128, 2)),
    4: (ScanConfig(2, 128, 4), ScanConfig(1, 128, 2), ScanConfig(1, 128, 2), ScanConfig(1, 128, 2)),
    8: (ScanConfig(1, 128, 4), ScanConfig(1, 64, 2), ScanConfig(1, 128, 4), ScanConfig(1, 64, 2)),
    16: (ScanConfig(1, 32, 2), ScanConfig(2, 32, 2), ScanConfig(1, 32, 2), ScanConfig(1, 32, 2)),
}
# N = 16 plain backward: 2 x 32 from `bench/n16_sweep_gpu.py --bwd` (39 tiles; 11.67 / 2.80 ms at L 4096 /
# 256 against 12.44 / 2.96 for 1 x 32; larger blocks or warps, or partial dB/dC sums, were slower).


# Plain backward, N = 1, reading the forward's states: tile by sequence length (first row with
# L >= its bound). H100 sweep (bench/r4_sweep_gpu.py, bench/NOTES_triton.md round 4), bf16, batch 16:
# L 4096: 4x128 0.333 ms, 4x64 0.362; L 1024: 2x64 0.248, 4x64 0.298; L 256: 4x64 0.116, 4x128 0.129.
_BWD_N1_BY_LENGTH = (
    (2048, ScanConfig(4, 128, 1, 3)),
    (512, ScanConfig(2, 64, 1, 3)),
    (0, ScanConfig(4, 64, 1, 3)),
)

# Plain forward with the state loop (scan_fwd_n.py) from this padded state size up. Its default is the
# sequential kernel (chunk 0): 2 threads per channel (8 states each), 32 channels and 2 warps per program,
# each next chunk's rows loaded into registers while the current one computes (prefetch), bf16 B/C read
# as int32 words (PACK_BF16_BC). H100 sweep (bench/n16_sweep_gpu.py --prefetch, bf16, batch 16, N 16, G 4;
# GPU time of graph replays): L 4096, D 1024: 0.580 ms (without prefetch 0.824; 4 threads per channel
# with prefetch 0.779, the previous default 4 threads without prefetch 0.822); L 256, D 4096: 0.134 ms
# (previous default 0.184). Triton's own pipelining (num_stages > 1) and fp32 B/C rows were slower.
STATE_LOOP_MIN_N = 16
_STATE_LOOP_FWD = ScanConfig(32, 0, 2, 1, 2, prefetch=True)
# N = 16 plain backward: the sequential kernel (scan_bwd_seq.py), 4 lanes per channel (untuned)
_SEQ_BWD = ScanConfig(8, 0, 1, 1, 4)
# The sequential N = 16 forward reads bf16 B/C rows as int32 words (two values each, split by a shift and a
# mask) instead of converting each bf16 value (scan_fwd_n._bf16_pair_cols)
PACK_BF16_BC = True


def _pow2_divisor(n: int) -> int:
    return n & (-n)


def pick_config(
    n: int,
    per_group: int,
    length: int,
    *,
    backward: bool,
    ss2d: bool = False,
    override: ScanConfig | None = None,
    by_length: bool = False,
):
    """Tile for state size ``n``; ``bd`` is capped so a block never straddles two groups, and the warps
    so that a tiny tile is not replicated over idle threads. ``by_length`` (the plain backward): N = 1
    takes its tile from ``_BWD_N1_BY_LENGTH``."""
    npad = triton.next_power_of_2(max(n, 1))
    if npad > 16:
        raise ValueError(f"the Triton scan supports d_state N <= 16, got N = {n}")
    cfg = override or _TABLE[npad][(2 if ss2d else 0) + (1 if backward else 0)]
    if override is None and by_length and backward and not ss2d and npad == 1:
        cfg = next(c for bound, c in _BWD_N1_BY_LENGTH if length >= bound)
    bd = min(cfg.bd, _pow2_divisor(per_group))
    chunk = min(cfg.chunk, max(16, triton.next_power_of_2(max(length, 1))))
    warps = max(1, min(cfg.num_warps, bd * npad * chunk // 64))
    if override is None and ss2d and not backward:
        # the fused SS2D forward: at least 256 tile elements per warp from 2 warps up (16x16 maps: 2 x 256
        # with 2 warps 0.087 ms, with 4 warps 0.099; bench/ss2d_sweep_gpu.py, bench/NOTES_triton.md round 6)
        warps = min(warps, max(2, bd * npad * chunk // 256))
    return npad, ScanConfig(bd, chunk, warps, cfg.num_stages)


# Sequences shorter than this are zero-padded to it (the kernels mask the padding with the valid length,
# an unspecialized argument): one chunk shape serves them, and no row stride is specialized to the
# constant 1. (L = 1 first looked wrong on the H100; it was the test's relative error against dA = 0.)
_MIN_LENGTH = 16

# Partial dB/dC sums (plain stores, summed afterwards) instead of atomics when their scratch is at most
# this many bytes; otherwise atomics. The plain scan with N = 1 always takes atomics (one per block of
# channels and position): round 3 measured them faster at all three flagship stages on an H100 (the
# partial sums moved 2 x 4 B per position and block twice, e.g. 0.54 vs 0.65 ms at stage 1).
PARTIAL_DBC_MAX_BYTES = 1 << 30


# The forward stores the chunk-entry states for the backward when they take at most this fraction of u's
# bytes (N = 1 with 64-position chunks: 1/16 of u for fp32, 1/8 for bf16; N = 16 with 32-position
# chunks would be 4x u's bytes in bf16: recomputed instead).
STATES_MAX_FRACTION = 0.25


def states_chunk(n: int, per_group: int, length: int, itemsize: int) -> int:
    """Positions per state the plain forward stores for the backward (the backward tile's chunk), or 0
    when it stores none (too large: see ``STATES_MAX_FRACTION``)."""
    stride = max(length, _MIN_LENGTH)
    npad, cfg = pick_config(n, per_group, stride, backward=True, by_length=True)
    if npad >= STATE_LOOP_MIN_N:  # the state-loop forward stores no states
        return 0
    return cfg.chunk if 4 * n <= STATES_MAX_FRACTION * cfg.chunk * itemsize else 0


def states_shape(batch: int, dim: int, length: int, n: int, groups: int, dtype: torch.dtype):
    """Shape of the states ``selective_scan_fwd(..., return_states=True)`` returns: ``(batch, dim,
    cdiv(L, chunk) - 1, n)`` fp32 (the state entering every chunk after the first), or ``(0,)`` (none)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    sc = states_chunk(n, dim // max(groups, 1), length, itemsize) if length > 0 and batch > 0 else 0
    if sc == 0:
        return (0,)
    return (batch, dim, triton.cdiv(max(length, _MIN_LENGTH), sc) - 1, n)


def _use_partial(partial: bool | None, nbytes: int) -> bool:
    return nbytes <= PARTIAL_DBC_MAX_BYTES if partial is None else bool(partial)


def _pad_length(t, length):
    return None if t is None else F.pad(t, (0, length - t.shape[-1])).contiguous()


def in_input_dtypes(grads, inputs) -> tuple:
    """Each (fp32-accumulated) gradient in its input's dtype; None where the input is None."""
    return tuple(None if t is None else g.to(t.dtype) for g, t in zip(grads, inputs, strict=True))


def or_dummy(t, dummy):
    """A launch argument for an optional tensor: ``t``, or ``dummy`` (never read or written: the kernel's
    flag for ``t`` is off, or the buffer is unused) where it is None."""
    return dummy if t is None else t


def optional_inputs(D, delta_bias, z, dummy, z_dummy, softplus=True):
    """The kernels' optional inputs as launch arguments: the pointers (D, delta_bias, z; see ``or_dummy``)
    and the flags ``HAS_D``, ``HAS_BIAS``, ``HAS_Z``, ``SOFTPLUS``."""
    ptrs = (or_dummy(D, dummy), or_dummy(delta_bias, dummy), or_dummy(z, z_dummy))
    flags = dict(
        HAS_D=D is not None, HAS_BIAS=delta_bias is not None, HAS_Z=z is not None, SOFTPLUS=bool(softplus)
    )
    return ptrs, flags


def _device_ctx(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _check_scan_args(u, delta, A, B, C, D, z, delta_bias):
    _check(u.dim() == 3, f"u must be (batch, D, L), got {tuple(u.shape)}")
    batch, dim, length = u.shape
    _check(delta.shape == u.shape, f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    _check(A.dim() == 2 and A.shape[0] == dim, f"A must be (D={dim}, N), got {tuple(A.shape)}")
    n = A.shape[1]
    _check(B.dim() == 4, f"B must be (batch, G, N, L), got {tuple(B.shape)}")
    g = B.shape[1]
    _check(
        B.shape == (batch, g, n, length) and g > 0 and dim % g == 0,
        f"B must be (batch={batch}, G dividing {dim}, N={n}, L={length}), got {tuple(B.shape)}",
    )
    _check(C.shape == B.shape, f"C must have B's shape {tuple(B.shape)}, got {tuple(C.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            _check(tuple(t.shape) == (dim,), f"{name} must be ({dim},), got {tuple(t.shape)}")
    if z is not None:
        _check(z.shape == u.shape, f"z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")
    return batch, dim, length, g, n


def selective_scan_fwd(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=True,
    *,
    config=None,
    return_states=False,
    state_loop=None,
    states_every=None,
):
    """Forward of the plain scan: returns ``(y (batch, D, L) in u.dtype, last_state (batch, D, N) fp32)``.

    ``return_states``: also return the chunk-entry states for ``selective_scan_bwd(states=...)``
    (shape ``states_shape(...)``; ``(0,)`` when the forward stores none for this shape).
    ``state_loop``: run the state-loop kernel (``scan_fwd_n.py``; True/False), None: from
    ``STATE_LOOP_MIN_N`` states up (it stores no states). ``config`` is that kernel's tile when it runs.
    ``states_every`` (benchmarks): store the states every this many positions instead of the default
    backward chunk (for a backward run with that chunk)."""
    batch, dim, length, groups, n = _check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    st_shape = states_shape(batch, dim, length, n, groups, u.dtype) if return_states else (0,)
    if return_states and states_every:
        st_shape = (batch, dim, triton.cdiv(max(length, _MIN_LENGTH), states_every) - 1, n)
    states = torch.empty(st_shape, device=u.device, dtype=torch.float32)
    u, delta, B, C = u.contiguous(), delta.contiguous(), B.contiguous(), C.contiguous()
    A32 = A.detach().float().contiguous()
    z = z.contiguous() if z is not None else None
    y = torch.empty_like(u)
    last = torch.empty(batch, dim, n, device=u.device, dtype=torch.float32)
    if length == 0 or batch == 0:
        last.zero_()
        return (y, last, states) if return_states else (y, last)
    tiny = length < _MIN_LENGTH
    stride = _MIN_LENGTH if tiny else length
    if tiny:
        u, delta, B, C, z = (_pad_length(t, stride) for t in (u, delta, B, C, z))
        y = torch.empty_like(u)
    npad = triton.next_power_of_2(max(n, 1))
    _check(npad <= 16, f"the Triton scan supports d_state N <= 16, got N = {n}")
    if state_loop or (state_loop is None and npad >= STATE_LOOP_MIN_N):
        states = states.new_empty(0)  # it stores none
        _state_loop_fwd(
            u, delta, A32, B, C, D, z, delta_bias, delta_softplus, y, last, stride, length, config
        )
        if tiny:
            y = y[..., :length].contiguous()
        return (y, last, states) if return_states else (y, last)
    npad, cfg = pick_config(n, dim // groups, stride, backward=False, override=config)
    n_db = dim // cfg.bd
    sc = states_chunk(n, dim // groups, length, u.element_size()) if states.dim() == 4 else 0
    sc = states_every or sc if states.dim() == 4 else 0
    opt, flags = optional_inputs(D, delta_bias, z, A32, u, delta_softplus)
    with _device_ctx(u):
        scan_fwd_kernel[(batch * n_db,)](
            u, delta, A32, B, C, *opt, y, y, last, states if sc else last, y, y,
            dim, 1, groups, n, stride, length, 1, stride, n_db, states.shape[2] if sc else 0, TINY=tiny,
            **flags, STORE_LAST=True, SS2D=False, SEQ_K=False, KC=1, COL_T3=False, COL_COPY=False,
            BD=cfg.bd, NP=npad, CH=cfg.chunk, TO_C=1, TI_C=cfg.chunk, STAGES=cfg.num_stages, SC=sc,
            num_warps=cfg.num_warps,
        )  # fmt: skip
    if tiny:
        y = y[..., :length].contiguous()
    return (y, last, states) if return_states else (y, last)


def _seq_tile(cfg, per_group, n, itemsize):
    """The sequential kernels' tile from ``cfg`` (chunk 0): (channels per program capped to divide a group,
    padded N, lanes per channel, positions per chunk = one 16-byte row, warps)."""
    npad = triton.next_power_of_2(max(n, 1))
    bd, sg = min(cfg.bd, _pow2_divisor(per_group)), min(cfg.state_groups, npad)
    return bd, npad, sg, 16 // itemsize, max(1, min(cfg.num_warps, bd * sg // 32))


def _state_loop_fwd(u, delta, A32, B, C, D, z, delta_bias, delta_softplus, y, last, stride, length, config):
    batch, dim, _ = u.shape
    groups, n = B.shape[1], A32.shape[1]
    cfg = config or _STATE_LOOP_FWD
    if cfg.chunk == 0:  # sequential variant: state_groups threads per channel, 16-byte rows
        kernel = scan_fwd_seq_kernel
        bd, npad, sg, chunk, warps = _seq_tile(cfg, dim // groups, n, u.element_size())
        even = stride == length and length % chunk == 0 and n == npad
        pack = PACK_BF16_BC and even and chunk == 8 and B.dtype == C.dtype == torch.bfloat16
        even = {"EVEN": even, "SG": sg, "PREFETCH": cfg.prefetch, "PACK_BC": pack}
    else:
        kernel, even = scan_fwd_n_kernel, {}
        bd, npad = min(cfg.bd, _pow2_divisor(dim // groups)), triton.next_power_of_2(max(n, 1))
        chunk = min(cfg.chunk, max(16, triton.next_power_of_2(stride)))
        warps = max(1, min(cfg.num_warps, bd * chunk // 256))
    n_db = dim // bd
    opt, flags = optional_inputs(D, delta_bias, z, A32, u, delta_softplus)
    with _device_ctx(u):
        kernel[(batch * n_db,)](
            u, delta, A32, B, C, *opt, y, last, dim, groups, n, stride, length, n_db, TINY=stride != length,
            **flags, STORE_LAST=True, BD=bd, NP=npad, CH=chunk, STAGES=cfg.num_stages,
            num_warps=warps, **even,
        )  # fmt: skip


def _seq_bwd(
    u, delta, A32, B, C, D, z, delta_bias, delta_softplus, dy, dlast, du, ddelta, dA, dB, dC, dD, dbias, dz,
    stride, length, config,
):  # fmt: skip
    """The sequential backward (``scan_bwd_seq.py``; its own pass 1 writes the chunk-entry states to a
    scratch of ``4 * NP / CH`` bytes per element)."""
    batch, dim, _ = u.shape
    groups, n = B.shape[1], A32.shape[1]
    cfg = config or _SEQ_BWD
    bd, npad, sg, chunk, warps = _seq_tile(cfg, dim // groups, n, u.element_size())
    even = stride == length and length % chunk == 0 and n == npad
    pack = PACK_BF16_BC and even and chunk == 8 and B.dtype == C.dtype == torch.bfloat16
    st = torch.empty(batch * dim * triton.cdiv(stride, chunk) * npad, device=u.device, dtype=torch.float32)
    n_db = dim // bd
    opt, flags = optional_inputs(D, delta_bias, z, A32, u, delta_softplus)
    with _device_ctx(u):
        scan_bwd_seq_kernel[(batch * n_db,)](
            u, delta, A32, B, C, *opt, dy, or_dummy(dlast, A32), st,
            du, ddelta, dA, dB, dC, or_dummy(dD, dA), or_dummy(dbias, dA), or_dummy(dz, du),
            dim, groups, n, stride, length, n_db, TINY=stride != length, **flags, HAS_DLAST=dlast is not None,
            BD=bd, NP=npad, CH=chunk, SG=sg, EVEN=even, PACK_BC=pack, PREFETCH=cfg.prefetch, num_warps=warps,
        )  # fmt: skip


def selective_scan_bwd(
    dy,
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=True,
    dlast_state=None,
    *,
    config=None,
    partial_dbc=None,
    states=None,
):
    """Backward of the plain scan: ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)``, None for None inputs.

    ``partial_dbc``: dB/dC as per-block partial sums summed afterwards (True) or atomics (False);
    None: partial sums when their scratch is at most ``PARTIAL_DBC_MAX_BYTES``. ``states``: what
    ``selective_scan_fwd(..., return_states=True)`` returned for these inputs; used when its chunk is this
    backward's chunk (the recompute pass is then skipped), ignored otherwise (e.g. ``(0,)``, or a
    ``config`` with another chunk)."""
    batch, dim, length, groups, n = _check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    _check(dy.shape == u.shape, f"dy must have u's shape {tuple(u.shape)}, got {tuple(dy.shape)}")
    u, delta, B, C, dy = u.contiguous(), delta.contiguous(), B.contiguous(), C.contiguous(), dy.contiguous()
    A32 = A.detach().float().contiguous()
    z = z.contiguous() if z is not None else None
    if dlast_state is not None:
        _check(
            tuple(dlast_state.shape) == (batch, dim, n),
            f"dlast_state must be ({batch}, {dim}, {n}), got {tuple(dlast_state.shape)}",
        )
        dlast_state = dlast_state.contiguous()
    dev, f32 = u.device, torch.float32
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = torch.empty_like(z) if z is not None else None
    dA = torch.zeros(dim, n, device=dev, dtype=f32)
    dB = torch.zeros(B.shape, device=dev, dtype=f32)
    dC = torch.zeros(C.shape, device=dev, dtype=f32)
    dD = torch.zeros(dim, device=dev, dtype=f32) if D is not None else None
    dbias = torch.zeros(dim, device=dev, dtype=f32) if delta_bias is not None else None
    tiny = 0 < length < _MIN_LENGTH
    stride = _MIN_LENGTH if tiny else length
    if tiny:
        u, delta, B, C, z, dy = (_pad_length(t, stride) for t in (u, delta, B, C, z, dy))
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dz = torch.empty_like(z) if z is not None else None
        dB, dC = torch.zeros(B.shape, device=dev, dtype=f32), torch.zeros(C.shape, device=dev, dtype=f32)
    npad = triton.next_power_of_2(max(n, 1))
    seq = (config.chunk == 0) if config is not None else npad >= STATE_LOOP_MIN_N
    if length > 0 and batch > 0 and seq:
        _seq_bwd(
            u, delta, A32, B, C, D, z, delta_bias, delta_softplus, dy, dlast_state, du, ddelta, dA, dB, dC,
            dD, dbias, dz, stride, length, config,
        )  # fmt: skip
    elif length > 0 and batch > 0:
        npad, cfg = pick_config(n, dim // groups, stride, backward=True, override=config, by_length=True)
        n_db = dim // cfg.bd
        nc = triton.cdiv(stride, cfg.chunk)
        progs = batch * n_db
        # the forward's states serve this backward when they were stored every cfg.chunk positions: then
        # (chunks being powers of two) they hold nc - 1 entries per channel; one chunk needs none
        has_st = nc == 1 or (states is not None and states.dim() == 4 and states.shape[2] == nc - 1)
        if has_st and nc > 1:
            _check(
                tuple(states.shape) == (batch, dim, nc - 1, n) and states.dtype == f32,
                f"states must be fp32 ({batch}, {dim}, {nc - 1}, {n}) (from selective_scan_fwd on these "
                f"inputs), got {states.dtype} {tuple(states.shape)}",
            )
            st, nc_arg = states.contiguous(), nc - 1
        elif has_st:
            st, nc_arg = dA, 0  # one chunk: it starts from the zero state, nothing is read
        else:
            st, nc_arg = torch.empty(progs * nc * cfg.bd * npad, device=dev, dtype=f32), nc
        n_part = dim // groups // cfg.bd
        if partial_dbc is None and npad == 1:
            partial_dbc = False
        partial = _use_partial(partial_dbc, 2 * 4 * batch * groups * n_part * n * stride)
        if partial:
            dBp = torch.empty(batch, groups, n_part, n, stride, device=dev, dtype=f32)
            dCp = torch.empty_like(dBp)
        opt, flags = optional_inputs(D, delta_bias, z, A32, u, delta_softplus)
        with _device_ctx(u):
            scan_bwd_kernel[(progs,)](
                u, delta, A32, B, C, *opt, dy, or_dummy(dlast_state, A32), st,
                du, du, ddelta, dA, dBp if partial else dB, dCp if partial else dC,
                or_dummy(dD, dA), or_dummy(dbias, dA), or_dummy(dz, du), *(u,) * 9,
                dim, 1, groups, n, stride, length, 1, stride, n_db, nc_arg, TINY=tiny,
                **flags, HAS_DLAST=dlast_state is not None, SS2D=False, SEQ_K=False,
                KC=1, COL_T3=False, DBC_ATOMIC=not partial, COL_COPY=False,
                BD=cfg.bd, NP=npad, CH=cfg.chunk, TO_C=1, TI_C=cfg.chunk, STAGES=cfg.num_stages, HAS_ST=has_st,
                num_warps=cfg.num_warps,
            )  # fmt: skip
        if partial:
            dB, dC = dBp.sum(2), dCp.sum(2)
    else:
        du.zero_()
        ddelta.zero_()
        if dz is not None:
            dz.zero_()
    if tiny:
        du, ddelta, dB, dC = (t[..., :length].contiguous() for t in (du, ddelta, dB, dC))
        dz = dz[..., :length].contiguous() if dz is not None else None
    dA, dB, dC, dD, dbias = in_input_dtypes((dA, dB, dC, dD, dbias), (A, B, C, D, delta_bias))
    return du, ddelta, dA, dB, dC, dD, dz, dbias
