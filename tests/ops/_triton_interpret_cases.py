"""Run the Triton scan kernels under the Triton interpreter on CPU and print their errors as JSON.

Executed by ``test_triton_interpret.py`` in a subprocess (``TRITON_INTERPRET=1`` must be set before
triton is imported). Each case compares the kernels' output and every gradient with the naive
per-token loop (and, for the fused SS2D, with cross_scan + naive scan + cross_merge) in float64, by
relative error ``|out - ref| / |ref|``. Prints ``{"skip": reason}`` when the interpreter cannot run.
"""

from __future__ import annotations

import json
import os
import sys

import torch


def _rel(a, b):
    return ((a.double() - b.double()).norm() / (b.double().norm() + 1e-30)).item()


def _probe():
    import triton
    import triton.language as tl

    @triton.jit
    def _k(p):
        tl.store(p + tl.arange(0, 4), tl.arange(0, 4).to(tl.float32))

    out = torch.zeros(4)
    _k[(1,)](out)
    if out.tolist() != [0.0, 1.0, 2.0, 3.0]:
        raise RuntimeError(f"interpreter probe returned {out.tolist()}")


def _plain(
    batch,
    dim,
    length,
    n,
    groups,
    *,
    d,
    z,
    bias,
    dlast,
    cfg,
    partial=None,
    states=False,
    loop=None,
    fwd_cfg=None,
):
    from geomamba.ops.selective_scan.naive import selective_scan_naive
    from geomamba.ops.triton import selective_scan_bwd, selective_scan_fwd

    f64 = torch.float64
    u = torch.randn(batch, dim, length, dtype=f64)
    delta = torch.randn(batch, dim, length, dtype=f64) * 0.5
    A = -torch.rand(dim, n, dtype=f64) * 2 - 0.1
    B = torch.randn(batch, groups, n, length, dtype=f64)
    C = torch.randn(batch, groups, n, length, dtype=f64)
    ins = [
        u, delta, A, B, C,
        torch.randn(dim, dtype=f64) if d else None,
        torch.randn(batch, dim, length, dtype=f64) if z else None,
        torch.randn(dim, dtype=f64) * 0.3 if bias else None,
    ]  # fmt: skip
    req = [t.clone().requires_grad_() if t is not None else None for t in ins]
    y_ref, last_ref = selective_scan_naive(*req, True, True)
    dy = torch.randn_like(y_ref)
    dl = torch.randn_like(last_ref) if dlast else None
    ((y_ref * dy).sum() + ((last_ref * dl).sum() if dlast else 0)).backward()
    f32 = [t.float() if t is not None else None for t in ins]
    if states:  # the forward's chunk-entry states, handed to the backward (the autograd path)
        y, last, st = selective_scan_fwd(*f32, True, config=fwd_cfg or cfg, return_states=True)
        if st.dim() != 4 or st.shape[2] < 1:
            raise AssertionError(f"expected stored states over several chunks, got {tuple(st.shape)}")
    else:
        (y, last), st = selective_scan_fwd(*f32, True, config=fwd_cfg or cfg, state_loop=loop), None
    grads = selective_scan_bwd(
        dy.float(), *f32, True, dl.float() if dlast else None, config=cfg, partial_dbc=partial, states=st
    )
    errs = {"y": _rel(y, y_ref), "last_state": _rel(last, last_ref)}
    for name, g, r in zip(["u", "delta", "A", "B", "C", "D", "z", "delta_bias"], grads, req, strict=True):
        if (g is None) != (r is None):
            raise AssertionError(f"gradient of {name}: got {g is None=}, input {r is None=}")
        if r is not None:
            errs["d" + name] = _rel(g, r.grad)
    return errs


