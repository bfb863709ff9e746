"""Plug-in places: where a model lets plug-ins go, and putting them there (see ``geomamba.layers.plugins``).

A model lists its places with ``plugin_places() -> {name: PluginPlace}``; ``apply_plugins(model,
{place: entry})`` builds each entry with the registry (``geomamba.layers.plugins.plugin_from_config``) and
replaces the module at the place's path (or, for ``mode="append"``, runs the plug-in after it). A group
place (``PluginPlace.group``, ``add_group_places``) stands for several places, e.g. one per level.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

__all__ = [
    "PairSequential",
    "PluginError",
    "PluginPlace",
    "add_group_places",
    "apply_plugins",
    "get_submodule",
    "insert_after",
    "list_places",
    "replace_module",
]


class PluginError(ValueError):
    """An unknown plug-in name or place, a plug-in that cannot serve a place, or a bad plug-in entry or
    option; the message lists the valid choices. (The engine reports it as a config error.)"""


class _PairIdentity(nn.Module):
    """``(a, b) -> (a, b)``: the ``"none"`` interaction."""

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x1, x2


class PairSequential(nn.Module):
    """Interaction layers in sequence: ``(a, b) -> layer_n(...layer_1(a, b))``."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.layers:
            x1, x2 = layer(x1, x2)
        return x1, x2


@dataclass(frozen=True)
class PluginPlace:
    """A place in a model where a plug-in may go.

    Attributes:
        path: dotted path of the submodule there (``"interactions.1"``); ``""`` for a group.
        kind: the kind the place needs (``PLUGIN_KINDS``).
        channels: its width (a list for ``depth_sequence``; ``None`` for a group).
        mode: ``"replace"`` (the plug-in replaces the module) or ``"append"`` (it runs after it).
        doc: one line for listings.
        members: for a group place, the names of the places it stands for (one plug-in is built for
            each, for its own width); empty for a single place.
    """

    path: str
    kind: str
    channels: int | tuple[int, ...] | None
    mode: str = "replace"
    doc: str = ""
    members: tuple[str, ...] = ()

    @classmethod
    def group(cls, members: Sequence[str], kind: str, doc: str = "") -> PluginPlace:
        """A group place standing for the places ``members`` (all of kind ``kind``)."""
        return cls("", kind, None, doc=doc, members=tuple(members))


def add_group_places(
    places: dict[str, PluginPlace], name: str, pattern: str, indices: Sequence[int], doc: str = ""
) -> None:
    """Add to ``places`` the group place ``name`` standing for the places ``pattern.format(i=i)`` for ``i``
    in ``indices`` that ``places`` holds (nothing when it holds none of them).

    E.g. ``add_group_places(places, "decoder.spatial_attention", "decoder.level{i}.spatial_attention",
    [1, 2, 3])``.
    """
    members = [m for m in (pattern.format(i=i) for i in indices) if m in places]
    if members:
        places[name] = PluginPlace.group(members, places[members[0]].kind, doc)


def list_places(model: nn.Module) -> dict[str, PluginPlace]:
    """The plug-in places a model declares (``model.plugin_places()``; empty when it declares none)."""
    fn = getattr(model, "plugin_places", None)
    return dict(fn()) if callable(fn) else {}


def get_submodule(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path``; ``ValueError`` naming the children where the path breaks."""
    module = model
    done: list[str] = []
    for part in path.split("."):
        children = dict(module.named_children())
        if part not in children:
            where = ".".join(done) or type(model).__name__
            raise ValueError(
                f"no submodule {part!r} in {where} (path {path!r}); children: {', '.join(children) or '-'}"
            )
        module = children[part]
        done.append(part)
    return module


def replace_module(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at dotted ``path`` of ``model``; returns the module it replaced."""
    old = get_submodule(model, path)
    parent_path, _, last = path.rpartition(".")
    parent = get_submodule(model, parent_path) if parent_path else model
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and last.isdigit():
        parent[int(last)] = new
    else:
        setattr(parent, last, new)
    return old


def insert_after(model: nn.Module, path: str, new: nn.Module, *, kind: str = "block") -> nn.Module:
    """Run ``new`` after the module at ``path`` (``kind`` ``"interaction"``: both are pair -> pair)."""
    old = get_submodule(model, path)
    combined = PairSequential(old, new) if kind == "interaction" else nn.Sequential(old, new)
    replace_module(model, path, combined)
    return combined


def _flatten_entries(plugins: Mapping[str, Any], places: Mapping[str, PluginPlace]) -> list[tuple[str, Any]]:
    """``(place, entry)`` pairs; nested mappings without ``"type"`` are read as dotted place names."""
    out: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and "type" not in value and not isinstance(value, nn.Module):
            if prefix in places:
                raise PluginError(
                    f"plug-in place {prefix!r}: an entry must be a name, 'none', a dict with 'type' "
                    f"(e.g. {{type: dia, distortion: true}}) or a module, got {dict(value)!r}"
                )
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        else:
            out.append((prefix, value))

    if not isinstance(plugins, Mapping):
        raise PluginError(f"plugins must be a mapping {{place: entry}}, got {plugins!r}")
    for key, value in plugins.items():
        walk(str(key), value)
    return out


def _unknown_place(model: nn.Module, name: str, places: Mapping[str, PluginPlace]) -> PluginError:
    close = difflib.get_close_matches(name, list(places), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    valid = ", ".join(sorted(places)) or "none (it declares no plugin_places())"
    return PluginError(f"{type(model).__name__} has no plug-in place {name!r}.{hint} Places: {valid}")


def apply_plugins(model: nn.Module, plugins: Mapping[str, Any] | None) -> nn.Module:
    """Put plug-ins at named places of ``model`` (in place; returns the model).

    Args:
        model: a model declaring ``plugin_places()``.
        plugins: ``{place: entry}``, an entry being a name, ``"none"``, a dict ``{"type": name,
            **options}`` or a module (``plugin_from_config``); a group place gets one plug-in per member
            (a module entry is not allowed there: it would be shared). Entries apply in order, and the
            places are listed again before each (a replaced block may remove places inside it).

    Raises:
        PluginError: an unknown place (the message lists the model's places), an unknown plug-in or one
            that cannot serve the place's kind (the message lists the valid names).
    """
    if not plugins:
        return model
    for place_name, spec in _flatten_entries(plugins, list_places(model)):
        places = list_places(model)
        place = places.get(place_name)
        if place is None:
            raise _unknown_place(model, place_name, places)
        if place.members and isinstance(spec, nn.Module):
            raise PluginError(
                f"plug-in place {place_name!r} is a group of {len(place.members)} places: give a name or "
                "a dict (one plug-in is built per place), not a module"
            )
        for member in place.members or (place_name,):
            label = f"{place_name!r} (member {member!r})" if place.members else repr(place_name)
            _apply_one(model, label, places[member], spec)
    return model


def _apply_one(model: nn.Module, label: str, place: PluginPlace, spec: Any) -> None:
    from geomamba.layers.plugins import plugin_from_config  # the registry imports this module

    try:
        module = plugin_from_config(spec, place.channels, kind=place.kind)
    except ValueError as exc:
        raise PluginError(f"plug-in place {label}: {exc}") from exc
    if place.mode == "replace":
        replace_module(model, place.path, module)
    elif place.mode == "append":
        if not isinstance(module, (nn.Identity, _PairIdentity)):
            insert_after(model, place.path, module, kind=place.kind)
    else:
        raise ValueError(f"plug-in place {label} has an unknown mode {place.mode!r}")
