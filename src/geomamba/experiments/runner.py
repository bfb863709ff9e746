"""The experiment runner: train, test and measure every run of an experiment, skipping finished ones.

``run_experiment(config, "compare" | "ablate")`` writes under ``<output_dir>/<name>/``::

    experiment.yaml          the experiment config as run (with the command line's overrides)
    experiment.log           the runner's log
    figure_samples.json      the test samples drawn in the error-map figures, per dataset
    runs/<dataset>/<run>/    each run: the engine's outputs (config.yaml, checkpoints/, metrics.json,
                             curves/, error_maps/, logs/, train.log), plus
        started.json         written when the run starts (its config fingerprint)
        finished.json        the finished marker (written atomically, last): test scores, parameters,
                             GFLOPs, speeds, device
        failed.json          the error of the last failed attempt
        figure/<sample>.png  its change maps of the figure samples
    logs/<dataset>__<run>.log   console output of each run started with --devices
    results.csv, results.md, report.html, figures/   (see geomamba.experiments.report)

A run with ``finished.json`` whose fingerprint matches is skipped; any other run trains, resuming from
its ``checkpoints/last.ckpt`` when an interrupted attempt left one. A run whose config changed since it
started is an error unless ``changed="rerun"`` (its folder is moved aside to ``<run>.stale-<time>`` and
it runs again) or ``changed="keep"`` (its old results are kept; an unfinished one resumes).
"""

from __future__ import annotations

import fnmatch
import gc
import json
import logging
import math
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from geomamba.data.errors import GeomambaError
from geomamba.engine.callbacks import write_json
from geomamba.engine.config import ConfigError
from geomamba.experiments.config import ExperimentConfig, load_experiment, split_overrides
from geomamba.experiments.figures import select_figure_samples
from geomamba.experiments.plan import PlannedRun, changed_keys, plan_runs, result_keys

__all__ = [
    "CHANGED_POLICIES",
    "ExperimentError",
    "ExperimentResult",
    "execute_run",
    "run_experiment",
    "run_status",
]

log = logging.getLogger("geomamba.experiments")

CHANGED_POLICIES = ("error", "rerun", "keep")
FINISHED, STARTED, FAILED = "finished.json", "started.json", "failed.json"


class ExperimentError(GeomambaError):
    """An experiment cannot go on (changed runs, failed runs, bad device list); the message says why."""


@dataclass
class ExperimentResult:
    """Where an experiment is, what ran, and what failed."""

    folder: Path
    runs: list[PlannedRun]
    status: dict[str, str]
    ran: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    report: dict[str, Path] = field(default_factory=dict)


def read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("%s: unreadable, ignored", path)
        return None
    return data if isinstance(data, dict) else None


def read_marker(run: PlannedRun) -> dict[str, Any] | None:
    """The finished marker of a run (None when it has not finished)."""
    return read_json(run.run_dir / FINISHED)


def run_status(run: PlannedRun) -> str:
    """``finished``, ``changed`` (finished or started with another config), ``failed``, ``partial``
    (interrupted, ``last.ckpt`` present) or ``pending``."""
    marker = read_marker(run)
    if marker is not None:
        return "finished" if marker.get("fingerprint") == run.fingerprint else "changed"
    started = read_json(run.run_dir / STARTED)
    if started is not None and started.get("fingerprint") != run.fingerprint:
        return "changed"
    if (run.run_dir / FAILED).is_file():
        return "failed"
    if (run.run_dir / "checkpoints" / "last.ckpt").is_file():
        return "partial"
    return "pending"


def _positive_scores(scores: dict[str, Any], positive: str) -> dict[str, float]:
    per = scores["per_class"][positive]
    return {
        "Precision": per["Precision"],
        "Recall": per["Recall"],
        "F1": per["F1"],
        "IoU": per["IoU"],
        "OA": scores["OA"],
        "Kappa": scores["Kappa"],
    }


def _drop_run_log_file() -> None:
    """Detach the engine's per-run ``train.log`` handler once a run is over."""
    logger = logging.getLogger("geomamba")
    for h in list(logger.handlers):
        if getattr(h, "_geomamba_file", None) is not None:
            logger.removeHandler(h)
            h.close()


