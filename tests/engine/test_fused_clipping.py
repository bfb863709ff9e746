"""Fused optimisers unscale inside their step, so Lightning refuses them when it clips gradients under mixed
precision (found on an H100 by bench/seg_memory.py and bench/train_speed.py). Under fp16 mixed precision (a
GradScaler) the engine falls back to the default optimiser; under bf16-mixed (no scaler) the module clips the
final gradients itself (``configure_gradient_clipping``) and the optimiser stays fused."""

import pytest
import torch
from torch import nn

import geomamba.engine.module as module_mod
from geomamba.engine.acceleration import build_optimizer, clips_under_amp
from geomamba.engine.config import OptimConfig, TrainerConfig, load_config
from geomamba.engine.train import train


def test_fp16_clipping_turns_the_fused_optimiser_off():
    cfg = OptimConfig(name="adamw", lr=1e-3, fused=True)
    p = [nn.Parameter(torch.zeros(2))]
    assert build_optimizer(p, cfg, "cuda").defaults["fused"] is True
    assert not build_optimizer(p, cfg, "cuda", amp_clipping=True).defaults.get("fused")


def test_only_fp16_clipping_needs_the_unfused_optimiser():
    for precision, clip, want in (
        ("16-mixed", 0.5, True),
        ("bf16-mixed", 1.0, False),  # no GradScaler: the module clips, the optimiser stays fused
        ("16-mixed", None, False),
        ("32", 1.0, False),
    ):
        assert clips_under_amp(TrainerConfig(precision=precision, gradient_clip_val=clip)) is want


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_module_clips_for_a_fused_optimiser(algorithm):
    """Same gradients as torch's own clipping, for a fused optimiser (which Lightning's plugin refuses)."""
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(5, 3)), nn.Parameter(torch.randn(7))]
    for p in params:
        p.grad = 10 * torch.randn_like(p)
    want = [p.grad.clone() for p in params]
    clip = torch.nn.utils.clip_grad_norm_ if algorithm == "norm" else torch.nn.utils.clip_grad_value_
    ref = [nn.Parameter(p.detach().clone()) for p in params]
    for r, w in zip(ref, want, strict=True):
        r.grad = w.clone()
    clip(ref, 0.5)
    opt = torch.optim.AdamW(params, lr=1e-3, fused=True)
    module_mod.ChangeDetectionModule.configure_gradient_clipping(None, opt, 0.5, algorithm)
    for p, r in zip(params, ref, strict=True):
        torch.testing.assert_close(p.grad, r.grad)
    assert not torch.equal(params[0].grad, want[0])  # it did clip


@pytest.mark.slow
def test_bf16_mixed_clipping_trains_with_a_fused_optimiser(tiny_dataset, overrides, tmp_path, monkeypatch):
    """A whole run under bf16-mixed with clipping and a fused AdamW (forced on CPU, where torch has one):
    Lightning raised 'does not allow for gradient clipping' before; the module clips instead."""
    built = []

    def fused_build(params, optim, device=None, *, amp_clipping=False):
        opt = build_optimizer(params, optim, "cuda", amp_clipping=amp_clipping)  # "cuda" picks fused=True
        built.append(opt)
        return opt

    monkeypatch.setattr(module_mod, "build_optimizer", fused_build)
    over = [
        *overrides(tiny_dataset, tmp_path),
        "trainer.precision=bf16-mixed",
        "trainer.gradient_clip_val=0.01",
        "trainer.max_epochs=1",
    ]
    result = train(load_config(None, over), resume=False)
    assert built and built[0].defaults["fused"] is True
    assert torch.isfinite(torch.tensor(result.best["train_loss"]))
