"""End-to-end training and inference speed of the flagship and two baselines (issue 9), in one run.

    PYTHONPATH=src python bench/train_speed.py --quick            # on a GPU, about 5 minutes
    PYTHONPATH=src python bench/train_speed.py --device cpu --tiny # CPU smoke test, tiny models and sizes

Jobs, in this order (each with a time cap; one that fails is recorded and the run goes on; jobs that do
not fit in ``--budget-s`` are recorded as skipped; ``--only``/``--skip`` select jobs by glob):

- ``train/<model>/b<B>``: training pairs/s at ``--size`` (256) for each ``--train-batches`` (16, 32): the
  engine's step (forward and loss under the config's autocast, backward, gradient clipping, the fused
  optimiser step) on a fixed batch already on the device, the scan backend chosen by ``auto`` (Triton on
  CUDA); ``/ref``: the flagship with the pure-PyTorch reference scan (few steps); ``/channels_last`` or
  ``/contiguous``: the memory format the config does not use; ``<flagship>-d15``: depths (2, 2, 15);
- ``infer/<model>/b64``: inference pairs/s; ``tiles/<model>/1024``: whole 1024x1024 tiles per second by the
  engine's sliding window (the config's window, overlap and ``eval.window_batch``);
- ``compile/...``: the flagship's training, inference and sliding-window tiles with ``torch.compile`` (the
  config's ``trainer.compile_mode``; a subprocess that compiles while the eager jobs run, on other CPU
  cores, and measures when they are done);
- ``profile/<flagship>``: torch.profiler of one training step -> ``train_profile_<gpu>.txt``, with the
  synchronising calls of a step (CUDA);
- ``engine/<flagship>``: the same step through ``ChangeDetectionModule`` and a Lightning ``Trainer``;
- ``loader/...``: pairs/s of the engine's ``ChangeDataModule`` on synthetic PNG tiles (256x256 tiles;
  1024x1024 tiles with random crops, read from disk or from the in-memory cache).

Timing: warm-up steps, then CUDA events around each step, median. Peak memory: max allocated by PyTorch
during the job. Writes ``bench/results/train_speed_<gpu>.json`` (device, versions, command, every job)
after each job, and prints a table.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import queue
import re
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _train_speed_jobs as jobs
import geomamba
from geomamba.engine.config import RunConfig, config_to_dict, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
# MambaBCD-Tiny measured with ChangeMamba's own code on one H100 (issue 9): the peer figures.
PEER = {"train_b16_bf16": 52.0, "train_b32_bf16": 80.0, "infer_b64_bf16": 143.0, "tiles_1024": 11.3}
TARGETS = {"train_b32": 400.0, "ref_ratio": 10.0, "peer_ratio": 5.0, "infer_b64": 1500.0, "tiles_1024": 60.0}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device.type, "cpu_count": os.cpu_count(), "platform": platform.platform()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(
            name=p.name,
            memory_gb=round(p.total_memory / 1e9, 1),
            capability=f"{p.major}.{p.minor}",
            multiprocessors=p.multi_processor_count,
        )
    else:
        info.update(name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
        info["load_average_1_5_15min"] = [round(v, 2) for v in os.getloadavg()]
    return info


def result_header(benchmark: str, device: torch.device, argv: list[str] | None = None) -> dict[str, Any]:
    """The first keys of a probe's JSON: its name, the command that ran it, the device, the versions."""
    return {
        "benchmark": benchmark,
        "command": "python " + " ".join([sys.argv[0], *(sys.argv[1:] if argv is None else argv)]),
        "device": device_info(device),
        "versions": versions(),
    }


