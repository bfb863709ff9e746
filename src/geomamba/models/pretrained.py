"""ImageNet (or any) pretrained weights for backbones, from a LOCAL file only.

``load_pretrained(module, path, ...)`` loads a state dict file into ``module`` (usually a model's
``backbone``):

- ``path=None``: nothing is loaded; a warning on the ``geomamba.models.pretrained`` logger says that
  the module starts from random initialisation. Nothing is ever downloaded.
- a missing or unreadable file is an error naming the file;
- the file must fit the module exactly, after the declared renames (``key_map``) and the declared
  ignorable file keys (``ignore``, e.g. a classifier ``fc.*``): missing keys, unexpected keys and shape
  mismatches raise :class:`PretrainedWeightsError` naming them. A partial file is an error, never a
  printed warning. (BatchNorm ``num_batches_tracked`` counters may be absent.)
- ``input_conv``: the key of the first convolution; when only its input-channel count differs (a
  3-band ImageNet file and a 4-band model), the kernel is adapted with timm's ``adapt_input_conv``
  (channels repeated and rescaled) and the adaptation is logged.

Files: ``torch.save`` pickles (read with ``weights_only=True``) or ``.safetensors``; a dict wrapping
the weights under ``"state_dict"``, ``"model"`` or ``"module"`` is unwrapped, and a leading
``"module."`` (DataParallel) prefix is removed.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

__all__ = [
    "LoadReport",
    "PretrainedWeightsError",
    "load_backbone_weights",
    "load_pretrained",
    "read_state_dict",
]

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model", "module")
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)


class PretrainedWeightsError(ValueError):
    """A weights file that does not fit the module (names the missing/unexpected/mismatched keys)."""


@dataclass
class LoadReport:
    """What ``load_pretrained`` did: the file, how many tensors loaded, which keys it adapted/ignored."""

    path: Path | None
    loaded: int = 0
    adapted: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict (tensors by name) from a local ``.pt/.pth/.bin`` pickle or ``.safetensors`` file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # report the file, whatever the reader's complaint
        raise PretrainedWeightsError(f"cannot read pretrained weights file {path}: {exc}") from exc
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            raise PretrainedWeightsError(
                f"pretrained weights file {path} holds a dict without tensors (keys: {_preview(obj)}); "
                f"expected a state dict, optionally under one of {_WRAPPER_KEYS}"
            )
        obj = inner
    if not isinstance(obj, Mapping):
        raise PretrainedWeightsError(
            f"pretrained weights file {path} holds a {type(obj).__name__}, not a state dict"
        )
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _is_tensor_dict(obj: Mapping) -> bool:
    return any(isinstance(v, torch.Tensor) for v in obj.values())


def _preview(keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _rename(state: dict[str, torch.Tensor], key_map: Mapping[str, str]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for old, new in key_map.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def load_pretrained(
    module: nn.Module,
    path: str | Path | None,
    *,
    ignore: Iterable[str] = (),
    key_map: Mapping[str, str] | None = None,
    input_conv: str | None = None,
    what: str = "backbone",
) -> LoadReport:
    """Load the weights file ``path`` into ``module``; see the module docstring for the rules.

    Args:
        module: the module to fill (every parameter and buffer must be covered by the file).
        path: local weights file, or ``None`` to start from scratch (logged).
        ignore: glob patterns of FILE keys to drop (after ``key_map``), e.g. ``("fc.*",)``.
        key_map: prefix renames applied to the file's keys, ``{"old.prefix.": "new.prefix."}``.
        input_conv: module key of the first conv weight, adapted to the module's band count.
        what: name used in messages (e.g. ``"resnet18 backbone"``).

    Returns:
        a :class:`LoadReport`.
    """
    if path is None:
        logger.warning(
            "%s: no pretrained weights file given; starting from random initialisation "
            "(pass pretrained=PATH to load local ImageNet weights)",
            what,
        )
        return LoadReport(path=None)
    path = Path(path).expanduser()
    state = read_state_dict(path)
    if key_map:
        state = _rename(state, key_map)
    patterns = tuple(ignore)
    ignored = [k for k in state if any(fnmatch.fnmatchcase(k, p) for p in patterns)]
    for k in ignored:
        del state[k]
    target = module.state_dict()
    report = LoadReport(path=path, ignored=sorted(ignored))

    if input_conv is not None and input_conv in state and input_conv in target:
        src, dst = state[input_conv], target[input_conv]
        if (
            src.dim() == 4
            and src.shape != dst.shape
            and src.shape[0] == dst.shape[0]
            and src.shape[2:] == dst.shape[2:]
        ):
            from timm.models import adapt_input_conv

            state[input_conv] = adapt_input_conv(dst.shape[1], src.float(), base_chans=src.shape[1]).to(
                src.dtype
            )
            report.adapted.append(input_conv)
            logger.info(
                "%s: adapted %s from %d to %d input bands", what, input_conv, src.shape[1], dst.shape[1]
            )

    missing = [k for k in target if k not in state and not k.endswith(_OPTIONAL_SUFFIXES)]
    unexpected = [k for k in state if k not in target]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in target
        if k in state and state[k].shape != target[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (in the model, not in the file): {_preview(missing)}")
        if unexpected:
            parts.append(
                f"{len(unexpected)} unexpected keys (in the file, not in the model): {_preview(unexpected)}"
            )
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches: {_preview(mismatched)}")
        raise PretrainedWeightsError(
            f"pretrained weights file {path} does not fit the {what}: " + "; ".join(parts)
        )
    module.load_state_dict(state, strict=False)
    report.loaded = len(state)
    logger.info("%s: loaded %d tensors from %s", what, report.loaded, path)
    return report


def load_backbone_weights(
    backbone: nn.Module, path: str | Path | None, *, what: str | None = None
) -> LoadReport:
    """``load_pretrained`` with the backbone's own declarations: its ``pretrained_ignore`` file-key
    patterns, ``pretrained_key_map`` renames and ``pretrained_input_conv`` first-conv key."""
    return load_pretrained(
        backbone,
        path,
        ignore=getattr(backbone, "pretrained_ignore", ()),
        key_map=getattr(backbone, "pretrained_key_map", None),
        input_conv=getattr(backbone, "pretrained_input_conv", None),
        what=what or f"{type(backbone).__name__} backbone",
    )
