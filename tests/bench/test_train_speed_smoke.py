"""``bench/train_speed.py`` runs end to end on CPU (tiny models and sizes): every selected job succeeds and
the JSON and profile are written. Speeds are not checked (the GPU run is the measurement)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import geomamba

BENCH = Path(__file__).resolve().parents[2] / "bench" / "train_speed.py"


def _run_bench(tmp_path, *args: str, timeout: int) -> dict:
    """``bench/train_speed.py --device cpu --tiny ARGS`` in a subprocess; its JSON."""
    cmd = [sys.executable, str(BENCH), "--device", "cpu", "--tiny", *args, "--out-dir", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(geomamba.__file__).parents[1]), env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / "train_speed_cpu.json").read_text())


@pytest.mark.slow
def test_train_speed_runs_on_cpu(tmp_path):
    jobs = ["train/subtask_mamba_tiny/b2", "tiles/bit_tiny/*", "profile/*", "loader/64px*"]
    only = [a for j in jobs for a in ("--only", j)]
    result = _run_bench(tmp_path, "--no-compile", *only, timeout=300)
    status = {j["name"]: j["status"] for j in result["jobs"]}
    assert status == {
        "train/subtask_mamba_tiny/b2": "ok",
        "tiles/bit_tiny/64": "ok",
        "profile/subtask_mamba_tiny/b4": "ok",
        "loader/64px-crops1-disk": "ok",
    }, [j.get("error") for j in result["jobs"]]
    train = result["jobs"][0]
    assert train["steps"] >= 1 and train["per_s"] > 0 and result["versions"]["torch"]
    assert "top operators" in (tmp_path / "train_profile_cpu.txt").read_text()


@pytest.mark.slow
def test_engine_job_compiles_the_model(tmp_path):
    """``engine/<model>/b<B>/compiled``: the Lightning engine with ``trainer.compile`` (aot_eager here: no
    code generation), timed after a warm-up that holds the compile."""
    args = ("--compile", "--only", "engine/*", "--set", "trainer.compile_backend=aot_eager")
    jobs = _run_bench(tmp_path, *args, timeout=400)["jobs"]
    status = {j["name"]: j["status"] for j in jobs}
    assert status == {"engine/subtask_mamba_tiny/b4": "ok", "engine/subtask_mamba_tiny/b4/compiled": "ok"}, [
        j.get("error") for j in jobs
    ]
    assert all(j["per_s"] > 0 and j["steps"] >= 1 for j in jobs)
