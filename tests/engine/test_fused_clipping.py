"""Fused optimisers unscale inside their step, so Lightning refuses them when gradients are clipped under fp16
AMP (found on an H100 by bench/seg_memory.py): the engine falls back to the default implementation then."""

import torch
from torch import nn

from geomamba.engine.acceleration import build_optimizer
from geomamba.engine.config import OptimConfig


def test_fp16_clipping_turns_the_fused_optimiser_off():
    cfg = OptimConfig(name="adamw", lr=1e-3, fused=True)
    p = [nn.Parameter(torch.zeros(2))]
    assert build_optimizer(p, cfg, "cuda").defaults["fused"] is True
    assert not build_optimizer(p, cfg, "cuda", scaled_clipping=True).defaults.get("fused")
