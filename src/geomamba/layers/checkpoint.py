"""Gradient checkpointing of a module that may hold BatchNorm layers.

``torch.utils.checkpoint`` runs a module's forward twice (once without keeping activations, once again
during backward). A BatchNorm in training mode would then update its running statistics twice per step,
so a checkpointed model would drift from the same model trained without checkpointing. ``checkpoint_module``
undoes the statistics update of the recomputation: gradients, outputs and BatchNorm buffers are the same as
without checkpointing (dropout / drop-path masks too: the RNG state is replayed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp

__all__ = ["checkpoint_module", "frozen_batchnorm_stats"]


@contextlib.contextmanager
def frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """Within the context, BatchNorm layers of ``module`` compute as usual, but their ``running_mean``,
    ``running_var`` and ``num_batches_tracked`` are restored on exit (the update is undone)."""
    saved = [
        (buf, buf.clone())
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for buf in (m.running_mean, m.running_var, m.num_batches_tracked)
        if buf is not None
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def checkpoint_module(
    module: nn.Module, *args: torch.Tensor, fn: Callable[..., torch.Tensor] | None = None
) -> torch.Tensor:
    """``fn(*args)`` (default ``module(*args)``) under non-reentrant gradient checkpointing, when the
    module is training and autograd is on; a plain call otherwise. ``module`` owns the BatchNorm layers
    that ``fn`` uses (their statistics are frozen while the forward is recomputed).

    Shapes: whatever ``fn`` takes and returns.
    """
    fn = module if fn is None else fn
    if not (module.training and torch.is_grad_enabled()):
        return fn(*args)
    return cp.checkpoint(
        fn,
        *args,
        use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), frozen_batchnorm_stats(module)),
    )
