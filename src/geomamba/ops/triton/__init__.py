"""Triton backend of the selective scan: JIT-compiled GPU kernels, nothing to build.

Importing this package imports ``triton`` and registers the backend ``"triton"`` with the selective-scan
dispatcher (``fwd``/``bwd`` of the plain scan and the SS2D pair, which runs the fused kernels
``ss2d_fwd``/``ss2d_bwd`` or the composed path shape by shape: ``route.py``).
An ImportError (no triton, a broken install) propagates unchanged: the dispatcher records its text as the
reason the backend is unavailable.

Kernels: ``scan_fwd.py`` (forward), ``scan_bwd.py`` (backward, recomputing the forward per chunk),
``launch.py`` (argument checks, tile choice, launches of the plain scan), ``ss2d_launch.py`` (the fused
SS2D launchers), ``copy.py`` (tiled copies of the SS2D backward), ``route.py`` (fused or composed SS2D).
"""

from __future__ import annotations

import functools

import torch
import triton  # an ImportError here is the reason the backend is unavailable

from geomamba.ops.triton.launch import ScanConfig, selective_scan_bwd, selective_scan_fwd, states_shape
from geomamba.ops.triton.route import (
    fused_ss2d,
    ss2d_bwd_routed,
    ss2d_fwd_routed,
    ss2d_fwd_states_routed,
    ss2d_states_shape_routed,
)
from geomamba.ops.triton.ss2d_launch import SS2D_DEFAULTS, SS2DOptions, ss2d_bwd, ss2d_fwd

__all__ = [
    "SS2D_DEFAULTS",
    "SS2DOptions",
    "ScanConfig",
    "fused_ss2d",
    "is_available",
    "selective_scan_bwd",
    "selective_scan_fwd",
    "ss2d_bwd",
    "ss2d_bwd_routed",
    "ss2d_fwd",
    "ss2d_fwd_routed",
    "supports_device",
]


def is_available() -> tuple[bool, str]:
    """Whether the kernels can run here, and why not."""
    if not torch.cuda.is_available():
        return False, (
            "no CUDA device (torch.cuda.is_available() is False): the Triton scan needs an NVIDIA GPU "
            "with compute capability >= 8.0 and a CUDA build of PyTorch; use backend='ref' on CPU"
        )
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return False, f"GPU compute capability {major}.{minor} < 8.0 (the Triton scan needs Ampere or newer)"
    return True, f"triton {triton.__version__} on {torch.cuda.get_device_name()}"


def supports_device(device: torch.device | str) -> bool:
    """CUDA tensors only."""
    return torch.device(device).type == "cuda"


def _register() -> bool:
    try:
        from geomamba.ops.selective_scan._backends import register_backend
    except ModuleNotFoundError as err:  # interim: the dispatcher module itself is not merged yet
        if err.name != "geomamba.ops.selective_scan._backends":
            raise
        return False
    register_backend(
        "triton",
        fwd=selective_scan_fwd,
        bwd=selective_scan_bwd,
        is_available=is_available,
        supports_device=supports_device,
        ss2d_fwd=ss2d_fwd_routed,
        ss2d_bwd=ss2d_bwd_routed,
        fwd_states=functools.partial(selective_scan_fwd, return_states=True),
        states_shape=states_shape,
        ss2d_layouts=("image", "lines"),
        ss2d_fwd_states=ss2d_fwd_states_routed,
        ss2d_states_shape=ss2d_states_shape_routed,
        ss2d_dt=True,
        ss2d_channels_last=True,
    )
    return True


REGISTERED = _register()