def write_result(out: dict[str, Any], out_dir: str | Path, stem: str) -> Path:
    """``<out_dir>/<stem>.json`` (folders made as needed); returns its path."""
    path = Path(out_dir) / f"{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    return path


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "geomamba": geomamba.__version__,
    }
    for mod in ("triton", "lightning", "torchvision"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception as exc:  # recorded, not fatal
            out[mod] = f"unavailable ({type(exc).__name__})"
    return out


# ----------------------------------------------------------------------------------------------- plan
def plan(args, cfg: RunConfig) -> list[dict[str, Any]]:
    """The jobs in running order: ``{"name", "kind", "cap_s", ...parameters}``."""
    f, size, q = args.flagship, args.size, args.quick
    batches = args.train_batches
    big = max(batches)
    steps, warm = (6, 2) if q else (12, 3)
    if args.steps:
        steps = args.steps
    if args.warmup is not None:
        warm = args.warmup
    cl = cfg.trainer.channels_last
    other_format = "contiguous" if cl else "channels_last"
    train = {"kind": "train", "size": size, "steps": steps, "warmup": warm, "channels_last": cl}
    infer = {
        "kind": "infer",
        "size": size,
        "batch": args.infer_batch,
        "steps": steps,
        "warmup": warm,
        "channels_last": cl,
    }
    tiles = {**infer, "size": args.tile, "batch": args.tile_batch, "tiles": True, "steps": max(2, steps // 2)}
    cap = args.cap_s
    out: list[dict[str, Any]] = []
    for b in batches:
        out.append({**train, "name": f"train/{f}/b{b}", "model": f, "batch": b, "cap_s": cap})
    out.append({**infer, "name": f"infer/{f}/b{args.infer_batch}", "model": f, "cap_s": cap * 0.6})
    out.append({**tiles, "name": f"tiles/{f}/{args.tile}", "model": f, "cap_s": cap})
    ref_batches = [big] if q else batches
    for b in ref_batches:
        out.append(
            {
                **train,
                "name": f"train/{f}/b{b}/ref",
                "model": f,
                "batch": b,
                "options": {"scan_backend": "ref"},
                "steps": 2 if q else 3,
                "warmup": 1,
                "cap_s": 2 * cap,
            }
        )
    out.append(
        {
            **train,
            "name": f"train/{f}-d{args.deep_depths[-1]}/b{min(batches)}",
            "model": f,
            "batch": min(batches),
            "options": {"depths": list(args.deep_depths)},
            "cap_s": cap,
        }
    )
    out.append(
        {
            **train,
            "name": f"train/{f}/b{big}/{other_format}",
            "model": f,
            "batch": big,
            "channels_last": not cl,
            "cap_s": cap * 0.75,
        }
    )
    for m in args.baselines:
        for b in batches:
            out.append({**train, "name": f"train/{m}/b{b}", "model": m, "batch": b, "cap_s": cap * 0.75})
        out.append({**infer, "name": f"infer/{m}/b{args.infer_batch}", "model": m, "cap_s": cap * 0.5})
        out.append({**tiles, "name": f"tiles/{m}/{args.tile}", "model": m, "cap_s": cap * 0.75})
    if args.conv_baseline in args.baselines:
        m = args.conv_baseline
        out.append(
            {
                **train,
                "name": f"train/{m}/b{big}/{other_format}",
                "model": m,
                "batch": big,
                "channels_last": not cl,
                "cap_s": cap * 0.5,
            }
        )
    out.append(
        {
            **train,
            "name": f"profile/{f}/b{big}",
            "kind": "profile",
            "model": f,
            "batch": big,
            "warmup": 2,
            "cap_s": cap,
        }
    )
    out.append(
        {**train, "name": f"engine/{f}/b{big}", "kind": "engine", "model": f, "batch": big, "cap_s": cap}
    )
    if args.compile:  # the engine compiling its model (trainer.compile_mode): the compile is in the warm-up
        out.append(
            {
                **train,
                "name": f"engine/{f}/b{big}/compiled",
                "kind": "engine",
                "model": f,
                "batch": big,
                "compile": True,
                "warmup": max(3, train["warmup"]),
                "cap_s": cap,
            }
        )
    for tile_size, crops, cache, n in args.loader_setups:
        name = f"loader/{tile_size}px" + (
            "" if tile_size <= size else f"-crops{crops}-{'cache' if cache else 'disk'}"
        )
        out.append(
            {
                "name": name,
                "kind": "loader",
                "tile_size": tile_size,
                "tiles": n,
                "crops_per_image": crops,
                "cache": cache,
                "batch": big,
                "size": size,
                "num_workers": args.loader_workers,
                "cap_s": cap * 0.75,
            }
        )
    sel = [j for j in out if not args.only or any(fnmatch.fnmatch(j["name"], g) for g in args.only)]
    return [j for j in sel if not any(fnmatch.fnmatch(j["name"], g) for g in args.skip)]


def compile_plan(args, cfg: RunConfig) -> list[dict[str, Any]]:
    f, big = args.flagship, max(args.train_batches)
    cl = cfg.trainer.channels_last
    steps = args.steps or (6 if args.quick else 12)
    base = {"model": f, "size": args.size, "steps": steps, "warmup": 2, "channels_last": cl}
    out = [
        {**base, "name": f"compile/train/{f}/b{big}", "kind": "train", "batch": big},
        {
            **base,
            "name": f"compile/infer/{f}/b{args.infer_batch}",
            "kind": "infer",
            "batch": args.infer_batch,
        },
        {
            **base,
            "name": f"compile/tiles/{f}/{args.tile}",
            "kind": "infer",
            "size": args.tile,
            "batch": args.tile_batch,
            "tiles": True,
            "steps": max(2, steps // 2),
        },
    ]
    sel = [j for j in out if not args.only or any(fnmatch.fnmatch(j["name"], g) for g in args.only)]
    return [j for j in sel if not any(fnmatch.fnmatch(j["name"], g) for g in args.skip)]


# ----------------------------------------------------------------------------------------------- compile worker
def compile_worker(spec: dict[str, Any]) -> None:
    """Subprocess: compile every job of ``spec`` (warm-up steps), print ``READY``, wait for a line on stdin,
    then time them and print ``RESULT <json>``."""
    cores = spec.get("cores")
    if cores:
        os.sched_setaffinity(0, set(cores))
    device = torch.device(spec["device"])
    cfg = parse_config(spec["config"])
    built, results = [], {}
    for p in spec["jobs"]:
        t = time.perf_counter()
        try:
            skips = _cudagraph_skips()
            build = jobs.build_train_step if p["kind"] == "train" else jobs.build_infer_step
            step, model, forward = build(cfg, p, device, compile_model=True)
            for _ in range(p["warmup"]):
                step()
            jobs.sync(device)
            built.append((p, step, model, forward))
            results[p["name"]] = {
                "compile_and_warmup_s": round(time.perf_counter() - t, 1),
                # graphs inductor did not capture under reduce-overhead (reasons: TORCH_LOGS=perf_hints)
                "cudagraph_skips": _cudagraph_skips() - skips,
            }
        except Exception as exc:
            results[p["name"]] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:800]}
        print("PROGRESS " + json.dumps({p["name"]: results[p["name"]]}), flush=True)
    print("READY " + json.dumps(results), flush=True)
    sys.stdin.readline()
    for p, step, _model, forward in built:
        r = results[p["name"]]
        try:
            jobs.reset_memory(device)
            timing = jobs.time_steps(step, device, warmup=1, steps=p["steps"], cap_s=spec["cap_s"])
            r.update(
                status="ok",
                **timing,
                per_s=round(p["batch"] / timing["median_s"], 2),
                wall_per_s=round(p["batch"] / timing["wall_per_step_s"], 2),
                unit="tiles/s" if p.get("tiles") else "pairs/s",
                compiled=forward.active,
                compile_failure=forward.failure,
                **jobs.peak_memory(device),
            )
        except Exception as exc:
            r.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:800])
    print("RESULT " + json.dumps(results), flush=True)


