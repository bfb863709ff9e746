"""Plug-ins through the engine: a flagship run config with DIA replacing the decoder's spatial attention
trains a step with `geomamba train`, and a bad place/name is a one-line config error of the CLI."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import yaml

from geomamba.cli.main import main
from geomamba.engine.config import load_config
from geomamba.engine.module import build_model, load_module
from geomamba.engine.train import train
from geomamba.layers.dia import DeformableInteractiveAttention


class _DIAWeights(pl.Callback):
    """Snapshots of the level-1 decoder DIA's conv weight at the start and the end of training."""

    def __init__(self) -> None:
        self.weights: list[torch.Tensor] = []

    def _take(self, pl_module) -> None:
        self.weights.append(pl_module.model.decoders[0].stage2.attention.conv.weight.detach().clone())

    def on_train_start(self, trainer, pl_module) -> None:
        self._take(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._take(pl_module)


def _flagship_overrides(tiny_dataset, out, overrides, name):
    return [
        *overrides(tiny_dataset, out, name),
        "model.name=subtask_mamba_tiny",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "eval.test_after_fit=false",
        "eval.num_error_maps=0",
        "scheduler.name=none",
    ]


def test_dia_in_the_flagship_decoder_trains_a_step(tiny_dataset, overrides, tmp_path):
    config = tmp_path / "flagship_dia.yaml"
    config.write_text(
        yaml.safe_dump({"model": {"options": {"plugins": {"decoder.spatial_attention": "dia"}}}}),
        encoding="utf-8",
    )
    snap = _DIAWeights()
    result = train(
        load_config(config, _flagship_overrides(tiny_dataset, tmp_path, overrides, "dia")), callbacks=[snap]
    )
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text(encoding="utf-8"))
    assert saved["model"]["options"]["plugins"] == {"decoder.spatial_attention": "dia"}
    module = load_module(result.last_checkpoint)
    gates = [d.stage2.attention for d in module.model.decoders]
    assert all(isinstance(g, DeformableInteractiveAttention) and g.output == "mask" for g in gates)
    # one optimiser step moved the DIA weights, and the checkpoint holds the moved ones
    before, after = snap.weights
    assert not torch.equal(before, after)
    torch.testing.assert_close(gates[0].conv.weight, after)
    assert result.best is not None and result.best["step"] == 1


def test_nested_override_form_builds_the_same_model():
    cfg = load_config(
        None, ["model.name=subtask_mamba_tiny", "model.options.plugins.decoder.spatial_attention=dia"]
    )
    assert cfg.model.options["plugins"] == {"decoder": {"spatial_attention": "dia"}}
    model = build_model(cfg)
    assert all(isinstance(d.stage2.attention, DeformableInteractiveAttention) for d in model.decoders)


def test_bad_plugin_place_is_a_one_line_config_error(tiny_dataset, overrides, tmp_path, capsys):
    config = tmp_path / "empty.yaml"
    config.write_text("{}\n", encoding="utf-8")
    args = [str(config), *_flagship_overrides(tiny_dataset, tmp_path, overrides, "bad")]
    code = main(["train", *args, "model.options.plugins={decoder.spatial_atention: dia}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(
        "geomamba: error: model.options of 'subtask_mamba_tiny': SubtaskMamba has no plug-in"
    )
    assert "Did you mean decoder.spatial_attention" in err and "Places: decoder.channel_attention" in err
    code = main(["train", *args, "model.options.plugins={decoder.spatial_attention: diaa}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unknown gate layer 'diaa'. Did you mean dia?" in err
