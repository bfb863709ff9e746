"""Helpers shared by tests/engine and tests/cli: a tiny registered change model and run overrides.

Importable from any test because pytest puts ``tests/`` (the folder of the root conftest) on sys.path.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from geomamba.models import register_model, split_bitemporal

TINY_MODEL = "tiny_change_net_test"


class TinyChangeNet(nn.Module):
    """Two 3x3 convs over ``[A, B, |A - B|]``: receptive-field radius 2 pixels."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3 * in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, num_classes, 3, padding=1),
        )

    def forward(self, x, b=None):
        a, b = split_bitemporal(x, b)
        return self.body(torch.cat([a, b, (a - b).abs()], 1))


@register_model(name=TINY_MODEL, task="change")
def tiny_change_net_test(in_channels: int = 3, num_classes: int = 2, width: int = 8) -> TinyChangeNet:
    return TinyChangeNet(in_channels=in_channels, num_classes=num_classes, width=width)


@register_model(name=TINY_MODEL + "_kwargs", task="change")
def tiny_change_net_test_kwargs(**kwargs) -> TinyChangeNet:
    return TinyChangeNet(**kwargs)


def tiny_overrides(root, out, name: str = "run") -> list[str]:
    """Overrides making a run of the tiny model on tiny data fast on one CPU core."""
    return [
        f"data.root={root}",
        f"output_dir={out}",
        f"name={name}",
        f"model.name={TINY_MODEL}",
        "loss=ce",
        "data.crop_size=32",
        "data.batch_size=2",
        "data.eval_batch_size=2",
        "data.num_workers=0",
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.enable_progress_bar=false",
        "trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=1",
        "eval.num_error_maps=2",
        "eval.pad_multiple=8",
        "scheduler.name=cosine",
    ]