def _cudagraph_skips() -> int:
    """Inductor's count of compiled graphs it ran without CUDA graphs (mode reduce-overhead)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["inductor"]["cudagraph_skips"])
    except Exception:  # a torch without the counter
        return -1


class CompileJob:
    """The compile subprocess, seen from the main process."""

    def __init__(self, args, cfg: RunConfig, device: torch.device, specs: list[dict[str, Any]], log: Path):
        cpus = sorted(os.sched_getaffinity(0))
        cores = cpus[2:] if len(cpus) >= 8 else None  # the main process keeps cores 0-1 for its launches
        self.mine = cpus[:2] if cores else None
        self.all_cores = cpus
        spec = {
            "device": str(device),
            "config": config_to_dict(cfg),
            "jobs": specs,
            "cores": cores,
            "cap_s": args.cap_s,
        }
        env = dict(os.environ)
        if cores:
            env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(len(cores)))
        self.log = log
        self.started = time.perf_counter()
        self.deadline = self.started + args.compile_cap_s
        self.ready: dict | None = None
        self.result: dict | None = None
        self.progress: dict[str, Any] = {}
        self.error: str | None = None
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--compile-worker", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_lines, daemon=True).start()
        if self.mine:
            os.sched_setaffinity(0, set(self.mine))

    @property
    def busy(self) -> bool:
        """Still compiling or warming up (not yet waiting for the go, not finished or failed)."""
        return self.ready is None and self.result is None and self.error is None and self.proc.poll() is None

    def _read_lines(self) -> None:
        """Reader thread: the worker's stdout lines into a queue (``None`` at its end). A ``select`` on the
        pipe missed lines already in the reader's buffer: READY right after PROGRESS was never seen."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def poll(self, timeout: float = 0.0) -> None:
        """Read what the worker printed (waiting up to ``timeout`` seconds for a line)."""
        while self.result is None and self.error is None:
            try:
                line = self.lines.get(timeout=timeout) if timeout > 0 else self.lines.get_nowait()
            except queue.Empty:
                return
            if line is None:
                self.error = f"compile worker exited (code {self.proc.wait()}); see {self.log}"
                return
            kind, _, payload = line.strip().partition(" ")
            if kind == "PROGRESS":
                self.progress.update(json.loads(payload))
            elif kind == "READY":
                self.ready = json.loads(payload)
            elif kind == "RESULT":
                self.result = json.loads(payload)
                return
            timeout = 0.0

    def finish(self) -> dict[str, Any]:
        """Let the worker time its jobs (the GPU is free now) and collect the results."""
        while self.ready is None and self.error is None and time.perf_counter() < self.deadline:
            self.poll(timeout=min(5.0, max(0.1, self.deadline - time.perf_counter())))
        if self.ready is not None and self.error is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
            while self.result is None and self.error is None and time.perf_counter() < self.deadline + 120:
                self.poll(timeout=5.0)
        if self.result is None:
            self.proc.kill()
            self.proc.wait()
            self.error = (
                self.error or f"compile worker over its cap ({time.perf_counter() - self.started:.0f} s)"
            )
        if self.mine:
            os.sched_setaffinity(0, set(self.all_cores))
        out = dict(self.result or self.progress)
        out["_wall_s"] = round(time.perf_counter() - self.started, 1)
        if self.error:
            tail = self.log.read_text(errors="replace")[-1500:] if self.log.is_file() else ""
            out["_error"] = f"{self.error}\n{tail}"
        return out