def execute_run(
    run: PlannedRun, exp: ExperimentConfig, figure_names: list[str], *, fresh: bool = False
) -> dict:
    """Train (resuming when possible) and test one run, measure it, predict the figure samples, and
    write its finished marker; returns the marker."""
    from geomamba import __version__, summary
    from geomamba.data.io import raster_info
    from geomamba.data.layout import discover_split
    from geomamba.engine.inference import predict_scene
    from geomamba.engine.module import build_loss_from_config, build_model, load_module
    from geomamba.engine.train import train
    from geomamba.experiments.speed import measure_speed, run_device

    run_dir = run.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FAILED).unlink(missing_ok=True)
    write_json(
        run_dir / STARTED,
        {
            "fingerprint": run.fingerprint,
            "key": run.key,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "config": result_keys(run.config),
        },
    )
    t0 = time.perf_counter()
    result = train(run.config, resume=False if fresh else None)
    if result.test_scores is None:
        raise ExperimentError(f"run {run.key} was not tested (no test split in {run.config.data.root}?)")
    ckpt = result.best_checkpoint or result.last_checkpoint
    module = load_module(ckpt)
    cfg = module.cfg
    device = run_device(cfg)
    positive = cfg.data.class_names[1]
    channels = len(cfg.data.mean) if cfg.data.mean else int(cfg.model.options.get("in_channels", 3))
    e = exp.efficiency
    model = module.model.to(device)
    s = summary(model, (1, 2, channels, e.input_size, e.input_size), print_table=False)
    samples, _ = discover_split(cfg.data.root, cfg.data.splits.test, list_file=cfg.data.list_files.test)
    by_name = {x.name: x for x in samples}
    ev = cfg.eval
    for name in figure_names:  # the change maps drawn in the experiment's error-map figure
        a = by_name[name].a
        info = raster_info(a)
        whole = math.ceil(max(info.height, info.width) / ev.pad_multiple) * ev.pad_multiple
        predict_scene(  # as the test pass predicts: by the run's window, or the whole image
            model,
            a,
            by_name[name].b,
            run_dir / "figure" / f"{name}.png",
            mean=cfg.data.mean,
            std=cfg.data.std,
            bands=cfg.data.bands,
            window=ev.window or whole,
            overlap=ev.overlap if ev.window else 0,
            pad_multiple=ev.pad_multiple,
            tta=ev.tta,
            device=device,
            progress=False,
        )
    del model, module
    speed = None
    if e.enabled:
        log.info("%s: timing inference and training on %s", run.key, device)
        speed = measure_speed(
            build_model(cfg),
            build_loss_from_config(cfg),
            in_channels=channels,
            input_size=e.input_size,
            batch_size=e.batch_size,
            warmup=e.warmup,
            iters=e.iters,
            device=device,
            precision=cfg.trainer.precision,
            num_classes=len(cfg.data.class_names),
        ).to_dict()
    history = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")).get("history", [])
    marker = {
        "status": "finished",
        "key": run.key,
        "dataset": run.dataset,
        "run": run.run,
        "model": run.model,
        "version": run.version,
        "code": run.code,
        "fingerprint": run.fingerprint,
        "config": result_keys(run.config),
        "scores": _positive_scores(result.test_scores, positive),
        "positive_class": positive,
        "test": result.test_scores,
        "params": s.total_params,
        "gflops": s.gflops,
        "gmacs": s.macs / 1e9,
        "flops_input": [1, 2, channels, e.input_size, e.input_size],
        "speed": speed,
        "device": str(device),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "epochs": (history[-1]["epoch"] + 1) if history else 0,
        "best_epoch": result.best["epoch"] if result.best else None,
        "checkpoint": str(ckpt),
        "figure_samples": figure_names,
        "seconds_this_session": round(time.perf_counter() - t0, 1),
        "geomamba": __version__,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_json(run_dir / FINISHED, marker)
    return marker


# --------------------------------------------------------------------------------------------------


def _figure_names(exp: ExperimentConfig, runs: list[PlannedRun]) -> dict[str, list[str]]:
    """Figure samples per dataset, cached in ``figure_samples.json`` (recomputed when the root, split,
    count or names change)."""
    path = exp.folder / "figure_samples.json"
    cache = read_json(path) or {}
    out, dirty = {}, False
    for ds in dict.fromkeys(r.dataset for r in runs):
        cfg = next(r.config for r in runs if r.dataset == ds)
        d = cfg.data
        want = {
            "root": str(Path(d.root).resolve()),
            "split": d.splits.test,
            "n": exp.figure.samples,
            "names": exp.figure.names.get(ds),
        }
        entry = cache.get(ds)
        if entry and all(entry.get(k) == v for k, v in want.items()):
            out[ds] = entry["samples"]
            continue
        names = select_figure_samples(
            d.root,
            d.splits.test,
            exp.figure.samples,
            names=want["names"],
            ignore_value=d.ignore_value,
            list_file=d.list_files.test,
        )
        cache[ds] = {**want, "samples": names}
        out[ds], dirty = names, True
    if dirty:
        write_json(path, cache)
    return out


def _select(runs: list[PlannedRun], only: list[str] | None) -> list[PlannedRun]:
    if not only:
        return runs
    picked = [r for r in runs if any(fnmatch.fnmatch(r.key, p) or fnmatch.fnmatch(r.run, p) for p in only)]
    if not picked:
        raise ExperimentError(
            f"--only {' '.join(only)} matches no run; runs: {', '.join(r.key for r in runs)}"
        )
    return picked


def _handle_changed(runs: list[PlannedRun], status: dict[str, str], policy: str) -> None:
    changed = [r for r in runs if status[r.key] == "changed"]
    if not changed:
        return
    names = ", ".join(r.key for r in changed)
    if policy == "error":
        lines = []
        for r in changed:
            old = (read_marker(r) or read_json(r.run_dir / STARTED) or {}).get("config") or {}
            diff = changed_keys(old, result_keys(r.config)) if old else ["(earlier config not recorded)"]
            lines.append(f"{r.key}: {'; '.join(diff[:4])}{' ...' if len(diff) > 4 else ''}")
        raise ExperimentError(
            f"the config of {len(changed)} run(s) changed since they ran: {'  |  '.join(lines)}. Pass "
            "--changed rerun to move their folders aside and run them again, or --changed keep to keep "
            "their results"
        )
    if policy == "rerun":
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for r in changed:
            dest = r.run_dir.with_name(f"{r.run}.stale-{stamp}")
            log.warning("%s: config changed; moving its folder to %s and running it again", r.key, dest)
            r.run_dir.rename(dest)
            status[r.key] = "pending"
    else:
        log.warning("config changed since these runs started; keeping them as they are: %s", names)
        for r in changed:
            status[r.key] = "finished" if read_marker(r) is not None else "partial"


def resolve_devices(devices: str | list[Any] | None) -> list[str] | None:
    """``None`` (run in this process), ``"auto"`` (every visible GPU) or a list of device ids."""
    if devices is None:
        return None
    if devices == "auto":
        n = torch.cuda.device_count()
        if n == 0:
            raise ExperimentError("--devices auto: no CUDA GPU is visible; give a list or leave it out")
        return [str(i) for i in range(n)]
    if isinstance(devices, str):
        devices = [d for d in devices.split(",") if d.strip()]
    out = [str(d).strip() for d in devices]
    if not out or len(set(out)) != len(out):
        raise ExperimentError(f"--devices {devices!r}: give distinct device ids, e.g. 0,1,2,3")
    return out


def _child_command(config: Path, kind: str, overrides: list[str], run: PlannedRun, changed: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "geomamba.cli.main",
        "experiment",
        kind,
        str(config),
        *overrides,
        "devices=null",  # the child runs its one run in its own process
        "--only",
        run.key,
        "--no-report",
        "--changed",
        "keep" if changed == "keep" else "error",
    ]


class _ExperimentLog:
    """The runner's log file ``<experiment>/experiment.log`` while an experiment runs."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def __enter__(self) -> _ExperimentLog:
        log.addHandler(self.handler)
        return self

    def __exit__(self, *exc: object) -> None:
        log.removeHandler(self.handler)
        self.handler.close()


def run_experiment(
    config: str | Path,
    kind: str,
    overrides: list[str] | None = None,
    *,
    only: list[str] | None = None,
    devices: str | list[Any] | None = None,
    report: bool = True,
    report_only: bool = False,
    changed: str = "error",
    fail_fast: bool = False,
) -> ExperimentResult:
    """Run (or resume) an experiment, then write its report.

    Args:
        config: experiment YAML (see ``geomamba.experiments.config``).
        kind: ``"compare"`` (the ``models`` list) or ``"ablate"`` (the ``ablation`` grid).
        overrides: ``key=value``: experiment keys (``datasets.X.root=...``) or recipe keys
            (``trainer.max_epochs=1``, applied to every run, last).
        only: run only the runs whose ``<dataset>/<run>`` or ``<run>`` matches one of these globs.
        devices: spread runs over these GPUs, one run per GPU at a time, each in its own process
            (``CUDA_VISIBLE_DEVICES`` set to its GPU); ``"auto"`` = every visible GPU; default (None or
            the config's ``devices``): one run after another in this process.
        report: write results.csv/.md, figures and report.html at the end.
        report_only: run nothing; write the report of the runs finished so far.
        changed: what to do with runs whose config changed since they ran: ``error``, ``rerun``, ``keep``.
        fail_fast: stop at the first failed run (default: go on and report the failures at the end).

    Raises ``ExperimentError`` listing the failed runs (after the report) when any failed.
    """
    from geomamba.engine.train import setup_logging
    from geomamba.experiments.parallel import Job, run_on_devices
    from geomamba.experiments.report import build_report

    if changed not in CHANGED_POLICIES:
        raise ConfigError(f"changed={changed!r} is not one of {', '.join(CHANGED_POLICIES)}")
    overrides = list(overrides or [])
    exp_over, recipe_over = split_overrides(overrides)
    exp = load_experiment(config, exp_over)
    setup_logging()
    runs = plan_runs(exp, kind, recipe_over)
    device_list = None if report_only else resolve_devices(devices if devices is not None else exp.devices)
    folder = exp.folder
    folder.mkdir(parents=True, exist_ok=True)
    status = {r.key: run_status(r) for r in runs}
    result = ExperimentResult(folder, runs, status)
    with _ExperimentLog(folder / "experiment.log"):
        if not report_only:
            if only is None:
                text = (
                    yaml.safe_dump(
                        {"config": str(exp.path), "kind": kind, "overrides": overrides}, sort_keys=False
                    )
                    + "# the experiment config:\n"
                    + Path(exp.path).read_text(encoding="utf-8")
                )
                (folder / "experiment.yaml").write_text(text, encoding="utf-8")
            selected = _select(runs, only)
            _handle_changed(selected, status, changed)
            todo = [r for r in selected if status[r.key] != "finished"]
            skipped = [r.key for r in selected if status[r.key] == "finished"]
            if skipped:
                log.info("%d run(s) already finished, skipped: %s", len(skipped), ", ".join(skipped))
            figure_names = _figure_names(exp, runs)
            if todo and device_list is not None:
                log.info(
                    "%d run(s) over %d device(s): %s", len(todo), len(device_list), ", ".join(device_list)
                )
                jobs = [
                    Job(
                        r.key,
                        _child_command(Path(exp.path), kind, overrides, r, changed),
                        folder / "logs" / f"{r.dataset}__{r.run}.log",
                    )
                    for r in todo
                ]
                codes = run_on_devices(jobs, device_list, fail_fast=fail_fast)
                for r in todo:
                    code = codes.get(r.key)
                    if code is not None:
                        result.ran.append(r.key)
                    if code not in (0, None):
                        result.failed.append(r.key)
            else:
                for i, r in enumerate(todo, 1):
                    log.info("[%d/%d] %s (%s): %s", i, len(todo), r.key, r.model, status[r.key])
                    result.ran.append(r.key)
                    try:
                        execute_run(r, exp, figure_names[r.dataset])
                    except Exception as exc:
                        msg = f"{type(exc).__name__}: {exc}"
                        log.error("%s failed: %s", r.key, msg)
                        r.run_dir.mkdir(parents=True, exist_ok=True)
                        write_json(r.run_dir / FAILED, {"error": msg, "traceback": traceback.format_exc()})
                        result.failed.append(r.key)
                        if fail_fast:
                            break
                    finally:
                        _drop_run_log_file()
                        gc.collect()
                        if torch.cuda.is_available():
                            torch.cuda.empty_cache()
            for r in runs:
                status[r.key] = run_status(r)
        if report:
            result.report = build_report(exp, kind, runs)
    if result.failed:
        where = [str(r.run_dir / FAILED) for r in runs if r.key in result.failed]
        logs = f" (console logs in {folder / 'logs'})" if device_list is not None else ""
        raise ExperimentError(
            f"{len(result.failed)} run(s) failed: {', '.join(result.failed)}; see {', '.join(where)}{logs}"
        )
    return result