def _seq_bf16_words():
    """The sequential N = 16 forward and backward on bf16 inputs, B/C read as int32 words of two values
    against the same kernels converting value by value (both exact conversions: results must be equal)."""
    from geomamba.ops.triton import ScanConfig, launch, selective_scan_bwd, selective_scan_fwd

    bf = torch.bfloat16
    u, delta, z = (torch.randn(2, 4, 32).to(bf) for _ in range(3))
    A, D = -torch.rand(4, 16) - 0.1, torch.randn(4)
    B, C = torch.randn(2, 2, 16, 32).to(bf), torch.randn(2, 2, 16, 32).to(bf)
    cfg, out = ScanConfig(2, 0, 1, 1, 4, prefetch=True), {}
    for pack in (True, False):
        launch.PACK_BF16_BC = pack
        ins = (u, delta * 0.5, A, B, C, D, z, None)
        y, last = selective_scan_fwd(*ins, True, config=cfg, state_loop=True)
        grads = selective_scan_bwd(y.float().sin().to(bf), *ins, True, None, config=cfg)
        out[pack] = (y, last, *grads[:7])
    launch.PACK_BF16_BC = True
    names = ["y", "last_state", "du", "ddelta", "dA", "dB", "dC", "dD", "dz"]
    return {name: _rel(a, b) for name, a, b in zip(names, out[True], out[False], strict=True)}


def scan_order(t, h, w, k):
    """(batch, K, C, H*W) in image order -> each direction k's scan order (test helper, also for GPU)."""
    from geomamba.ops.cross_scan import cross_scan

    b, _, c, _ = t.shape
    return torch.stack([cross_scan(t[:, i].reshape(b, c, h, w), 4)[:, i] for i in range(k)], 1)


def _ss2d(
    batch, dm, h, w, n, k, *, cfg, opts=None, layout="image", states=False, bf16=False, dt_rank=0, cl=False
):
    """Fused SS2D forward and backward against the naive scan in float64; with ``layout="lines"`` the
    kernels get delta/B/C (and give their gradients) in the "lines" layout. ``states``: the forward
    returns its chunk-entry states and the backward reads them (``stored``: 0 when it stored some;
    ``ignored``: 0 when the backward's ddelta depends on them). ``bf16``: x, delta, B, C and dy in bf16
    (the reference gets the same rounded values), so y / dx and the lines kernels' partial sums are bf16.
    ``dt_rank``: the kernels get dt_proj's input ``(batch, K, dt_rank, H*W)`` and weight instead of delta
    (``dt_weight``) and project it themselves; the reference scans the product (float64) and ``ddelta``
    compares the gradient of that product. ``cl``: y asked for channels-last (``"layout"``: 0 when it is)
    and dy handed over channels-last."""
    from geomamba.ops.cross_scan import cross_merge, cross_scan, to_line_order
    from geomamba.ops.selective_scan.naive import selective_scan_naive
    from geomamba.ops.triton import ss2d_bwd, ss2d_fwd

    f64, length = torch.float64, h * w
    ins = [
        torch.randn(batch, dm, h, w, dtype=f64),
        torch.randn(batch, k, dm, length, dtype=f64) * 0.5,
        -torch.rand(k * dm, n, dtype=f64) * 2 - 0.1,
        torch.randn(batch, k, n, length, dtype=f64),
        torch.randn(batch, k, n, length, dtype=f64),
        torch.randn(k * dm, dtype=f64),
        torch.randn(k * dm, dtype=f64) * 0.3,
    ]
    half = torch.bfloat16 if bf16 else torch.float32
    for i in (0, 1, 3, 4):
        ins[i] = ins[i].to(half).double()
    if dt_rank:  # delta = W @ dts of rounded factors, W in the inputs' dtype as the launcher casts it
        dts = (torch.randn(batch, k, dt_rank, length, dtype=f64) * 0.5).to(half)
        dt_w = (torch.randn(k, dm, dt_rank, dtype=f64) * dt_rank**-0.5).to(half)
        ins[1] = torch.matmul(dt_w.double(), dts.double())
    x, delta, A, B, C, D, bias = r = [t.clone().requires_grad_() for t in ins]
    y = selective_scan_naive(
        cross_scan(x, k).reshape(batch, k * dm, length),
        scan_order(delta, h, w, k).reshape(batch, k * dm, length),
        A, scan_order(B, h, w, k), scan_order(C, h, w, k), D, None, bias, True,
    )  # fmt: skip
    y_ref = cross_merge(y.view(batch, k, dm, length), h, w)
    dy = torch.randn_like(y_ref).to(half).double()
    (y_ref * dy).sum().backward()
    f32 = [t.to(half) if i in (0, 1, 3, 4) else t.float() for i, t in enumerate(ins)]
    expect = [t.grad for t in r]
    if layout == "lines":
        for i in (1, 3, 4):  # delta, B, C and their gradients
            f32[i], expect[i] = to_line_order(f32[i], h, w), to_line_order(expect[i], h, w)
    kw = dict(config=cfg, options=opts, layout=layout)
    fkw = dict(kw, channels_last=True) if cl else kw
    dy = dy.contiguous(memory_format=torch.channels_last) if cl else dy
    if dt_rank:
        f32[1] = to_line_order(dts, h, w) if layout == "lines" else dts
        kw["dt_weight"] = dt_w
    if states:
        y, st = ss2d_fwd(*f32, k, **fkw, return_states=True)
        errs = {"y": _rel(y, y_ref), "stored": float(st.dim() != 5 or st.shape[3] == 0)}
        grads = ss2d_bwd(dy.to(half), *f32, k, **kw, states=st)
        # the backward really reads them: wrong states give a wrong ddelta ("ignored": 0)
        ddelta_bad = ss2d_bwd(dy.to(half), *f32, k, **kw, states=torch.full_like(st, 3.0))[1]
        errs["ignored"] = float(_rel(ddelta_bad, expect[1]) < 1e-2)
    else:
        y = ss2d_fwd(*f32, k, **fkw)
        errs = {"y": _rel(y, y_ref)}
        grads = ss2d_bwd(dy.to(half), *f32, k, **kw)
    if cl:
        errs["layout"] = float(not y.is_contiguous(memory_format=torch.channels_last) or y.is_contiguous())
    for name, g, e in zip(["x", "delta", "A", "B", "C", "D", "delta_bias"], grads, expect, strict=True):
        errs["d" + name] = _rel(g, e)
    return errs