# ----------------------------------------------------------------------------------------------- main
def run_job(job: dict[str, Any], cfg: RunConfig, device: torch.device, args, profile_txt: Path, header: str):
    kind = job["kind"]
    if kind in ("train", "infer"):
        return jobs.run_timed(cfg, job, device, job["cap_s"])
    if kind == "profile":
        return jobs.run_profile(cfg, job, device, profile_txt, header)
    if kind == "engine":
        return jobs.run_engine(cfg, job, device, job["cap_s"])
    if kind == "loader":
        return jobs.run_loader(cfg, job, job["cap_s"])
    raise ValueError(f"unknown job kind {kind!r}")


def summary(records: list[dict[str, Any]], args) -> dict[str, Any]:
    """Headline figures against the issue's targets."""
    by = {r["name"]: r for r in records if r.get("status") == "ok"}
    f, big, small = args.flagship, max(args.train_batches), min(args.train_batches)

    def val(name: str, key: str = "per_s"):
        return by.get(name, {}).get(key)

    train_big = val(f"train/{f}/b{big}")
    compiled = val(f"compile/train/{f}/b{big}")
    best = max([v for v in (train_big, compiled) if v], default=None)
    ref = val(f"train/{f}/b{big}/ref")
    out = {
        "train_pairs_per_s": {f"b{b}": val(f"train/{f}/b{b}") for b in args.train_batches},
        "train_pairs_per_s_compiled": {f"b{big}": compiled},
        f"train_best_b{big}": best,
        "reference_backend_pairs_per_s": {f"b{big}": ref},
        "speedup_vs_reference": round(best / ref, 1) if best and ref else None,
        "speedup_vs_mambabcd_peer_b32": round(best / PEER["train_b32_bf16"], 2) if best else None,
        "infer_pairs_per_s": val(f"infer/{f}/b{args.infer_batch}"),
        "infer_pairs_per_s_compiled": val(f"compile/infer/{f}/b{args.infer_batch}"),
        "tiles_per_s": val(f"tiles/{f}/{args.tile}"),
        "tiles_per_s_compiled": val(f"compile/tiles/{f}/{args.tile}"),
        "peak_gb_train_b16": val(f"train/{f}/b{small}", "peak_allocated_gb"),
        "deep_variant_trains": f"train/{f}-d{args.deep_depths[-1]}/b{small}" in by,
        "epoch_minutes_7120_crops": round(7120 / best / 60, 2) if best else None,
        "recipe_hours_200_epochs": round(200 * 7120 / best / 3600, 2) if best else None,
        "targets": TARGETS,
        "peer_mambabcd_h100": PEER,
    }
    return out


