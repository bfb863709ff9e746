"""Helpers of the reliability tests: a tiny change model with dropout (so that resuming must restore the
global RNG), and comparisons of checkpoints. Importable because pytest puts this folder on sys.path."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.nn as nn

from geomamba.models import register_model, split_bitemporal

DROPOUT_MODEL = "tiny_dropout_change_net_test"


class TinyDropoutNet(nn.Module):
    """Conv -> ReLU -> Dropout(0.3) -> conv over ``[A, B, |A - B|]``."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3 * in_channels, width, 3, padding=1)
        self.drop = nn.Dropout(0.3)
        self.conv2 = nn.Conv2d(width, num_classes, 3, padding=1)

    def forward(self, x, b=None):
        a, b = split_bitemporal(x, b)
        return self.conv2(self.drop(torch.relu(self.conv1(torch.cat([a, b, (a - b).abs()], 1)))))


@register_model(name=DROPOUT_MODEL, task="change")
def tiny_dropout_change_net_test(
    in_channels: int = 3, num_classes: int = 2, width: int = 8
) -> TinyDropoutNet:
    return TinyDropoutNet(in_channels=in_channels, num_classes=num_classes, width=width)


def assert_same_run(ref_dir: Path, other_dir: Path) -> None:
    """Bit-identical final weights and optimizer state, identical metrics.json and best checkpoint name."""
    a = torch.load(ref_dir / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(other_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), f"weights differ: {k}"
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for name, v in sa[k].items():
            assert torch.equal(v, sb[k][name]), f"optimizer state differs: {k}.{name}"
    assert a["lr_schedulers"] == b["lr_schedulers"]
    ma = json.loads((ref_dir / "metrics.json").read_text())
    mb = json.loads((other_dir / "metrics.json").read_text())
    assert ma == mb
    best = sorted(p.name for p in (ref_dir / "checkpoints").glob("best-*.ckpt"))
    assert best == sorted(p.name for p in (other_dir / "checkpoints").glob("best-*.ckpt"))


_TESTS = Path(__file__).resolve().parents[1]
_BOOT = (
    "import sys, _engine_helpers, _reliability_helpers; "  # register the test models, then run the CLI
    "from geomamba.cli.main import main; sys.exit(main(sys.argv[1:]))"
)


def cli_command(*args: str) -> list[str]:
    """``geomamba ARGS`` in a new Python process that knows the test models (see ``cli_env``)."""
    return [sys.executable, "-c", _BOOT, *args]


def cli_env() -> dict[str, str]:
    """Environment of ``cli_command``: the source tree and the test helpers importable, one thread."""
    paths = [str(_TESTS.parent / "src"), str(_TESTS), str(_TESTS / "reliability")]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env.pop("GEOMAMBA_DEBUG", None)
    return env
