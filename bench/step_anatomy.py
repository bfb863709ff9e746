"""Where a GPU training and inference step of the flagship spends its time (issue 9 diagnosis).

    PYTHONPATH=src python bench/step_anatomy.py --out-dir bench/results      # on a GPU, about 2 minutes

For the engine's training step (batch ``--batch``, the config's precision and optimiser) and an inference
step (batch ``--infer-batch``):

- the kernel time of one step (sum of GPU kernel durations), the wall time and the number of launches;
- the GPU time of each operator, and for layout/dtype copies (``aten::copy_``, ``aten::cat``...) the
  Python call site (geomamba file:line) that issued them, from ``torch.profiler(with_stack=True)``;
- inference replayed from a CUDA graph (``torch.cuda.CUDAGraph``, static input): how much of the eager
  step is launch overhead.

Writes ``step_anatomy_<gpu>.json`` and ``step_anatomy_<gpu>.txt``.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _train_speed_jobs as jobs
from geomamba.engine.config import load_config
from geomamba.engine.inference import make_predict_fn
from geomamba.experiments.speed import autocast_context

ROOT = Path(__file__).resolve().parent.parent
COPY_OPS = ("aten::copy_", "aten::cat", "aten::clone", "aten::contiguous", "aten::_to_copy", "aten::fill_")


def _site(stack: list[str]) -> str:
    """The innermost geomamba frame of a profiler stack (``file.py(line): fn``), else the innermost one."""
    for frame in stack:
        if "geomamba" in frame and "bench/" not in frame:
            return re.sub(r".*?/geomamba/", "", frame)
    return stack[0] if stack else "(no Python stack: autograd engine)"


def profile_step(step, device, label: str, rows: int = 30) -> tuple[dict, str]:
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        step()
    torch.cuda.synchronize(device)
    t = time.perf_counter()
    with profile(
        activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=True, record_shapes=True
    ) as prof:
        step()
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t
    # (the GPU-side ranges of annotations, "## Call CompiledFxGraph ..##" and "Optimizer.step#...", are
    # not kernels: they would count their kernels twice)
    kernels = [
        e
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA
        and not e.name.startswith("##")
        and not e.name.startswith("Optimizer.")
    ]
    kernel_s = sum(e.device_time_total for e in kernels) / 1e6 if kernels else 0.0
    by_op = prof.key_averages()
    op_rows = sorted(
        (
            e
            for e in by_op
            if e.self_device_time_total > 0 and not e.key.startswith(("void ", "ampere", "sm"))
        ),
        key=lambda e: -e.self_device_time_total,
    )
    ops = [
        {"op": e.key[:80], "gpu_ms": round(e.self_device_time_total / 1e3, 3), "calls": e.count}
        for e in op_rows[:rows]
    ]
    # GPU kernels by name (what a compiled step is made of: inductor's fused triton kernels, cuBLAS/cuDNN)
    by_kernel: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for e in kernels:
        k = by_kernel[e.name[:110]]
        k[0] += e.device_time_total / 1e3
        k[1] += 1
    kernel_rows = [
        {"kernel": k, "gpu_ms": round(v[0], 3), "calls": int(v[1])}
        for k, v in sorted(by_kernel.items(), key=lambda kv: -kv[1][0])[:rows]
    ]
    sites: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.name not in COPY_OPS or e.device_type != torch.autograd.DeviceType.CPU:
            continue
        if e.cpu_parent is not None and e.cpu_parent.name in COPY_OPS:
            continue  # counted with its parent copy op
        gpu = e.device_time_total / 1e3
        if gpu <= 0:
            continue
        chain, parent = [], e.cpu_parent
        while parent is not None and len(chain) < 3:
            chain.append(parent.name)
            parent = parent.cpu_parent
        shapes = [list(sh) for sh in (e.input_shapes or []) if sh][:2]
        s = sites[f"{e.name} {shapes} <- {' <- '.join(chain) or 'top'} @ {_site(list(e.stack or []))}"]
        s[0] += gpu
        s[1] += 1
    copy_sites = [
        {"site": k, "gpu_ms": round(v[0], 3), "calls": int(v[1])}
        for k, v in sorted(sites.items(), key=lambda kv: -kv[1][0])
    ]
    # the same operators split by input shapes (which call of an operator takes the time)
    shaped = sorted(
        (e for e in prof.key_averages(group_by_input_shape=True) if e.self_device_time_total > 0),
        key=lambda e: -e.self_device_time_total,
    )
    by_shape = [
        {
            "op": e.key[:60],
            "shapes": str(e.input_shapes)[:160],
            "gpu_ms": round(e.self_device_time_total / 1e3, 3),
            "calls": e.count,
        }
        for e in shaped
        if e.key.startswith("aten::")
    ][:rows]
    launches = sum(
        e.count
        for e in by_op
        if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC")
    )
    rec = {
        "label": label,
        "wall_ms_under_profiler": round(wall * 1e3, 2),
        "kernel_ms": round(kernel_s * 1e3, 2),
        "launches": int(launches),
        "copy_ms": round(sum(c["gpu_ms"] for c in copy_sites), 3),
        "ops": ops,
        "kernels": kernel_rows,
        "copy_sites": copy_sites[:rows],
        "ops_by_shape": by_shape,
    }
    lines = [
        f"== {label}: wall {rec['wall_ms_under_profiler']} ms under the profiler, kernels {rec['kernel_ms']} ms, "
        f"{launches} launches, copies {rec['copy_ms']} ms"
    ]
    lines += [f"  {o['gpu_ms']:9.3f} ms {o['calls']:6d}x  {o['op']}" for o in ops]
    lines.append("  -- kernels --")
    lines += [f"  {k['gpu_ms']:9.3f} ms {k['calls']:6d}x  {k['kernel']}" for k in kernel_rows]
    lines.append("  -- copies by call site --")
    lines += [f"  {c['gpu_ms']:9.3f} ms {c['calls']:6d}x  {c['site']}" for c in copy_sites[:rows]]
    lines.append("  -- operators by input shapes --")
    lines += [f"  {o['gpu_ms']:9.3f} ms {o['calls']:6d}x  {o['op']} {o['shapes']}" for o in by_shape]
    return rec, "\n".join(lines)


def time_it(fn, device, steps: int = 10) -> float:
    """Wall seconds per call over ``steps`` calls after 3 warm-up calls (the train_speed timer, no cap)."""
    return jobs.time_steps(fn, device, warmup=3, steps=steps, cap_s=float("inf"))["wall_per_step_s"]


def graphed_inference(cfg, p, device) -> dict:
    """Inference of a fixed batch replayed from one CUDA graph vs eager (same model, same input)."""
    _step, model, _ = jobs.build_infer_step(cfg, p, device)
    predict = make_predict_fn(model)
    x, _ = jobs._inputs(p["batch"], p["size"], device)
    precision = p.get("precision", cfg.trainer.precision)

    @torch.inference_mode()
    def eager():
        with autocast_context(device, precision):
            return predict(x)

    eager_s = time_it(eager, device)
    out = {"eager_s": round(eager_s, 5), "eager_per_s": round(p["batch"] / eager_s, 1)}
    try:
        s = torch.cuda.Stream(device)
        s.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(s):
            for _ in range(3):
                eager()
        torch.cuda.current_stream(device).wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(g):
            with autocast_context(device, precision):
                static = predict(x)
        graph_s = time_it(g.replay, device)
        ref = eager()
        out.update(
            graph_s=round(graph_s, 5),
            graph_per_s=round(p["batch"] / graph_s, 1),
            graph_max_abs_diff=float((static - ref).abs().max()),
        )
    except Exception as exc:  # a capture failure is a finding, not a crash
        out["graph_error"] = f"{type(exc).__name__}: {exc}"[:600]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "levircd.yaml"))
    ap.add_argument("--model", default="subtask_mamba")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--infer-batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--tag", default=None)
    ap.add_argument("--reps", type=int, default=3, help="turns of the A/B timing of the switches")
    ap.add_argument("--tiles", type=int, default=0, help="also profile sliding-window tiles of this size")
    ap.add_argument("--parts", default="train,infer", help="steps to profile: train, infer or both")
    ap.add_argument("--set", action="append", default=[], help="config override (repeatable)")
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="only the A/B timing")
    ap.add_argument(
        "--compiled",
        action="store_true",
        help="profile the torch.compile'd steps (the config's compile_backend; --compile-mode) instead of eager",
    )
    ap.add_argument(
        "--compile-mode", default=None, help="torch.compile mode of --compiled (default: inductor's)"
    )
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("step_anatomy needs a CUDA GPU")
        return 2
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    cfg = load_config(args.config, args.set)
    cfg.trainer.compile_mode = args.compile_mode
    compiled = args.compiled
    name = torch.cuda.get_device_name(device)
    tag = args.tag or re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    base = {"model": args.model, "size": args.size, "channels_last": args.channels_last}
    result: dict = {
        "benchmark": "step_anatomy",
        "command": "python " + " ".join(sys.argv),
        "device": name,
        "versions": {"torch": torch.__version__, "triton": _triton_version()},
    }
    texts = []
    train = {**base, "kind": "train", "batch": args.batch}
    infer = {**base, "kind": "infer", "batch": args.infer_batch}
    kind = " compiled" if compiled else ""
    parts = set(args.parts.split(","))
    for part, p, build in (("train", train, jobs.build_train_step), ("infer", infer, jobs.build_infer_step)):
        if not (args.profile and part in parts):
            continue
        step, _, _ = build(cfg, p, device, compile_model=compiled)
        result[part], txt = profile_step(step, device, f"{part} b{p['batch']}{kind}")
        texts.append(txt)
        print(txt, flush=True)
        del step
        jobs.reset_memory(device)
    if args.profile and "infer" in parts and not compiled:
        result["infer_graph"] = graphed_inference(cfg, infer, device)
        texts.append(f"== inference eager vs CUDA graph: {json.dumps(result['infer_graph'])}")
    if args.tiles:
        tiles = {**infer, "size": args.tiles, "batch": 4, "tiles": True}
        for label, p in (("tiles", tiles), ("tiles/fast_norm=off", {**tiles, "fast_norm": False})):
            step, _, _ = jobs.build_infer_step(cfg, p, device, compile_model=compiled)
            result[label], txt = profile_step(step, device, label)
            result[label]["step_s"] = round(time_it(step, device, steps=3), 4)
            texts.append(txt + f"\n  step {result[label]['step_s']} s")
            print(texts[-1][:3000], flush=True)
            del step
            jobs.reset_memory(device)
        if not args.reps:
            texts.append("")
    # A/B of the speed switches against the config's defaults: every variant built once, then timed in
    # turns (A B C A B C ...) so that drift of the machine hits all alike; median of the turns
    specs = {
        "train": train,
        "train/fast_norm=off": {**train, "fast_norm": False},
        "train/fused=off": {**train, "fused": False},
        "infer": infer,
        "infer/fast_norm=off": {**infer, "fast_norm": False},
    }
    steps = {}
    for label, p in specs.items() if args.reps else ():
        build = jobs.build_train_step if p["kind"] == "train" else jobs.build_infer_step
        steps[label] = build(cfg, p, device)[0]
    times: dict[str, list[float]] = {label: [] for label in specs}
    for _ in range(args.reps):
        for label, step in steps.items():
            times[label].append(time_it(step, device, steps=5))
    variants = {}
    for label, ts in times.items() if args.reps else ():
        med = statistics.median(ts)
        variants[label] = {
            "step_s": round(med, 5),
            "per_s": round(specs[label]["batch"] / med, 1),
            "turns_s": [round(t, 5) for t in ts],
        }
        print(f"{label}: {variants[label]}", flush=True)
    result["variants"] = variants
    texts.append("== variants (median of turns): " + json.dumps(variants))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"step_anatomy_{tag}.json").write_text(json.dumps(result, indent=2))
    (out / f"step_anatomy_{tag}.txt").write_text("\n\n".join(texts) + "\n")
    print("\n\n".join(texts))
    return 0


def _triton_version() -> str | None:
    try:
        import triton

        return triton.__version__
    except ImportError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
