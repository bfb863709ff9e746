"""Kill and resume through the command line: ``geomamba train`` in a subprocess is killed with SIGKILL in the
middle of an epoch (no chance to save anything), ``geomamba train ... --resume`` finishes it, and the result is
bit-identical to a run that was never interrupted: weights, optimizer state, LR schedule, metrics.json and the
best checkpoint's name (CPU, deterministic settings, one thread)."""

import signal
import subprocess
import time

import pytest
import torch
from _reliability_helpers import assert_same_run, cli_command, cli_env

from geomamba.engine.checkpoint import verify_checkpoint

# 6 training tiles, batches of 2: 3 steps per epoch, 2 epochs; a resume point after every step.
_EXTRA = ("trainer.max_epochs=2", "trainer.save_every_n_steps=1", "eval.test_after_fit=false")
_KILL_AFTER_STEP = 4  # the second step of epoch 1


def _saved_step(path) -> int:
    """The global step of an intact checkpoint at ``path`` (-1 when there is none yet)."""
    try:
        return int(verify_checkpoint(path)["global_step"])
    except Exception:  # not there yet, or replaced while we read it
        return -1


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_run(rel_dataset, rel_overrides, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("seed: 7\n")
    env = cli_env()

    def command(out, *args):
        return cli_command("train", str(config), *rel_overrides(rel_dataset, out, "run", *_EXTRA), *args)

    ref = subprocess.run(command(tmp_path / "ref", "--fresh"), env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-3000:]

    last = tmp_path / "killed" / "run" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        command(tmp_path / "killed", "--fresh"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Watch the file system (polling, not timing): kill as soon as the step's resume point is on disk.
        while proc.poll() is None and _saved_step(last) < _KILL_AFTER_STEP:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = torch.load(last, weights_only=True)
    assert _KILL_AFTER_STEP <= killed_at["global_step"] < 6  # killed before the end

    resumed = subprocess.run(
        command(tmp_path / "killed", "--resume"), env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {last}" in resumed.stderr
    assert_same_run(tmp_path / "ref" / "run", tmp_path / "killed" / "run")
