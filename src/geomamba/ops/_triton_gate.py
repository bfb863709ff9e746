"""Whether a layer-level op (``dwconv_silu``, ``dt_proj``) runs its Triton kernels, and their modules.

The kernels' modules under ``geomamba.ops.triton`` are imported on the first CUDA call, not with geomamba.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

import torch

__all__ = ["TRITON_DTYPES", "triton_module", "uses_triton"]

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@functools.cache
def triton_module(name: str) -> ModuleType | None:
    """``geomamba.ops.triton.<name>``, or None where it cannot be imported (no triton, a broken install)."""
    try:
        return importlib.import_module(f"geomamba.ops.triton.{name}")
    except ImportError:
        return None


@torch._dynamo.assume_constant_result
def _triton_importable() -> bool:
    # (a constant to torch.compile's tracer)
    return triton_module("_common") is not None


def uses_triton(x: torch.Tensor) -> bool:
    """Whether x would go to the Triton kernels: CUDA, fp16 / bf16 / fp32, Triton importable."""
    return x.is_cuda and x.dtype in TRITON_DTYPES and _triton_importable()
