"""Fused optimisers unscale inside their step, so Lightning refuses them when gradients are clipped under mixed
precision, fp16 or bf16 (found on an H100 by bench/seg_memory.py and bench/train_speed.py): the engine falls
back to the default implementation then."""

import torch
from torch import nn

from geomamba.engine.acceleration import build_optimizer, clips_under_amp
from geomamba.engine.config import OptimConfig, TrainerConfig


def test_fp16_clipping_turns_the_fused_optimiser_off():
    cfg = OptimConfig(name="adamw", lr=1e-3, fused=True)
    p = [nn.Parameter(torch.zeros(2))]
    assert build_optimizer(p, cfg, "cuda").defaults["fused"] is True
    assert not build_optimizer(p, cfg, "cuda", amp_clipping=True).defaults.get("fused")


def test_clipping_under_mixed_precision_is_detected():
    for precision, clip, want in (
        ("bf16-mixed", 1.0, True),
        ("16-mixed", 0.5, True),
        ("bf16-mixed", None, False),
        ("32", 1.0, False),
    ):
        assert clips_under_amp(TrainerConfig(precision=precision, gradient_clip_val=clip)) is want
