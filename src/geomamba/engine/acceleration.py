"""Speed switches of the engine, shared by ``ChangeDetectionModule`` and ``bench/train_speed.py``.

- ``CompiledModel``: ``torch.compile`` of a model's forward (``trainer.compile``) that falls back to the
  eager forward, with a warning, when compilation fails. The compiled wrapper is kept outside the module
  tree, so state dicts and checkpoints keep their plain keys.
- ``apply_channels_last``: channels-last (NHWC) memory format of the 4-D weights (``trainer.channels_last``);
  convolutions then run and return NHWC, which cuDNN prefers for conv-heavy networks. A bitemporal input
  ``(B, 2, C, H, W)`` is 5-D and stays as it is: the first convolution takes the weights' format.
- ``apply_fast_norm``: LayerNorms in the autocast dtype (``trainer.fast_norm``, timm's ``fast_layer_norm``):
  under ``torch.autocast`` PyTorch runs ``layer_norm`` in fp32, which costs a cast of its input to fp32 and of
  its output back to bf16/fp16 for the next matmul or conv, each a full copy of the activation. The kernel
  still accumulates its statistics in fp32; fp32 runs are unchanged.
- ``build_optimizer``: AdamW / SGD from ``optim``, with the fused CUDA kernels when the parameters live on a
  GPU (``optim.fused``; one kernel launch for all parameters instead of several per tensor).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn

__all__ = ["CompiledModel", "apply_channels_last", "apply_fast_norm", "build_optimizer", "clips_under_amp"]

log = logging.getLogger("geomamba.engine")


class CompiledModel:
    """``torch.compile(model)`` as a callable with an eager fallback.

    The first call compiles (Dynamo traces, the backend generates code). If the compiled call raises and
    the eager forward of the same input succeeds, compilation is to blame: a ``RuntimeWarning`` names the
    error and every later call runs eagerly. If the eager forward raises too, its error is raised (a bad
    input, not a compiler problem) and compilation is tried again next time.

    Args:
        model: the module (its parameters, buffers and train/eval mode are shared with the compiled one).
        mode: ``torch.compile`` mode (None = default; ``"max-autotune-no-cudagraphs"``, ...).
        backend: ``torch.compile`` backend (``"inductor"``; ``"aot_eager"`` to debug without code generation).
        dynamic: ``torch.compile``'s ``dynamic`` (None = mark dimensions dynamic after a shape change).
        inductor: inductor config values in force whenever this model compiles (e.g.
            ``{"layout_optimization": False}``; see ``torch._inductor.config``); ignored by other backends.
            An unknown name raises ``ValueError``.

    Call with the model's arguments; returns the model's output.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mode: str | None = None,
        backend: str = "inductor",
        dynamic: bool | None = None,
        inductor: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.compiled = torch.compile(model, mode=mode, backend=backend, dynamic=dynamic)
        self.backend, self.mode = backend, mode
        self.inductor = dict(inductor or {}) if backend == "inductor" else {}
        if self.inductor:
            import torch._inductor.config as inductor_config

            unknown = sorted(k for k in self.inductor if not hasattr(inductor_config, k))
            if unknown:
                raise ValueError(
                    f"trainer.compile_inductor: unknown inductor config name(s) {unknown} "
                    f"(torch {torch.__version__}; see torch._inductor.config)"
                )
        self.failure: str | None = None

    def _call_compiled(self, *args: Any, **kwargs: Any) -> Any:
        if not self.inductor:
            return self.compiled(*args, **kwargs)
        import torch._inductor.config as inductor_config

        # in force at every call: Dynamo compiles lazily, at the first call and at each recompile
        with inductor_config.patch(self.inductor):
            return self.compiled(*args, **kwargs)

    @property
    def active(self) -> bool:
        """False once compilation failed and the model runs eagerly."""
        return self.failure is None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failure is not None:
            return self.model(*args, **kwargs)
        try:
            return self._call_compiled(*args, **kwargs)
        except Exception as exc:
            out = self.model(*args, **kwargs)  # raises when the input itself is bad
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            self.failure = f"{type(exc).__name__}: {' | '.join(lines[:3])}"[:400]
            msg = (
                f"torch.compile of {type(self.model).__name__} (backend {self.backend!r}) failed "
                f"({self.failure}); running the model eagerly (set trainer.compile=false to skip compiling)"
            )
            log.warning("%s", msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            return out


def apply_channels_last(model: nn.Module) -> nn.Module:
    """Put the 4-D parameters and buffers of ``model`` in channels-last memory format (in place; returned).

    Values are unchanged (only strides); ``load_state_dict`` keeps the format of the existing tensors."""
    return model.to(memory_format=torch.channels_last)


def apply_fast_norm(model: nn.Module, enabled: bool = True) -> int:
    """Switch timm's fast norm path on (or off) in every timm norm layer of ``model`` (``LayerNorm``,
    ``LayerNorm2d``, ...: the modules with a ``_fast_norm`` flag); returns how many were switched.

    With it, a LayerNorm under ``torch.autocast`` normalises in the autocast dtype (statistics accumulated in
    fp32 by the kernel) instead of casting its input and output through fp32; without autocast it is
    ``F.layer_norm`` as before."""
    count = 0
    for m in model.modules():
        if hasattr(m, "_fast_norm"):
            m._fast_norm = bool(enabled)
            count += 1
    return count


def clips_under_amp(trainer: Any) -> bool:
    """Whether a ``TrainerConfig`` clips gradients under fp16 mixed precision (``16-mixed``: a GradScaler).

    A fused optimiser unscales the gradients inside its own step, so they cannot be clipped before it:
    the engine then builds the default (``foreach``) optimiser. Under ``bf16-mixed`` (no scaler) the
    gradients are final when they are clipped: ``ChangeDetectionModule.configure_gradient_clipping``
    clips them itself and the optimiser stays fused."""
    return bool(trainer.gradient_clip_val) and str(trainer.precision).startswith("16")


def build_optimizer(
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    optim: Any,
    device: torch.device | str | None = None,
    *,
    amp_clipping: bool = False,
) -> torch.optim.Optimizer:
    """AdamW (``betas``) or SGD (``momentum``, ``nesterov``) from an ``OptimConfig``.

    With ``optim.fused`` and a CUDA ``device`` the fused implementation is used (``fused=True``); otherwise
    PyTorch's default (multi-tensor ``foreach`` on CUDA, a loop on CPU). Weight decay is given per group
    by the caller (``timm.optim.param_groups_weight_decay``) or as ``optim.weight_decay``.
    ``amp_clipping``: the run clips gradients under fp16 mixed precision (``clips_under_amp``); a fused
    optimiser unscales gradients inside its own step, so they cannot be clipped before it: the default
    multi-tensor (``foreach``) implementation is used then.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    want = getattr(optim, "fused", False) and device.type == "cuda"
    fast: dict[str, Any] = {"fused": True} if want and not amp_clipping else {}
    if optim.name == "adamw":
        return torch.optim.AdamW(
            params, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay, **fast
        )
    if optim.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=optim.lr,
            momentum=optim.momentum,
            nesterov=optim.nesterov,
            weight_decay=optim.weight_decay,
            **fast,
        )
    raise ValueError(f"optim.name: unknown optimiser {optim.name!r} (adamw, sgd)")