def _strided_copy():
    """The tiled copy kernel: a transpose (tiles larger than one 64x64 block, masked edges), a fp32 sum
    of a transposed and a plain view cast to bf16 (the interpreter truncates to bf16: error < 2^-8), and
    the column-major directions of a (batch, K, C, H*W) tensor (strided 4-D views)."""
    from geomamba.ops.triton.copy import strided_copy_, transposed

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 70, 45, generator=g)
    acc = torch.randn(2, 3, 45, 70, generator=g)
    summed = torch.empty(2, 3, 70, 45, dtype=torch.bfloat16)
    strided_copy_(summed, acc.transpose(-1, -2), add=x)
    t = torch.randn(2, 4, 5, 6 * 7, generator=g)
    out = torch.zeros_like(t)
    strided_copy_(
        out.view(2, 4, 5, 7, 6)[:, 1::2].flatten(0, 1).transpose(-1, -2),
        t.view(2, 4, 5, 6, 7)[:, 1::2].flatten(0, 1),
    )
    ref = torch.zeros_like(t)
    for j in (1, 3):
        ref[:, j] = t[:, j].view(2, 5, 6, 7).transpose(-1, -2).reshape(2, 5, 42)
    return {
        "transpose": _rel(transposed(x), x.transpose(-1, -2)),
        "add_cast": _rel(summed, acc.transpose(-1, -2) + x),
        "directions": _rel(out, ref),
    }


def _dwconv(k, bias, tile, h=5, w=7, c=70):
    """The depthwise conv + SiLU kernels (``ops/triton/dwconv.py``) against the fp64 reference: output and
    the gradients of x, weight and bias (tiles smaller than the map and than C: masked edges)."""
    from geomamba.ops.dwconv_silu import dwconv_silu_reference
    from geomamba.ops.triton.dwconv import dwconv_silu_bwd, dwconv_silu_fwd

    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, h, w, c, generator=g)
    wt = torch.randn(c, 1, k, k, generator=g) / k
    b = torch.randn(c, generator=g) if bias else None
    dy = torch.randn(2, c, h, w, generator=g)
    y = dwconv_silu_fwd(x, wt, b, tile=tile)
    dx, dw, db = dwconv_silu_bwd(dy, x, wt, b, tile=tile)
    leaves = [t.double().requires_grad_() for t in (x, wt)] + ([b.double().requires_grad_()] if bias else [])
    ref = dwconv_silu_reference(*leaves[:2], leaves[2] if bias else None)
    grads = torch.autograd.grad(ref, leaves, dy.double())
    errs = {"y": _rel(y, ref), "dx": _rel(dx, grads[0]), "dweight": _rel(dw, grads[1])}
    if bias:
        errs["dbias"] = _rel(db, grads[2])
    return errs


