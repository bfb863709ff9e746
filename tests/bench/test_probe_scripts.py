"""The issue-9 probes run end to end on CPU with tiny settings and write their JSON: ``compile_shapes.py``
(a second compiled shape in the same process) and ``fadc_ab.py`` (FADC's samplers in turns, eager and compiled).
Speeds are not checked (the GPU run is the measurement)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import geomamba

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, tmp_path: Path, *args: str) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / script), "--config", str(ROOT / "configs" / "demo.yaml")]
    cmd += [*args, "--out-dir", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(geomamba.__file__).parents[1]), env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out,) = tmp_path.glob("*.json")
    return json.loads(out.read_text())


@pytest.mark.slow
def test_compile_shapes_compiles_a_second_shape(tmp_path):
    got = _run("compile_shapes.py", tmp_path, "--backend", "eager", "--batch", "3", "--other-batch", "5",
               "--size", "32", "--steps", "1", "--set", "trainer.compile_inductor.layout_optimization=false")  # fmt: skip
    phases = got["phases"]
    assert list(phases) == ["alone", "other", "after_other"]
    assert [p["batch"] for p in phases.values()] == [3, 5, 3]
    assert phases["alone"]["unique_graphs"] == 1 and phases["after_other"]["unique_graphs"] == 2
    assert all(p["per_s"] > 0 and p["host_ms"] > 0 for p in phases.values())
    assert got["inductor"] == {"layout_optimization": False} and got["dynamic"] == "auto"


@pytest.mark.slow
def test_fadc_ab_times_each_sampler(tmp_path):
    got = _run("fadc_ab.py", tmp_path, "--batch", "1", "--size", "64", "--turns", "1", "--steps", "1")
    assert set(got["per_s"]) == {"taps", "composed", "deform"} and got["compiled"] is False
    assert all(len(v) == 1 and v[0] > 0 for v in got["per_s"].values())


@pytest.mark.slow
def test_fadc_ab_compiled_with_overrides(tmp_path):
    got = _run("fadc_ab.py", tmp_path, "--compiled", "--samplers", "taps,deform", "--batch", "1", "--size", "64",
               "--turns", "1", "--steps", "1", "--set", "trainer.compile_backend=eager",
               "--set", "model.options.depths=[1,1,1]")  # fmt: skip
    assert set(got["per_s"]) == {"taps", "deform"} and got["compiled"] is True
    assert got["overrides"] == ["trainer.compile_backend=eager", "model.options.depths=[1,1,1]"]
