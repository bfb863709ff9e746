"""Efficiency of a model on the device it was trained on: parameters, GFLOPs and pairs per second.

Both speeds come from short timed loops on random data, in the same process and on the same device as
the run's training, with the run's precision (``bf16-mixed``/``16-mixed`` under autocast, ``*-true`` and
``64`` with the model cast to that type):

- inference: ``model.eval()``, ``torch.inference_mode()``, forward of a ``(B, 2, C, S, S)`` batch;
- training: ``model.train()``, forward, the run's loss against random 0/1 masks, backward and an AdamW
  step, on a fresh copy of the model (the trained weights are not touched).

``warmup`` steps (not timed; they include cuDNN/Triton autotuning) precede ``iters`` timed steps;
CUDA is synchronised before the clock starts and stops. pairs/s = ``B * iters / seconds``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from geomamba.engine.config import RunConfig

__all__ = ["SpeedResult", "autocast_context", "measure_speed", "run_device", "sync"]

_AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
_CAST = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "64": torch.float64, "64-true": torch.float64}


@dataclass
class SpeedResult:
    """Pairs per second of inference and training, and how they were measured."""

    infer_pairs_per_s: float
    train_pairs_per_s: float
    batch_size: int
    input_size: int
    warmup: int
    iters: int
    device: str
    device_name: str
    precision: str
    peak_memory_gb: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def run_device(cfg: RunConfig) -> torch.device:
    """The device a single-device run trains on, as Lightning picks it: CUDA when the accelerator is
    ``auto``/``gpu``/``cuda`` and a GPU is visible (the first of ``trainer.devices`` when it is a list),
    MPS when asked for and present, else CPU."""
    acc = cfg.trainer.accelerator
    if acc in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        d = cfg.trainer.devices
        return torch.device("cuda", int(d[0]) if isinstance(d, list) and d else 0)
    if acc == "mps" and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_name(device: torch.device) -> str:
    """A readable device name (the GPU model for CUDA)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_context(device: torch.device, precision: str):
    """``torch.autocast`` for a Lightning precision (``bf16-mixed``, ``16-mixed``); a null context otherwise."""
    dtype = _AUTOCAST.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _timed(step, device: torch.device, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    return time.perf_counter() - start


def measure_speed(
    model: nn.Module,
    loss_fn: nn.Module,
    *,
    in_channels: int,
    input_size: int = 256,
    batch_size: int = 8,
    warmup: int = 10,
    iters: int = 50,
    device: torch.device | str = "cpu",
    precision: str = "32",
    num_classes: int = 2,
    lr: float = 1e-4,
) -> SpeedResult:
    """Inference and training pairs/s of ``model`` (moved to ``device``; modified by the training loop,
    so pass a fresh copy). Shapes: inputs ``(batch_size, 2, in_channels, input_size, input_size)``,
    masks ``(batch_size, input_size, input_size)`` in ``[0, num_classes)``."""
    if batch_size < 1 or iters < 1 or warmup < 0 or input_size < 1:
        raise ValueError(f"batch_size ({batch_size}), iters ({iters}), input_size must be >= 1, warmup >= 0")
    device = torch.device(device)
    dtype = _CAST.get(precision, torch.float32)
    model = model.to(device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 2, in_channels, input_size, input_size, generator=gen).to(device, dtype)
    y = torch.randint(0, num_classes, (batch_size, input_size, input_size), generator=gen).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    model.eval()

    def infer() -> None:
        with torch.inference_mode(), autocast_context(device, precision):
            model(x)

    t_infer = _timed(infer, device, warmup, iters)

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast_context(device, precision):  # as Lightning's precision plugin does
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    t_train = _timed(train_step, device, warmup, iters)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    n = batch_size * iters
    return SpeedResult(
        infer_pairs_per_s=n / t_infer,
        train_pairs_per_s=n / t_train,
        batch_size=batch_size,
        input_size=input_size,
        warmup=warmup,
        iters=iters,
        device=str(device),
        device_name=device_name(device),
        precision=precision,
        peak_memory_gb=peak,
    )
