"""Independent runs spread over GPUs: one child process per run, one run per GPU at a time.

Each job is a command started with ``CUDA_VISIBLE_DEVICES`` set to its GPU (so the child sees exactly one
GPU, as ``cuda:0``), its console output going to the job's log file. When a job ends the next one starts
on the freed GPU. The children of the experiment runner are ``geomamba experiment ... --only RUN``, so
each writes its own run folder and finished marker; the parent writes the report once all have ended.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geomamba

__all__ = ["Job", "run_on_devices"]

log = logging.getLogger("geomamba.experiments")


@dataclass
class Job:
    """A command to run on one device; ``log`` receives its stdout and stderr."""

    key: str
    command: list[str]
    log: Path


def _child_env(device: str) -> dict[str, str]:
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = device
    # The child imports this same geomamba, installed or not.
    src = str(Path(geomamba.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def run_on_devices(
    jobs: Sequence[Job], devices: Sequence[str], *, fail_fast: bool = False, poll_seconds: float = 0.5
) -> dict[str, int]:
    """Run ``jobs`` over ``devices``, at most one job per device at a time, in order.

    Returns ``{job key: exit status}`` for every job that ran. With ``fail_fast``, no job starts after
    one has failed (running ones finish). On KeyboardInterrupt the running children are terminated.
    """
    if not devices:
        raise ValueError("run_on_devices needs at least one device")
    queue = deque(jobs)
    free = list(devices)
    running: dict[str, tuple[Job, subprocess.Popen, object]] = {}
    codes: dict[str, int] = {}
    failed = False
    try:
        while queue or running:
            while queue and free and not (fail_fast and failed):
                device, job = free.pop(0), queue.popleft()
                job.log.parent.mkdir(parents=True, exist_ok=True)
                out = open(job.log, "ab")
                log.info("%s: starting on device %s (log %s)", job.key, device, job.log)
                proc = subprocess.Popen(
                    job.command, stdout=out, stderr=subprocess.STDOUT, env=_child_env(device)
                )
                running[device] = (job, proc, out)
            if fail_fast and failed and not running:
                break
            ended = [d for d, (_, proc, _) in running.items() if proc.poll() is not None]
            if not ended:
                time.sleep(poll_seconds)
                continue
            for device in ended:
                job, proc, out = running.pop(device)
                out.close()  # type: ignore[attr-defined]
                codes[job.key] = proc.returncode
                if proc.returncode == 0:
                    log.info("%s: finished on device %s", job.key, device)
                else:
                    failed = True
                    log.error(
                        "%s: exit status %d on device %s; see %s", job.key, proc.returncode, device, job.log
                    )
                free.append(device)
    except KeyboardInterrupt:
        for job, proc, _ in running.values():
            log.warning("%s: interrupted, stopping it", job.key)
            proc.terminate()
        for _, proc, out in running.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            out.close()  # type: ignore[attr-defined]
        raise
    if queue:
        log.warning("not started after a failure: %s", ", ".join(j.key for j in queue))
    return codes
