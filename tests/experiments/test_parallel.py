"""Runs spread over a (fake) device list: one child process per run, one run per device at a time."""

from __future__ import annotations

import json
import os
import sys

import pytest
from _experiment_helpers import write_experiment

from geomamba.experiments.parallel import Job, run_on_devices
from geomamba.experiments.runner import ExperimentError, resolve_devices, run_experiment

# A child that takes its device's lock file exclusively (exit 3 if another job holds it), records
# what it saw, releases the lock and exits with the status given on its command line.
CHILD = """
import json, os, sys
folder, key, status = sys.argv[1], sys.argv[2], int(sys.argv[3])
device = os.environ["CUDA_VISIBLE_DEVICES"]
lock = os.path.join(folder, "lock-" + device)
try:
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
except FileExistsError:
    sys.exit(3)
with open(os.path.join(folder, key + ".json"), "w") as f:
    json.dump({"device": device, "pid": os.getpid()}, f)
print("child", key, "on", device)
os.close(fd)
os.remove(lock)
sys.exit(status)
"""


def _jobs(tmp_path, statuses):
    return [
        Job(
            f"j{i}",
            [sys.executable, "-c", CHILD, str(tmp_path), f"j{i}", str(s)],
            tmp_path / "logs" / f"j{i}.log",
        )
        for i, s in enumerate(statuses)
    ]


def test_jobs_share_devices_one_at_a_time(tmp_path):
    codes = run_on_devices(_jobs(tmp_path, [0, 0, 1, 0, 0]), ["3", "7"], poll_seconds=0.01)
    # Every job ran once, none found its device busy (3), the failing one kept its status.
    assert codes == {"j0": 0, "j1": 0, "j2": 1, "j3": 0, "j4": 0}
    seen = {k: json.loads((tmp_path / f"{k}.json").read_text()) for k in codes}
    assert {s["device"] for s in seen.values()} <= {"3", "7"}
    assert {seen["j0"]["device"], seen["j1"]["device"]} == {"3", "7"}  # the first two start at once
    assert len({s["pid"] for s in seen.values()} | {os.getpid()}) == 6
    assert "child j2 on" in (tmp_path / "logs" / "j2.log").read_text()


def test_fail_fast_starts_nothing_after_a_failure(tmp_path):
    codes = run_on_devices(_jobs(tmp_path, [1, 0, 0]), ["0"], fail_fast=True, poll_seconds=0.01)
    assert codes == {"j0": 1}


def test_device_lists():
    assert resolve_devices(None) is None
    assert resolve_devices("0,2") == ["0", "2"] and resolve_devices([1, 3]) == ["1", "3"]
    with pytest.raises(ExperimentError, match="distinct device ids"):
        resolve_devices([1, 1])
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ExperimentError, match="no CUDA GPU is visible"):
            resolve_devices("auto")


@pytest.mark.slow
def test_experiment_over_two_fake_devices(exp_dataset, tmp_path):
    """The real runner in parallel mode: each run in its own process with its own device (CPU runs
    here, so the device ids are only labels), then one report."""
    # Registered models (the children do not import the tests' own tiny model).
    config = write_experiment(tmp_path, exp_dataset, models=["fc_ef", "fc_siam_diff"], devices=[0, 1])
    result = run_experiment(config, "compare", ["efficiency.enabled=false"])
    assert sorted(result.ran) == ["synth/fc_ef", "synth/fc_siam_diff"] and not result.failed
    markers = [json.loads(p.read_text()) for p in sorted((result.folder / "runs").rglob("finished.json"))]
    assert sorted(m["cuda_visible_devices"] for m in markers) == ["0", "1"]
    assert os.getpid() not in {m["pid"] for m in markers}
    assert len(list((result.folder / "logs").glob("synth__*.log"))) == 2
    assert (result.folder / "report.html").is_file()
    # A rerun in parallel mode starts no child: everything is finished.
    assert run_experiment(config, "compare", ["efficiency.enabled=false"]).ran == []