def print_table(records: list[dict[str, Any]]) -> None:
    print(f"\n{'job':48s} {'status':8s} {'median/s':>10s} {'wall/s':>9s} {'unit':8s} {'peak GB':>8s}  note")
    for r in records:
        note = r.get("error") or r.get("reason") or ""
        if r.get("kind") == "profile" and r.get("status") == "ok":
            note = f"GPU busy {r.get('gpu_busy_fraction')}, {r.get('kernel_launches')} launches, syncs {r.get('sync_calls')}"
        if r.get("compiled") is False:
            note = f"compile fell back to eager: {r.get('compile_failure')}"
        elif r.get("cudagraph_skips"):
            note = f"{r['cudagraph_skips']} compiled graph(s) ran without CUDA graphs (TORCH_LOGS=perf_hints)"
        per = r.get("per_s")
        wall = r.get("wall_per_s")
        peak = r.get("peak_allocated_gb")
        print(
            f"{r['name']:48s} {r.get('status', '?'):8s} {per if per is not None else '':>10} "
            f"{wall if wall is not None else '':>9} {r.get('unit', ''):8s} {peak if peak is not None else '':>8}  "
            f"{str(note).splitlines()[0][:90] if note else ''}"
        )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config", default=str(ROOT / "configs" / "levircd.yaml"), help="run config (loss, optim...)"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="fewer steps and reference runs (the ~5 minute run)")
    p.add_argument("--tiny", action="store_true", help="tiny models and sizes (CPU smoke test)")
    p.add_argument("--flagship", default="subtask_mamba")
    p.add_argument("--baselines", default="mamba_bcd,bit", help="comma-separated models")
    p.add_argument("--conv-baseline", default="bit", help="baseline also timed in the other memory format")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--tile", type=int, default=1024)
    p.add_argument("--train-batches", default="16,32")
    p.add_argument("--infer-batch", type=int, default=64)
    p.add_argument("--tile-batch", type=int, default=4, help="tiles per sliding-window call")
    p.add_argument("--deep-depths", default="2,2,15")
    p.add_argument("--steps", type=int, default=0, help="timed steps per job (0: 6 with --quick, else 12)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--precision", default=None, help="override trainer.precision (e.g. 32 on CPU)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)"
    )
    p.add_argument("--cap-s", type=float, default=20.0, help="time cap of a job (some jobs take a fraction)")
    p.add_argument(
        "--budget-s", type=float, default=290.0, help="whole run; jobs that do not fit are skipped"
    )
    p.add_argument("--compile", dest="compile", action="store_true", default=None)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--compile-cap-s", type=float, default=480.0, help="compile worker: compile + warm-up")
    p.add_argument("--loader-workers", type=int, default=None, help="default: the config's data.num_workers")
    p.add_argument("--only", action="append", default=[], help="glob of job names to run (repeatable)")
    p.add_argument("--skip", action="append", default=[], help="glob of job names to skip (repeatable)")
    p.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    p.add_argument("--tag", default=None, help="file name tag (default: the GPU name, or 'cpu')")
    p.add_argument("--compile-worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tiny:
        args.flagship = "subtask_mamba_tiny" if args.flagship == "subtask_mamba" else args.flagship
        if args.baselines == "mamba_bcd,bit":
            args.baselines = "mamba_bcd_tiny,bit_tiny"
        args.conv_baseline = "bit_tiny" if args.conv_baseline == "bit" else args.conv_baseline
        args.size, args.tile, args.infer_batch, args.tile_batch = 32, 64, 2, 1
        args.train_batches = "2,4" if args.train_batches == "16,32" else args.train_batches
        args.deep_depths = "1,1,2" if args.deep_depths == "2,2,15" else args.deep_depths
        args.steps, args.warmup = args.steps or 2, 1 if args.warmup is None else args.warmup
        args.loader_setups = [(64, 1, False, 24), (128, 8, True, 2)]
        args.loader_workers = 1 if args.loader_workers is None else args.loader_workers
    else:
        args.loader_setups = [(256, 50, False, 64), (1024, 200, False, 16), (1024, 200, True, 16)]
    args.baselines = [m for m in args.baselines.split(",") if m]
    args.train_batches = [int(b) for b in args.train_batches.split(",")]
    args.deep_depths = [int(d) for d in args.deep_depths.split(",")]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compile_worker is not None:
        compile_worker(json.loads(args.compile_worker))
        return 0
    t_start = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device; use --device cpu", file=sys.stderr)
        return 2
    cfg = load_config(args.config, args.set)
    raw = config_to_dict(cfg)
    if args.precision:
        raw["trainer"]["precision"] = args.precision
    elif device.type == "cpu":
        raw["trainer"]["precision"] = "32"
    cfg = parse_config(raw)
    if args.compile is None:
        args.compile = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    tag = args.tag or slug(gpu)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_json = out_dir / f"train_speed_{tag}.json"
    profile_txt = out_dir / f"train_profile_{tag}.txt"
    command = (
        " ".join([Path(sys.executable).name, *sys.argv])
        if argv is None
        else "train_speed.py " + " ".join(argv)
    )
    header = f"{command}\ndevice {gpu}, torch {torch.__version__}"
    records: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "benchmark": "train_speed",
        "command": command,
        "device": device_info(device),
        "versions": versions(),
        "config": str(args.config),
        "settings": {
            "precision": cfg.trainer.precision,
            "size": args.size,
            "tile": args.tile,
            "loss": cfg.loss,
            "optim": config_to_dict(cfg)["optim"],
            "gradient_clip_val": cfg.trainer.gradient_clip_val,
            "channels_last": cfg.trainer.channels_last,
            "eval": {
                "window": cfg.eval.window,
                "overlap": cfg.eval.overlap,
                "window_batch": cfg.eval.window_batch,
            },
            "cudnn_benchmark": device.type == "cuda",
            "budget_s": args.budget_s,
            "cap_s": args.cap_s,
        },
        "jobs": records,
    }

    def save() -> None:
        result["summary"] = summary(records, args)
        result["total_s"] = round(time.perf_counter() - t_start, 1)
        out_json.write_text(json.dumps(result, indent=2, default=str) + "\n")

    compile_job = None
    specs = compile_plan(args, cfg) if args.compile else []
    if specs:
        compile_job = CompileJob(args, cfg, device, specs, out_dir / f".train_speed_compile_{tag}.log")
    for job in plan(args, cfg):
        rec = {"name": job["name"], "kind": job["kind"], "batch": job.get("batch"), "cap_s": job["cap_s"]}
        left = args.budget_s - (time.perf_counter() - t_start)
        if job["kind"] == "loader" and compile_job is not None:
            records.extend(_compile_records(compile_job.finish(), specs))
            compile_job = None
            save()
            left = args.budget_s - (time.perf_counter() - t_start)
        if left < min(job["cap_s"], 10):
            rec.update(
                status="skipped", reason=f"budget: {left:.0f} s left of --budget-s {args.budget_s:.0f}"
            )
        else:
            if compile_job is not None:  # timings taken while the worker compiles share the CPU and GPU
                compile_job.poll()
                rec["compile_worker_busy"] = compile_job.busy
            t = time.perf_counter()
            try:
                rec.update(run_job(job, cfg, device, args, profile_txt, header))
                rec["status"] = "ok"
            except Exception as exc:
                rec.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:800])
                rec["traceback"] = traceback.format_exc()[-1500:]
                del exc
            rec["seconds"] = round(time.perf_counter() - t, 1)
        records.append(rec)
        print(
            f"[{time.perf_counter() - t_start:6.1f} s] {rec['name']}: {rec['status']} "
            f"{rec.get('per_s', '')} {rec.get('unit', '')} {rec.get('error', rec.get('reason', ''))}"[:200],
            flush=True,
        )
        if compile_job is not None:
            compile_job.poll()
        save()
    if compile_job is not None:
        records.extend(_compile_records(compile_job.finish(), specs))
    save()
    print_table(records)
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {out_json}" + (f" and {profile_txt}" if profile_txt.is_file() else ""))
    return 0


def _compile_records(out: dict[str, Any], specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    recs = []
    for s in specs:
        r = {"name": s["name"], "kind": "compile-" + s["kind"], "batch": s["batch"], **out.get(s["name"], {})}
        r.setdefault("status", "failed")
        if r["status"] != "ok" and "error" not in r:
            r["error"] = out.get("_error", "no result from the compile worker")
        r["worker_wall_s"] = out.get("_wall_s")
        recs.append(r)
    return recs


if __name__ == "__main__":
    sys.exit(main())
