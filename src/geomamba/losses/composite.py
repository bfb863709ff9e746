"""Composite loss from a config value: weighted terms on the main logits and on every deep-supervision output.

Spec forms accepted by ``build_loss``:

- ``None`` -> ``"ce_lovasz"`` (the change-detection default: CE + 0.75 Lovász-softmax);
- a name: a term (``"ce"``, ``"bce"``, ``"dice"``, ``"focal"``, ``"lovasz"``, ``"ohem"``, ``"boundary"``) or a
  preset (``"ce_lovasz"``, ``"focal_lovasz"``, ``"dice_focal"``, ``"bce_dice"``);
- ``{"name": term, **term_options, **composite_options}``;
- ``{"name": preset, "<term>_weight": w, "<term>": {term options}, **composite_options}``,
  e.g. ``{"name": "ce_lovasz", "lovasz_weight": 0.75, "aux_weights": [0.4, 0.2]}``;
- ``{"terms": [{"name": "ce", "weight": 1}, {"name": "lovasz", "weight": 0.75}], **composite_options}``.

Composite options: ``ignore_index`` (255, given to every term), ``aux_weight`` (one weight for every
auxiliary output, default 0.4) or ``aux_weights`` (one per output, their count must match the model's),
``boundary_weight`` (weight of ``boundary_bce`` on a model's ``"boundary"`` output, default 0: such an
output is then ignored with a warning), ``validate`` (check label values, default True).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from geomamba.losses._common import check_inputs, validate_labels
from geomamba.losses.boundary import BoundaryLoss, boundary_bce
from geomamba.losses.cross_entropy import BinaryCrossEntropyLoss, CrossEntropyLoss, OhemCrossEntropyLoss
from geomamba.losses.dice import DiceLoss
from geomamba.losses.focal import FocalLoss
from geomamba.losses.lovasz import LovaszSoftmaxLoss

__all__ = ["LOSS_PRESETS", "LOSS_TERMS", "CompositeLoss", "build_loss"]

LOSS_TERMS: dict[str, type[nn.Module]] = {
    "ce": CrossEntropyLoss,
    "bce": BinaryCrossEntropyLoss,
    "dice": DiceLoss,
    "focal": FocalLoss,
    "lovasz": LovaszSoftmaxLoss,
    "ohem": OhemCrossEntropyLoss,
    "boundary": BoundaryLoss,
}
# preset -> default (term, weight) pairs
LOSS_PRESETS: dict[str, tuple[tuple[str, float], ...]] = {
    "ce_lovasz": (("ce", 1.0), ("lovasz", 0.75)),
    "focal_lovasz": (("focal", 1.0), ("lovasz", 0.75)),
    "dice_focal": (("dice", 1.0), ("focal", 1.0)),
    "bce_dice": (("bce", 1.0), ("dice", 1.0)),
}
_COMPOSITE_KEYS = ("ignore_index", "aux_weight", "aux_weights", "boundary_weight", "validate")


def _make_term(name: str, options: dict[str, Any], ignore_index: int) -> nn.Module:
    if name not in LOSS_TERMS:
        raise ValueError(
            f"unknown loss {name!r}; valid terms: {', '.join(LOSS_TERMS)}; presets: {', '.join(LOSS_PRESETS)}"
        )
    cls = LOSS_TERMS[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"loss term {name!r}: unknown option(s) {unknown}; valid: {valid}")
    return cls(**{"ignore_index": ignore_index, **options})


class CompositeLoss(nn.Module):
    """``sum_i w_i * term_i(out) + sum_j a_j * sum_i w_i * term_i(aux_j) + b * boundary_bce(boundary)``.

    Args:
        terms: ``(name, weight, module)`` triples; each module maps ``(logits, target)`` to a scalar.
        aux_weights: a float for every auxiliary output, or one weight per output.
        boundary_weight: weight of the BCE on the model's ``"boundary"`` output.
        ignore_index: label value that does not count.
        validate: check that labels are class ids or ``ignore_index`` (one device sync per call).

    ``forward(output, target)``: ``output`` logits ``(B, K, H, W)`` or a dict with ``"out"`` and optional
    ``"aux"`` (list of logits) and ``"boundary"``; ``target (B, H, W)``. ``last_components`` then holds the
    detached main terms by name, ``"aux{j}"`` (unweighted sum of terms on aux output j) and ``"boundary"``.
    """

    def __init__(
        self,
        terms: Sequence[tuple[str, float, nn.Module]],
        *,
        aux_weights: float | Sequence[float] = 0.4,
        boundary_weight: float = 0.0,
        ignore_index: int = 255,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if not terms:
            raise ValueError("CompositeLoss needs at least one term")
        names: list[str] = []
        for name, _, _ in terms:
            names.append(name if name not in names else f"{name}_{len(names)}")
        self.names = names
        self.weights = [float(w) for _, w, _ in terms]
        self.terms = nn.ModuleList(m for _, _, m in terms)
        self.aux_weights = (
            aux_weights if isinstance(aux_weights, (int, float)) else [float(a) for a in aux_weights]
        )
        self.boundary_weight, self.ignore_index, self.validate = (
            float(boundary_weight),
            ignore_index,
            validate,
        )
        self.last_components: dict[str, torch.Tensor] = {}
        self._warned_boundary = False

    def _weighted(self, logits: torch.Tensor, target: torch.Tensor, comps: dict | None) -> torch.Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        for name, w, term in zip(self.names, self.weights, self.terms):
            value = term(logits, target)
            if comps is not None:
                comps[name] = value.detach()
            total = total + w * value
        return total

    def forward(self, output: torch.Tensor | dict, target: torch.Tensor) -> torch.Tensor:
        logits = output["out"] if isinstance(output, dict) else output
        target = check_inputs(logits, target, "loss")
        if self.validate:
            validate_labels(target, logits.shape[1], self.ignore_index)
        comps: dict[str, torch.Tensor] = {}
        total = self._weighted(logits, target, comps)
        aux = list(output.get("aux") or []) if isinstance(output, dict) else []
        if aux:
            if isinstance(self.aux_weights, list):
                if len(self.aux_weights) != len(aux):
                    raise ValueError(
                        f"aux_weights has {len(self.aux_weights)} entries but the model returned {len(aux)} "
                        "auxiliary outputs"
                    )
                weights = self.aux_weights
            else:
                weights = [float(self.aux_weights)] * len(aux)
            for j, (a, w) in enumerate(zip(aux, weights)):
                value = self._weighted(a, target, None)
                comps[f"aux{j}"] = value.detach()
                total = total + w * value
        if isinstance(output, dict) and output.get("boundary") is not None:
            if self.boundary_weight > 0:
                value = boundary_bce(
                    output["boundary"], target, logits.shape[1], ignore_index=self.ignore_index
                )
                comps["boundary"] = value.detach()
                total = total + self.boundary_weight * value
            elif not self._warned_boundary:
                self._warned_boundary = True
                warnings.warn(
                    "the model returns a 'boundary' output but the loss has boundary_weight=0: it is not trained",
                    stacklevel=2,
                )
        self.last_components = comps
        return total


def build_loss(spec: str | dict[str, Any] | None = None) -> CompositeLoss:
    """Build a loss module ``loss(output, target) -> scalar`` from a config value (see the module docstring)."""
    if spec is None:
        spec = "ce_lovasz"
    cfg = {"name": spec} if isinstance(spec, str) else dict(spec)
    common = {k: cfg.pop(k) for k in _COMPOSITE_KEYS if k in cfg}
    ignore_index = int(common.get("ignore_index", 255))
    if "aux_weight" in common and "aux_weights" in common:
        raise ValueError("give aux_weight (one for all) or aux_weights (one per output), not both")
    kwargs = {
        "aux_weights": common.get("aux_weights", common.get("aux_weight", 0.4)),
        "boundary_weight": common.get("boundary_weight", 0.0),
        "ignore_index": ignore_index,
        "validate": common.get("validate", True),
    }
    if "terms" in cfg:
        terms_cfg = cfg.pop("terms")
        if cfg:
            raise ValueError(
                f"loss spec with 'terms': unknown key(s) {sorted(cfg)}; allowed: {_COMPOSITE_KEYS}"
            )
        terms = []
        for t in terms_cfg:
            t = {"name": t} if isinstance(t, str) else dict(t)
            if "name" not in t:
                raise ValueError(f"loss term {t} has no 'name'; valid: {', '.join(LOSS_TERMS)}")
            name, weight = t.pop("name"), float(t.pop("weight", 1.0))
            terms.append((name, weight, _make_term(name, t, ignore_index)))
        return CompositeLoss(terms, **kwargs)
    name = cfg.pop("name", "ce_lovasz")
    if name in LOSS_PRESETS:
        terms = []
        for term, default_w in LOSS_PRESETS[name]:
            weight = float(cfg.pop(f"{term}_weight", default_w))
            options = cfg.pop(term, {}) or {}
            terms.append((term, weight, _make_term(term, dict(options), ignore_index)))
        if cfg:
            allowed = [f"{t}_weight" for t, _ in LOSS_PRESETS[name]] + [t for t, _ in LOSS_PRESETS[name]]
            raise ValueError(
                f"loss {name!r}: unknown key(s) {sorted(cfg)}; allowed: {allowed + list(_COMPOSITE_KEYS)}"
            )
        return CompositeLoss(terms, **kwargs)
    weight = float(cfg.pop("weight", 1.0))
    return CompositeLoss([(name, weight, _make_term(name, cfg, ignore_index))], **kwargs)
