"""Atomic checkpoints, integrity checks on load, fallback to the previous good checkpoint, safe loading and
checkpoint/model mismatches."""

import argparse
import logging
import shutil
import socket
import subprocess

import pytest
import torch

from geomamba.engine.checkpoint import (
    AtomicCheckpointIO,
    CheckpointError,
    atomic_save,
    find_resume_checkpoint,
    load_checkpoint,
    previous_path,
    verify_checkpoint,
)
from geomamba.engine.config import load_config
from geomamba.engine.module import load_module
from geomamba.engine.train import train


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch, exc):
    path = tmp_path / "last.ckpt"
    atomic_save({"w": torch.ones(3)}, path)
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)  # half written when the "crash" comes
        raise exc

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(type(exc)):
        atomic_save({"w": torch.zeros(3)}, path, keep_previous=True)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))
    assert _hidden(tmp_path) == [] and not previous_path(path).exists()


def test_previous_checkpoint_is_kept_and_stale_temporaries_removed(tmp_path):
    path = tmp_path / "last.ckpt"
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    (tmp_path / f".last.ckpt.tmp-{host}-{dead.pid}").write_bytes(b"left by a killed process")
    (tmp_path / f".last.ckpt.tmp-{host}-1").write_bytes(b"a live process (init) is writing")
    atomic_save({"step": 1}, path, keep_previous=True)
    atomic_save({"step": 2}, path, keep_previous=True)
    assert load_checkpoint(path)["step"] == 2
    assert load_checkpoint(tmp_path / "last.prev.ckpt")["step"] == 1
    assert _hidden(tmp_path) == [f".last.ckpt.tmp-{host}-1"]


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.randn(64, 64)}, "step": 3}, path)
    return path


@pytest.mark.parametrize("cut", [0.0, 0.01, 0.5, 0.99])
def test_truncated_checkpoint_is_detected(good_file, cut):
    data = good_file.read_bytes()
    good_file.write_bytes(data[: int(len(data) * cut)])
    msg = "empty checkpoint file" if cut == 0 else "unreadable or corrupt checkpoint"
    with pytest.raises(CheckpointError, match=rf"good\.ckpt: {msg}"):
        load_checkpoint(good_file)


def test_flipped_bits_are_detected_although_torch_load_accepts_them(good_file):
    data = bytearray(good_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    good_file.write_bytes(bytes(data))
    torch.load(good_file, weights_only=True)  # torch itself reads the damaged tensor silently
    with pytest.raises(CheckpointError, match=r"good\.ckpt: .*record '.*data/0' fails its CRC check"):
        load_checkpoint(good_file)
    with pytest.raises(CheckpointError, match="CRC"):
        AtomicCheckpointIO().load_checkpoint(good_file)


def test_pickled_objects_need_an_explicit_trust_flag(tmp_path):
    path = tmp_path / "pickled.ckpt"
    torch.save({"args": argparse.Namespace(lr=1.0), "state_dict": {}}, path)
    with pytest.raises(
        CheckpointError, match=r"pickled\.ckpt: holds Python objects \(argparse\.Namespace\).*trust"
    ):
        load_checkpoint(path)
    with pytest.warns(UserWarning, match="weights_only=False"):
        assert load_checkpoint(path, trust=True)["args"].lr == 1.0
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "list.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not a geomamba checkpoint"):
        verify_checkpoint(tmp_path / "foreign.ckpt")


def test_resume_candidates_fall_back_to_the_newest_intact_one(short_run, tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    shutil.copytree(short_run.run_dir / "checkpoints", folder)
    assert {p.name for p in folder.glob("*.ckpt")} >= {"last.ckpt", "last.prev.ckpt"}
    last, prev = folder / "last.ckpt", folder / "last.prev.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 6
    assert torch.load(prev, weights_only=True)["global_step"] == 3  # saved at the previous validation
    assert find_resume_checkpoint(folder)[0] == last
    last.write_bytes(last.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="geomamba"):
        path, ckpt = find_resume_checkpoint(folder)
    assert path == prev and ckpt["global_step"] == 3
    assert "last.ckpt: unreadable or corrupt checkpoint" in caplog.text and "last.prev.ckpt" in caplog.text
    prev.write_bytes(b"")
    best = next(folder.glob("best-*.ckpt"))
    assert find_resume_checkpoint(folder)[0] == best
    best.unlink()
    assert find_resume_checkpoint(folder) == (None, None)


def test_training_resumes_from_the_previous_checkpoint_when_last_is_corrupt(
    short_run, rel_dataset, rel_overrides, tmp_path, caplog
):
    shutil.copytree(short_run.run_dir, tmp_path / "short")
    last = tmp_path / "short" / "checkpoints" / "last.ckpt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    over = rel_overrides(rel_dataset, tmp_path, "short", "eval.test_after_fit=false")
    with pytest.raises(CheckpointError, match=r"last\.ckpt: unreadable or corrupt checkpoint"):
        train(load_config(None, over), resume=str(last))  # an explicit path: no silent fallback
    with caplog.at_level(logging.INFO, logger="geomamba"):
        result = train(load_config(None, over))
    assert "resuming from" in caplog.text and "last.prev.ckpt" in caplog.text
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    assert ckpt["global_step"] == 9 and [h["step"] for h in ckpt["geomamba"]["history"]] == [3, 6, 9]


def test_resume_into_another_model_names_the_keys(short_run, rel_dataset, rel_overrides, tmp_path, caplog):
    shutil.copytree(short_run.run_dir, tmp_path / "short")
    base = rel_overrides(rel_dataset, tmp_path, "short", "eval.test_after_fit=false")
    with pytest.raises(CheckpointError) as info:
        train(load_config(None, [*base, "model.options={width: 4}"]))
    msg = str(info.value)
    assert "last.ckpt: its weights do not fit model" in msg
    assert "shape: model.conv1.weight (8, 9, 3, 3) in the file vs (4, 9, 3, 3)" in msg and "--fresh" in msg
    with pytest.raises(CheckpointError, match=r"optim\.name was 'adamw' and is now 'sgd'"):
        train(load_config(None, [*base, "optim.name=sgd"]))
    with caplog.at_level(logging.WARNING, logger="geomamba"):
        train(load_config(None, [*base, "optim.lr=0.002", "trainer.max_epochs=2"]))
    assert "differs from the checkpoint's: optim.lr: 0.001 -> 0.002" in caplog.text


def test_load_module_names_missing_and_unexpected_keys(short_run, tmp_path):
    ckpt = torch.load(short_run.last_checkpoint, weights_only=True)
    ckpt["state_dict"]["model.extra.weight"] = torch.zeros(1)
    del ckpt["state_dict"]["model.conv2.bias"]
    torch.save(ckpt, tmp_path / "edited.ckpt")
    with pytest.raises(CheckpointError) as info:
        load_module(tmp_path / "edited.ckpt")
    msg = str(info.value)
    assert "edited.ckpt: weights do not match model" in msg
    assert "missing: model.conv2.bias" in msg and "unexpected: model.extra.weight" in msg