def _dt_proj(b, k, d, r, length, tile, splits, dtype=torch.float32):
    """dt_proj's one-pass backward (``ops/triton/dt_proj.py``) against fp64 matrix products: ddts (dts a
    strided split of a wider tensor, as in SS2DCore) and dweight; tiles smaller than D and L (masked edges,
    channel blocks summed, several splits)."""
    from geomamba.ops.triton.dt_proj import dt_proj_bwd

    g = torch.Generator().manual_seed(6)
    wide = torch.randn(b, k, r + 3, length, generator=g).to(dtype)
    dts = wide[:, :, 1 : r + 1]
    wt = (torch.randn(k, d, r, generator=g) / r**0.5).to(dtype)
    dd = torch.randn(b, k, d, length, generator=g).to(dtype)
    ddts, dw = dt_proj_bwd(dd, wt, dts, tile=tile, splits=splits)
    ref_dts = torch.matmul(wt.double().transpose(-1, -2), dd.double())
    ref_w = torch.matmul(dd.double(), dts.double().transpose(-1, -2)).sum(0)
    return {"ddts": _rel(ddts, ref_dts), "dweight": _rel(dw, ref_w)}


def _permuted_copy():
    """The 3-D tiled copy: the merge of a channels-first and a transposed partial sum into a channels-last
    bf16 map (C, H, W not multiples of the 32 x 16 x 16 tile), and the split of a channels-last map into
    its channels-first and transposed copies in one pass (also on a map that takes the 16 x 32 x 32 tile)."""
    from geomamba.ops.triton.copy import permuted_copy_

    g = torch.Generator().manual_seed(5)
    acc = torch.randn(2, 37, 19, 21, generator=g)
    accT = torch.randn(2, 37, 21, 19, generator=g)
    y = torch.empty(2, 37, 19, 21, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    permuted_copy_(y, accT.transpose(-1, -2), add=acc)
    src = torch.randn(2, 37, 19, 21, generator=g).contiguous(memory_format=torch.channels_last)
    cf, t = torch.empty(2, 37, 19, 21), torch.empty(2, 37, 21, 19)
    permuted_copy_(cf, src, dst2=t.transpose(-1, -2))
    big = torch.randn(1, 5, 33, 34, generator=g).contiguous(memory_format=torch.channels_last)  # >= 1024 px
    big_cf, big_t = torch.empty(1, 5, 33, 34), torch.empty(1, 5, 34, 33)
    permuted_copy_(big_cf, big, dst2=big_t.transpose(-1, -2))  # the large maps' tile
    return {
        "merge_cl": _rel(y, accT.transpose(-1, -2) + acc)
        + float(not y.is_contiguous(memory_format=torch.channels_last)),
        "split": _rel(cf, src) + _rel(t, src.transpose(-1, -2)) + _rel(big_cf, big) + _rel(big_t, big.mT),
    }


def main() -> None:
    try:
        _probe()
    except Exception as err:  # the interpreter cannot run here: the test skips with this reason
        print(json.dumps({"skip": f"Triton interpreter unavailable: {type(err).__name__}: {err}"}))
        return
    from geomamba.ops.triton import ScanConfig, SS2DOptions

    torch.manual_seed(0)
    small = ScanConfig(2, 16, 4)
    wide = ScanConfig(2, 64, 4)
    seq4 = ScanConfig(2, 0, 1, 1, 4)
    seq4_prefetch = ScanConfig(2, 0, 1, 1, 4, prefetch=True)
    # the round-1 path: one program per direction, fp32 atomics, transposed 3-D column tiles
    t3_atomic = SS2DOptions(col_t3=True, seq_k=False, dbc_atomic=True)
    colcopy = SS2DOptions(col_copy=True)
    colcopy_atomic = SS2DOptions(col_copy=True, dbc_atomic=True)
    dot16 = ScanConfig(16, 64, 4)
    cases = {
        # L not a multiple of the chunk, groups, z gate, D, delta_bias and dlast_state
        "plain_N4_G2_all": lambda: _plain(2, 4, 37, 4, 2, d=True, z=True, bias=True, dlast=True, cfg=small),
        # N = 1, no optional inputs, L shorter than one chunk, default tile
        "plain_N1_G1_bare": lambda: _plain(
            1, 4, 7, 1, 1, d=False, z=False, bias=False, dlast=False, cfg=None
        ),
        # L = 1 (zero-padded short sequence), every option
        "plain_N1_L1": lambda: _plain(2, 2, 1, 1, 1, d=True, z=True, bias=True, dlast=True, cfg=None),
        # N = 1 (the 2-D fast path) with every option
        "plain_N1_G2_all": lambda: _plain(2, 4, 37, 1, 2, d=True, z=True, bias=True, dlast=True, cfg=small),
        # N = 16 (padded state), D and delta_bias
        "plain_N16_G1": lambda: _plain(1, 2, 20, 16, 1, d=True, z=False, bias=True, dlast=False, cfg=small),
        # N = 16 sequential kernels (forward and backward): 4 lanes per channel (4 states each), L not a
        # chunk multiple, every option
        "plain_N16_seq_4groups": lambda: _plain(
            2, 4, 21, 16, 2, d=True, z=True, bias=True, dlast=True, cfg=seq4, loop=True
        ),
        # the same forward loading each next chunk ahead (prefetch), masked (L 21) and unmasked (L 24)
        "plain_N16_seq_prefetch": lambda: _plain(
            2, 4, 21, 16, 2, d=True, z=True, bias=True, dlast=True, cfg=seq4_prefetch, loop=True
        ),
        "plain_N16_seq_prefetch_even": lambda: _plain(
            1, 4, 24, 16, 1, d=True, z=False, bias=True, dlast=False, cfg=seq4_prefetch, loop=True
        ),
        "plain_N16_seq_bf16_words": _seq_bf16_words,
        # all four directions, odd H and W
        "strided_copy": _strided_copy,
        "permuted_copy": _permuted_copy,
        "ss2d_K4_5x3": lambda: _ss2d(1, 4, 5, 3, 1, 4, cfg=small),
        # partial columns (padded H 32 > chunk 16), N = 2
        "ss2d_K4_20x3_N2": lambda: _ss2d(1, 2, 20, 3, 2, 4, cfg=small),
        # two directions
        "ss2d_K2_4x6": lambda: _ss2d(1, 2, 4, 6, 1, 2, cfg=small),
        # several whole columns per chunk (TO = 4, TI = 16, masked rows and columns), default options
        "ss2d_K4_13x9_cols": lambda: _ss2d(1, 4, 13, 9, 1, 4, cfg=wide),
        # the same through the transposed tiles and atomics; dB/dC atomics in the plain scan too
        "ss2d_K4_13x9_t3_atomic": lambda: _ss2d(1, 4, 13, 9, 1, 4, cfg=wide, opts=t3_atomic),
        # column-major directions through launcher-made transposed copies (backward col_copy), K = 4 and 2
        "ss2d_K4_13x9_colcopy": lambda: _ss2d(1, 4, 13, 9, 2, 4, cfg=small, opts=colcopy),
        "ss2d_K2_5x7_colcopy_atomic": lambda: _ss2d(1, 2, 5, 7, 1, 2, cfg=small, opts=colcopy_atomic),
        # the "lines" layout: read and written as is (default options: every direction a row scan), K = 4
        # and 2 with partial-sum dB/dC; and through the gathering kernels (converted to image order)
        "ss2d_K4_13x9_lines": lambda: _ss2d(2, 4, 13, 9, 2, 4, cfg=small, layout="lines"),
        "ss2d_K2_5x7_lines_partial": lambda: _ss2d(1, 2, 5, 7, 1, 2, cfg=small, opts=colcopy, layout="lines"),
        "ss2d_K4_5x3_lines_gather": lambda: _ss2d(
            1, 4, 5, 3, 1, 4, cfg=small, opts=t3_atomic, layout="lines"
        ),
        # the "lines" forward stores every direction's chunk-entry states (the reversed ones from the end)
        # and the backward reads them instead of recomputing; H*W not a chunk multiple; K = 4 and 2
        "ss2d_K4_13x23_lines_states": lambda: _ss2d(
            1, 4, 13, 23, 1, 4, cfg=None, layout="lines", states=True
        ),
        "ss2d_K2_9x15_lines_states_N2": lambda: _ss2d(
            2, 2, 9, 15, 2, 2, cfg=None, layout="lines", states=True
        ),
        # bf16 inputs: the row and the column directions' partial sums of y / dx kept in bf16 (default)
        "ss2d_K4_13x23_lines_bf16": lambda: _ss2d(
            1, 4, 13, 23, 1, 4, cfg=None, layout="lines", states=True, bf16=True
        ),
        # y written channels-last by the merge, the channels-last dy split by the backward's launcher
        "ss2d_K4_13x23_lines_cl": lambda: _ss2d(
            2, 4, 13, 23, 1, 4, cfg=None, layout="lines", states=True, cl=True
        ),
        "ss2d_K2_9x15_lines_cl_N2": lambda: _ss2d(1, 2, 9, 15, 2, 2, cfg=small, layout="lines", cl=True),
        # dt_proj fused: the kernels project delta from (batch, K, R, H*W) and the weight; rank-1 updates
        # (fp32, default tiles; N = 2, K = 2) and one tl.dot per chunk (bf16, 16-row tiles, rank 5 padded)
        "ss2d_K4_13x23_lines_dt": lambda: _ss2d(
            1, 4, 13, 23, 1, 4, cfg=None, layout="lines", states=True, dt_rank=3
        ),
        "ss2d_K2_9x15_lines_dt_N2": lambda: _ss2d(
            2, 4, 9, 15, 2, 2, cfg=None, layout="lines", states=True, dt_rank=2
        ),
        "ss2d_K4_13x23_lines_dt_dot_bf16": lambda: _ss2d(
            1, 16, 13, 23, 1, 4, cfg=dot16, layout="lines", states=True, bf16=True, dt_rank=5
        ),
        "plain_N2_G2_atomic_dbc": lambda: _plain(
            2, 4, 37, 2, 2, d=True, z=False, bias=True, dlast=False, cfg=small, partial=False
        ),
        # the forward stores the chunk-entry states (every 64 positions, inside its 256-position chunks)
        # and the backward reads them instead of recomputing (the autograd path), L not a chunk multiple
        "plain_N1_G2_states": lambda: _plain(
            2, 8, 200, 1, 2, d=True, z=True, bias=True, dlast=True, cfg=None, states=True
        ),
        "plain_N4_G1_states": lambda: _plain(
            1, 2, 300, 4, 1, d=True, z=False, bias=True, dlast=False, cfg=None, states=True
        ),
        # forward chunks (16) shorter than the stored states' interval (the backward's 64)
        "plain_N1_states_short_fwd_chunks": lambda: _plain(
            1, 4, 150, 1, 1, d=True, z=False, bias=True, dlast=False, cfg=None, states=True, fwd_cfg=small
        ),
    }
    cases["dwconv_k3_bias"] = lambda: _dwconv(3, True, (16, 32, 4))
    cases["dwconv_k3_nobias"] = lambda: _dwconv(3, False, (8, 16, 1), h=6, w=3, c=20)
    cases["dwconv_k5_nobias"] = lambda: _dwconv(5, False, (8, 64, 2), h=9, w=4, c=33)
    cases["dt_proj_one_block"] = lambda: _dt_proj(2, 4, 40, 8, 37, (64, 16, 4, 2), 3)
    cases["dt_proj_blocks"] = lambda: _dt_proj(3, 2, 70, 20, 50, (32, 32, 4, 3), 2)
    cases["dt_proj_fp16"] = lambda: _dt_proj(2, 4, 48, 16, 40, (16, 16, 2, 1), 5, torch.float16)
    only = sys.argv[1:]  # case names to run (all when none are given)
    print(json.dumps({name: fn() for name, fn in cases.items() if not only or name in only}))


if __name__ == "__main__":
    os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton
    sys.exit(main())
