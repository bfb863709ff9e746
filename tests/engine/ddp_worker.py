"""Started by ``tests/engine/test_ddp.py``: one ``train()`` under Lightning's ``ddp`` strategy.

Usage: ``python ddp_worker.py DATA_ROOT OUT_DIR [key=value ...]``. Lightning re-runs this script for
the other ranks. Every rank saves ``OUT_DIR/probe/rank<r>.pt`` (its weights, buffers and the training
samples it saw per epoch, at the end of training) and ``OUT_DIR/probe/result<r>.json`` (what ``train``
returned to it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for _engine_helpers

import lightning.pytorch as pl
import torch

from _engine_helpers import tiny_overrides
from geomamba.engine.config import load_config
from geomamba.engine.train import train


class Probe(pl.Callback):
    """Records what each rank trained on and its final state."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.names: dict[int, list[str]] = {}
        self.rng: torch.Tensor | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rng = torch.rand(4)  # drawn after the run's per-rank reseeding

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.names.setdefault(int(trainer.current_epoch), []).extend(batch["name"])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        state = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
            "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
            "global_step": int(trainer.global_step),
            "params": {k: v.detach().clone() for k, v in pl_module.named_parameters()},
            "buffers": {k: v.detach().clone() for k, v in pl_module.named_buffers()},
            "sync_batchnorm_layers": sum(isinstance(m, torch.nn.SyncBatchNorm) for m in pl_module.modules()),
            "names": self.names,
            "rng": self.rng,
        }
        torch.save(state, self.out / f"rank{trainer.global_rank}.pt")


def main(argv: list[str]) -> None:
    data_root, out, *extra = argv
    probe_dir = Path(out) / "probe"
    cfg = load_config(None, tiny_overrides(data_root, out) + extra)
    result = train(cfg, resume=False, callbacks=[Probe(probe_dir)])
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    summary = {
        "best_checkpoint": str(result.best_checkpoint),
        "best": result.best,
        "test": result.test_scores,
    }
    (probe_dir / f"result{rank}.json").write_text(json.dumps(summary), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
