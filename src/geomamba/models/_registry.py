"""Model registry: ``@register_model``, ``create_model``, ``list_models``.

A model is registered by decorating a *factory function* (or a class) whose keyword arguments are the
model's options. Variants are short factory functions that call a common builder with other defaults::

    @register_model(task="change")
    def subtask_mamba_tiny(**kwargs):
        return SubtaskMamba(**{"dims": (8, 16, 32), **kwargs})

``create_model("subtask_mamba_tiny", in_channels=4)`` calls the factory with the overrides. An unknown
name raises a ``KeyError`` that lists close matches and every registered name.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

__all__ = ["ModelEntry", "create_model", "get_model_entry", "list_models", "register_model"]


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its name, task ("change", "segmentation", "classification"), factory."""

    name: str
    task: str
    factory: Callable[..., nn.Module]
    tags: tuple[str, ...] = field(default_factory=tuple)
    module: str = ""


_REGISTRY: dict[str, ModelEntry] = {}
_LOADED = False
# Packages whose modules register models on import; loaded lazily on the first registry query.
_MODEL_PACKAGES = (
    "geomamba.models.change",
    "geomamba.models.segmentation",
    "geomamba.models.classification",
)


def register_model(
    fn: Callable[..., nn.Module] | None = None,
    *,
    name: str | None = None,
    task: str = "change",
    tags: tuple[str, ...] = (),
):
    """Register a model factory under ``name`` (default: the function's ``__name__``).

    Usable bare (``@register_model``) or with arguments (``@register_model(task="segmentation")``).
    Registering the same name twice from a different module is an error.
    """

    def decorator(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or f.__name__
        old = _REGISTRY.get(key)
        if old is not None and (old.module, old.factory.__qualname__) != (f.__module__, f.__qualname__):
            raise ValueError(f"model name {key!r} is already registered by {old.module}")
        _REGISTRY[key] = ModelEntry(key, task, f, tuple(tags), f.__module__)
        return f

    if fn is not None:
        return decorator(fn)
    return decorator


def _load_all() -> None:
    """Import every module of the model packages once, so that their decorators run."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for pkg_name in _MODEL_PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg_name + "."):
            if not info.name.rsplit(".", 1)[-1].startswith("_"):
                importlib.import_module(info.name)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; ``KeyError`` listing suggestions and all names when unknown."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(
            f"unknown model {name!r}.{hint} Registered models: {', '.join(sorted(_REGISTRY))}"
        ) from None


def list_models(pattern: str | None = None, task: str | None = None) -> list[str]:
    """Sorted registered model names, optionally filtered by a glob ``pattern`` and a ``task``."""
    _load_all()
    names = [n for n, e in _REGISTRY.items() if task is None or e.task == task]
    if pattern:
        names = fnmatch.filter(names, pattern)
    return sorted(names)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword ``overrides`` of its options."""
    entry = get_model_entry(name)
    model = entry.factory(**overrides)
    # Record how the model was made, so that checkpoints can rebuild it.
    model.geomamba_model_name = name  # type: ignore[attr-defined]
    model.geomamba_model_kwargs = dict(overrides)  # type: ignore[attr-defined]
    return model
