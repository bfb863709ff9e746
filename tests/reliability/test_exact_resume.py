"""Exact resume in-process: a SIGINT mid-epoch saves a checkpoint and stops; the resumed run ends with the same
weights, optimizer state and metrics as one that never stopped. Plus the resumable sampler on its own."""

import os
import signal

import pytest
import torch
from _reliability_helpers import assert_same_run

from geomamba.engine.config import load_config
from geomamba.engine.interrupt import TrainingInterrupted
from geomamba.engine.module import ChangeDetectionModule
from geomamba.engine.resume import ResumableSampler, SeededDataset
from geomamba.engine.train import train


@pytest.fixture(scope="module")
def reference(tmp_path_factory, rel_dataset, rel_overrides):
    out = tmp_path_factory.mktemp("ref")
    return train(load_config(None, rel_overrides(rel_dataset, out, "ref")), resume=False)


def _signal_at(monkeypatch, step: int, sig: int = signal.SIGINT, where: str = "train") -> None:
    """Send ``sig`` to this process in the training step at ``step`` (or in a validation of that epoch)."""
    original = ChangeDetectionModule.training_step
    original_val = ChangeDetectionModule.validation_step

    def training_step(self, batch, batch_idx):
        if where == "train" and self.global_step == step:
            os.kill(os.getpid(), sig)
        return original(self, batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        if where == "val" and self.current_epoch == step and not self.trainer.sanity_checking:
            os.kill(os.getpid(), sig)
        return original_val(self, batch, batch_idx)

    monkeypatch.setattr(ChangeDetectionModule, "training_step", training_step)
    monkeypatch.setattr(ChangeDetectionModule, "validation_step", validation_step)


def test_sigint_mid_epoch_saves_and_resumes_exactly(
    reference, rel_dataset, rel_overrides, tmp_path, monkeypatch
):
    cfg = load_config(None, rel_overrides(rel_dataset, tmp_path, "ref"))
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a background job of a non-interactive shell
    _signal_at(monkeypatch, 3)  # first step of epoch 1
    with pytest.raises(TrainingInterrupted) as info:
        train(cfg, resume=False)
    assert info.value.signum == signal.SIGINT and info.value.exit_code == 130
    assert "interrupted by SIGINT at step 4; saved" in str(info.value)
    ckpt = torch.load(tmp_path / "ref" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4  # the step in progress finished, then the checkpoint
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    monkeypatch.undo()
    resumed = train(cfg)  # resumes from last.ckpt automatically
    assert_same_run(reference.run_dir, resumed.run_dir)


def test_sigterm_during_validation_stops_after_it(
    reference, rel_dataset, rel_overrides, tmp_path, monkeypatch
):
    cfg = load_config(None, rel_overrides(rel_dataset, tmp_path, "ref", "data.num_workers=1"))
    _signal_at(monkeypatch, 1, signal.SIGTERM, where="val")
    with pytest.raises(TrainingInterrupted, match="interrupted by SIGTERM at step 6; saved") as info:
        train(cfg, resume=False)
    assert info.value.exit_code == 143
    ckpt = torch.load(tmp_path / "ref" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6 and len(ckpt["geomamba"]["history"]) == 2  # validation 1 completed
    monkeypatch.undo()
    resumed = train(cfg)  # one loader worker: its order and augmentation equal the in-process ones
    assert_same_run(reference.run_dir, resumed.run_dir)


def test_sampler_order_depends_only_on_seed_and_epoch():
    data = SeededDataset(list(range(10)))
    s = ResumableSampler(data, seed=3)
    s.set_epoch(2)
    full = list(s)
    assert sorted(i for i, _ in full) == list(range(10))
    again = ResumableSampler(data, seed=3)
    again.resume_at(2, 4)  # a new process resuming epoch 2 after 4 samples
    assert list(again) == full[4:] and len(again) == 10
    assert list(again) == full  # the skip applies once
    s.set_epoch(3)
    assert [i for i, _ in s] != [i for i, _ in full]
    # Two DDP ranks share out one epoch, each sample once (with 10 % 2 == 0 no padding).
    ranks = [ResumableSampler(data, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(2)
    assert sorted(i for r in ranks for i, _ in r) == list(range(10))


def test_seeded_items_do_not_depend_on_history():
    class Noisy:
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return float(torch.rand(()))

    data = SeededDataset(Noisy())
    first = data[(1, 123)]
    torch.rand(5)  # other draws in between change nothing
    assert data[(1, 123)] == first and data[(2, 123)] == first  # the seed decides, not the index
    state = torch.get_rng_state()
    data[(0, 7)]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
