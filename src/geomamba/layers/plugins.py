"""Plug-in registry: try an attention or Mamba block anywhere with one config line (SPEC §3, issue 8).

Kinds (the shape contract of a plug-in):

``block``           ``(B, C, H, W) -> (B, C, H, W)`` on one image/date (``dia``, ``global_m``, the
                    attentions with ``x * gate``). The default kind.
``gate``            ``(B, C, H, W) -> gate`` in (0, 1) broadcastable to the input (``(B, 1, H, W)``,
                    ``(B, C, 1, 1)`` ...), for places that multiply a gate into another branch.
``interaction``     ``(a, b) -> (a, b)``, two dates of ``(B, C, H, W)`` each (``channel_exchange``,
                    ``spatial_exchange``).
``depth_sequence``  a list of features of several depths ``[(B, C_i, H_i, W_i), ...]`` (shallow to
                    deep) -> logits ``(B, num_classes)`` (``dtm``); ``channels`` is the list ``C_i``.

Conversions: a ``block`` plug-in serves at an ``interaction`` place as a siamese layer (one module,
shared weights, applied to both dates; option ``dates="first"`` leaves the second date alone); a
``gate`` plug-in serves at a ``block`` place as ``x * gate(x)``.

Registering. Built-in plug-ins are registered here by import path strings (``"module:attribute"``),
resolved on first use, so a plug-in whose module is not installed yet is simply not available (it is
left out of ``list_plugins()``; building it says why). Others register a class or factory::

    @register_plugin("my_gate", kinds=("gate",), channels_arg="channels")
    class MyGate(nn.Module): ...

    block = build_plugin("dia", 64)                        # DeformableInteractiveAttention()
    pair = build_plugin("global_m", 64, kind="interaction", num_heads=4)

Places. A model lists where plug-ins may go with ``plugin_places() -> {name: PluginPlace}`` (e.g.
ChangerEx: ``encoder.stage2.interaction``); ``apply_plugins(model, {"encoder.stage2.interaction":
"global_m"})`` replaces the module there (or, for ``mode="append"`` places, inserts the plug-in after
it). A *group* place names other places (``decoder.spatial_attention`` = the spatial attention of every
decoder level, ``decoder.level{i}.spatial_attention``): its entry builds one plug-in per member, each
for its member's width. A config entry is a name, ``"none"`` (identity), a dict ``{"type": name,
**options}`` or a module; nested mappings of place names (``{"decoder": {"spatial_attention": "dia"}}``,
what a ``model.options.plugins.decoder.spatial_attention=dia`` override gives) are read as dotted names.
An unknown plug-in name or place is a ``PluginError`` (a ``ValueError``) that lists the valid ones.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from geomamba.layers.plugin_places import (
    PairSequential,
    PluginError,
    PluginPlace,
    _PairIdentity,
    add_group_places,
    apply_plugins,
    get_submodule,
    insert_after,
    list_places,
    replace_module,
)

__all__ = [
    "PLUGIN_KINDS",
    "GatedBlock",
    "PairSequential",
    "PluginEntry",
    "PluginError",
    "PluginPlace",
    "SiameseLayer",
    "add_group_places",
    "apply_plugins",
    "build_plugin",
    "get_plugin_entry",
    "get_submodule",
    "insert_after",
    "list_places",
    "list_plugins",
    "plugin_from_config",
    "register_plugin",
    "replace_module",
]

PLUGIN_KINDS = ("block", "gate", "interaction", "depth_sequence")
# requested kind -> native kinds that convert to it (see the module docstring)
_CONVERTIBLE = {"interaction": ("block", "gate"), "block": ("gate",)}


class _UnitGate(nn.Module):
    """The ``"none"`` gate: ones of shape ``(B, 1, 1, 1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_ones(x.shape[0], 1, 1, 1)


class SiameseLayer(nn.Module):
    """Apply a single-date layer ``(B, C, H, W) -> (B, C, H, W)`` to a pair of dates.

    Args:
        layer: the layer (its weights are shared by the dates).
        dates: ``"both"`` or ``"first"`` (the second date passes through unchanged).

    Shapes: ``(x1, x2)`` -> ``(layer(x1), layer(x2))`` (or ``(layer(x1), x2)``).
    """

    def __init__(self, layer: nn.Module, *, dates: str = "both") -> None:
        super().__init__()
        if dates not in ("both", "first"):
            raise PluginError(f"dates must be 'both' or 'first', got {dates!r}")
        self.layer, self.dates = layer, dates

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.layer(x1), (self.layer(x2) if self.dates == "both" else x2)


class GatedBlock(nn.Module):
    """A gate used as a block: ``x -> x * gate(x)``. Shapes: ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, gate: nn.Module) -> None:
        super().__init__()
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


@dataclass(frozen=True)
class PluginEntry:
    """One registered plug-in.

    Attributes:
        name: registry name.
        target: the class or factory, or its import path ``"package.module:attribute"``.
        kinds: kinds it builds natively; the first is its default kind.
        channels_arg: keyword that receives ``channels`` (``None``: the plug-in takes no width).
        kind_options: fixed keyword options per kind (e.g. ``{"gate": {"output": "mask"}}``).
        doc: one line for listings.
    """

    name: str
    target: Callable[..., nn.Module] | str
    kinds: tuple[str, ...] = ("block",)
    channels_arg: str | None = "channels"
    kind_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    doc: str = ""

    def resolve(self) -> Callable[..., nn.Module]:
        """The class or factory (importing it on first use); ``ImportError`` says what is missing."""
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attr = self.target.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ImportError(
                f"plug-in {self.name!r} needs {self.target}, which cannot be imported ({exc})"
            ) from exc

    @property
    def available(self) -> bool:
        try:
            self.resolve()
        except ImportError:
            return False
        return True

    def builds(self, kind: str) -> bool:
        """Whether this plug-in can be built as ``kind`` (natively or by a conversion)."""
        return kind in self.kinds or any(k in self.kinds for k in _CONVERTIBLE.get(kind, ()))


_PLUGINS: dict[str, PluginEntry] = {}


def register_plugin(
    name: str,
    target: Callable[..., nn.Module] | str | None = None,
    *,
    kinds: Sequence[str] = ("block",),
    channels_arg: str | None = "channels",
    kind_options: Mapping[str, Mapping[str, Any]] | None = None,
    doc: str = "",
):
    """Register a plug-in under ``name``.

    With ``target`` (a class, a factory or an import path ``"module:attribute"``) it registers at once;
    without, it is a decorator for a class or factory. ``kinds`` lists the kinds it builds natively
    (first = default), ``channels_arg`` the keyword that receives the width (``None`` if none).
    Registering a name twice with another target is an error.
    """
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in PLUGIN_KINDS]
    if not kinds or bad:
        raise ValueError(f"plug-in {name!r}: kinds must be a non-empty subset of {PLUGIN_KINDS}, got {kinds}")

    def add(t: Callable[..., nn.Module] | str) -> Callable[..., nn.Module] | str:
        entry = PluginEntry(name, t, kinds, channels_arg, dict(kind_options or {}), doc or _first_line(t))
        old = _PLUGINS.get(name)
        if old is not None and _target_id(old.target) != _target_id(t):
            raise ValueError(f"plug-in name {name!r} is already registered for {_target_id(old.target)}")
        _PLUGINS[name] = entry
        return t

    if target is not None:
        add(target)
        return None
    return add


def _target_id(t: Callable[..., Any] | str) -> str:
    return t if isinstance(t, str) else f"{t.__module__}:{t.__qualname__}"


def _first_line(t: Callable[..., Any] | str) -> str:
    if isinstance(t, str) or not t.__doc__:
        return ""
    return t.__doc__.strip().splitlines()[0]


def _entry(name: str, kind: str | None) -> PluginEntry:
    entry = _PLUGINS.get(name)
    if entry is None or (kind is not None and not entry.builds(kind)):
        names = list_plugins(kind)
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        what = f"{kind} layer" if kind else "plug-in"
        extra = ""
        if entry is not None:
            extra = f" ({name!r} builds {'/'.join(entry.kinds)}, not {kind})"
        raise PluginError(f"unknown {what} {name!r}{extra}.{hint} Choose one of: {', '.join(names) or '-'}")
    return entry


def list_plugins(kind: str | None = None, *, available_only: bool = True) -> list[str]:
    """Sorted plug-in names that can be built as ``kind`` (any kind when ``None``).

    ``available_only`` leaves out plug-ins whose module cannot be imported (yet).
    """
    if kind is not None and kind not in PLUGIN_KINDS:
        raise ValueError(f"unknown plug-in kind {kind!r}; kinds are {PLUGIN_KINDS}")
    return sorted(
        n
        for n, e in _PLUGINS.items()
        if (kind is None or e.builds(kind)) and (not available_only or e.available)
    )


def get_plugin_entry(name: str) -> PluginEntry:
    """The registry entry of ``name`` (``ValueError`` listing the names when unknown)."""
    return _entry(name, None)


def build_plugin(
    name: str,
    channels: int | Sequence[int] | None = None,
    *,
    kind: str | None = None,
    where: str = "place",
    **options: Any,
) -> nn.Module:
    """Build plug-in ``name`` for a place of ``channels`` channels, as ``kind`` (default: its own).

    Args:
        name: a registered name (``list_plugins()``).
        channels: the width at the place (a list of widths for ``depth_sequence``); ignored by plug-ins
            that take none. An explicit width option (e.g. ``embed_dim``) must agree with it.
        kind: ``block``, ``gate``, ``interaction`` or ``depth_sequence`` (see the module docstring).
        where: how errors name the place (``"stage"`` -> "does not match the stage's 16 channels").
        **options: the plug-in's keyword options; ``dates`` (``"both"``/``"first"``) when a block
            serves as an interaction.
    """
    entry = _entry(name, kind)
    kind = kind or entry.kinds[0]
    options = dict(options)
    if kind in entry.kinds:
        native = kind
    else:  # a conversion, see _CONVERTIBLE
        native = next(k for k in _CONVERTIBLE[kind] if k in entry.kinds)
    dates = options.pop("dates", "both") if kind == "interaction" and native != "interaction" else None
    for key, value in entry.kind_options.get(native, {}).items():
        if key in options and options[key] != value:
            raise PluginError(
                f"plug-in {name!r} as {native}: option {key}={options[key]!r} is fixed to {value!r}"
            )
        options[key] = value
    if entry.channels_arg is not None:
        given = options.get(entry.channels_arg)
        if given is not None and channels is not None and _as_width(given) != _as_width(channels):
            raise PluginError(
                f"{name} {entry.channels_arg} {given} does not match the {where}'s {channels} channels"
            )
        if given is None:
            if channels is None:
                raise PluginError(f"plug-in {name!r} needs the channels of its {where}")
            options[entry.channels_arg] = _as_width(channels)
    try:
        module = entry.resolve()(**options)
    except TypeError as exc:
        raise PluginError(f"bad options for plug-in {name!r} ({entry.target}): {exc}") from exc
    if native == "gate" and kind in ("block", "interaction"):
        module = GatedBlock(module)
    if dates is not None:
        module = SiameseLayer(module, dates=dates)
    return module


def _as_width(c: Any) -> Any:
    return tuple(int(v) for v in c) if isinstance(c, Sequence) and not isinstance(c, str) else int(c)


def plugin_from_config(
    spec: Any, channels: int | Sequence[int] | None, *, kind: str = "block", where: str = "place"
) -> nn.Module:
    """A module from a config entry: ``None``/``"none"`` (identity of the kind), a name, a dict
    ``{"type": name, **options}`` or an ``nn.Module`` (used as given)."""
    if isinstance(spec, nn.Module):
        return spec
    if spec is None or (isinstance(spec, str) and spec.lower() == "none"):
        return _identity(kind)
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, Mapping) or "type" not in spec:
        article = "an" if kind[0] in "aeiou" else "a"
        raise PluginError(
            f"{article} {kind} entry must be None, a name, a dict with 'type' or a module, got {spec!r}"
        )
    options = dict(spec)
    name = str(options.pop("type")).lower()
    if name == "none":
        return _identity(kind)
    return build_plugin(name, channels, kind=kind, where=where, **options)


def _identity(kind: str) -> nn.Module:
    if kind == "interaction":
        return _PairIdentity()
    if kind == "gate":
        return _UnitGate()
    if kind == "block":
        return nn.Identity()
    raise PluginError(f"a {kind} place has no 'none' choice")


# --------------------------------------------------------------------------- built-in plug-ins

_ATTENTION_OPTIONS = {"block": {"multiply": True}, "gate": {"multiply": False}}

register_plugin(
    "dia",
    "geomamba.layers.dia:DeformableInteractiveAttention",
    kinds=("block", "gate"),
    channels_arg=None,
    kind_options={"block": {"output": "features"}, "gate": {"output": "mask"}},
    doc="deformable interactive attention (seed 003): spatial mask from channel mean/max maps",
)
register_plugin(
    "global_m",
    "geomamba.layers.global_m:GlobalM",
    channels_arg="embed_dim",
    doc="global multi-head axial self-attention (seed 001), rows / columns / hybrid",
)
register_plugin(
    "channel_exchange",
    "geomamba.layers.exchange:ChannelExchange",
    kinds=("interaction",),
    channels_arg=None,
    doc="swap every 1/p-th channel between the dates",
)
register_plugin(
    "spatial_exchange",
    "geomamba.layers.exchange:SpatialExchange",
    kinds=("interaction",),
    channels_arg=None,
    doc="swap every 1/p-th column between the dates",
)
register_plugin(
    "dtm",
    "geomamba.layers.dtm:DeepTemporalMamba",
    kinds=("depth_sequence",),
    channels_arg="in_channels",
    doc="deep temporal Mamba (seed 003): features of several depths as one sequence, auxiliary classifier",
)
register_plugin(
    "channel_attention",
    "geomamba.layers.attention:ChannelAttention",
    kinds=("block", "gate"),
    kind_options=_ATTENTION_OPTIONS,
    doc="CBAM channel attention",
)
register_plugin(
    "spatial_attention",
    "geomamba.layers.attention:SpatialAttention",
    kinds=("block", "gate"),
    channels_arg=None,
    kind_options=_ATTENTION_OPTIONS,
    doc="CBAM spatial attention",
)
register_plugin(
    "se",
    "geomamba.layers.attention:SqueezeExcitation",
    kinds=("block", "gate"),
    kind_options=_ATTENTION_OPTIONS,
    doc="squeeze-and-excitation",
)
