"""The runs of an experiment: one resolved run config per (dataset, model) or (dataset, ablation variant).

Run folders are ``<experiment>/runs/<dataset>/<run>/`` where ``<run>`` is the model's label (compare) or
the ablation version string (``en_sicnn_inmlp-de_ca-di_so_fo_m``, plus ``-<core>`` for a non-default
SS2D core). A variant named in several ablation groups (the full model usually is) is one run listed
under each of its groups.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geomamba.engine.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    config_to_dict,
    load_config,
    parse_config,
)
from geomamba.experiments.config import ExperimentConfig, check_plain_name
from geomamba.models import get_model_entry
from geomamba.models.change._subtask_ablation import SubtaskAblation, resolve_ablation

__all__ = [
    "KINDS",
    "PlannedRun",
    "changed_keys",
    "config_fingerprint",
    "parse_variant",
    "plan_runs",
    "result_keys",
]

KINDS = ("compare", "ablate")

# Keys that do not change a run's results: left out of its fingerprint.
_NOT_RESULTS = (
    ("output_dir",),
    ("data", "num_workers"),
    ("trainer", "enable_progress_bar"),
    ("trainer", "devices"),
)
_ABLATION_KEYS = ("encoder", "decoder", "difference", "core", "version", "code")


@dataclass
class PlannedRun:
    """One run of an experiment, with its resolved (not yet data-resolved) run config."""

    dataset: str
    run: str
    model: str
    config: RunConfig
    fingerprint: str
    label: str = ""
    groups: tuple[str, ...] = ()
    version: str | None = None
    code: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``<dataset>/<run>``: unique in an experiment."""
        return f"{self.dataset}/{self.run}"

    @property
    def run_dir(self) -> Path:
        return Path(self.config.output_dir) / self.config.name


def result_keys(cfg: RunConfig) -> dict[str, Any]:
    """The run config as a flat ``{dot.key: value}`` dict of the keys that change its results."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and not prefix.endswith(("model.options", "loss")):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            flat[prefix] = node

    walk(config_to_dict(cfg), "")
    for path in _NOT_RESULTS:
        flat.pop(".".join(path), None)
    return flat


def config_fingerprint(cfg: RunConfig) -> str:
    """A short hash of everything in a run config that changes its results (``result_keys``)."""
    text = json.dumps(result_keys(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every key that differs between two ``result_keys`` dicts."""
    keys = sorted(set(old) | set(new))
    missing = object()
    out = []
    for k in keys:
        a, b = old.get(k, missing), new.get(k, missing)
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            fa = "(none)" if a is missing else repr(a)
            fb = "(none)" if b is missing else repr(b)
            out.append(f"{k}: {fa} -> {fb}")
    return out


def parse_variant(entry: Any, key: str) -> SubtaskAblation:
    """An ablation variant from a code (``"0 1 0"``), a version name, or a mapping of switches."""
    try:
        if isinstance(entry, bool) or isinstance(entry, (int, float)):
            raise ConfigError(
                f"{key}: {entry!r}: write numeric codes as quoted strings, e.g. '0 1 0' "
                "(YAML reads 010 as a number)"
            )
        if isinstance(entry, str):
            if re.fullmatch(r"[\d\s,]+", entry):
                return SubtaskAblation.from_code(entry)
            return SubtaskAblation.from_version(entry)
        if isinstance(entry, dict):
            bad = sorted(set(entry) - set(_ABLATION_KEYS))
            if bad:
                raise ConfigError(f"{key}: unknown switch {bad[0]!r}; valid: {', '.join(_ABLATION_KEYS)}")
            return resolve_ablation(**entry)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{key}: {exc}") from None
    raise ConfigError(f"{key}: expected a code, a version name or a mapping, got {entry!r}")


def _recipe(exp: ExperimentConfig, source: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        return config_to_dict(parse_config(source))
    path = exp.resolve_path(source)
    if not path.is_file():
        raise ConfigError(f"recipe: run config {path} not found")
    return config_to_dict(load_config(path))


def _run_config(
    base: dict[str, Any],
    *,
    model: str,
    options: dict[str, Any],
    overrides: list[str],
    cli: list[str],
    output_dir: Path,
    name: str,
    where: str,
) -> RunConfig:
    raw = apply_overrides(base, [])
    same = raw["model"]["name"] == model
    merged = {**(raw["model"]["options"] if same else {}), **options}
    raw["model"] = {"name": model, "options": merged}
    raw = apply_overrides(raw, [*overrides, *cli])
    raw["output_dir"], raw["name"] = str(output_dir), name
    raw.setdefault("eval", {})["test_after_fit"] = True
    t = raw.get("trainer", {})
    if t.get("devices") == "auto":
        t["devices"] = 1  # one device per run; --devices spreads runs over GPUs
    try:
        cfg = parse_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"run {where}: {exc}") from None
    d = cfg.trainer.devices
    count = len(d) if isinstance(d, list) else (int(d) if str(d).lstrip("-").isdigit() else 1)
    many = count > 1 or count == -1
    if many or cfg.trainer.num_nodes > 1:
        raise ConfigError(
            f"run {where}: trainer.devices={d!r}, num_nodes={cfg.trainer.num_nodes}: experiment runs train "
            "on one device each; use --devices to run several runs at once, one per GPU"
        )
    return cfg


def _model_name(name: str, where: str) -> str:
    try:
        entry = get_model_entry(name)
    except KeyError as exc:
        raise ConfigError(f"{where}: {exc.args[0]}") from None
    if entry.task != "change":
        raise ConfigError(f"{where}: model {name!r} is a {entry.task} model, not a change-detection model")
    return name


def plan_runs(exp: ExperimentConfig, kind: str, cli_overrides: list[str] | None = None) -> list[PlannedRun]:
    """Every run of ``kind`` ("compare" or "ablate"), datasets in config order, then models/variants."""
    if kind not in KINDS:
        raise ConfigError(f"experiment kind {kind!r} is not one of {', '.join(KINDS)}")
    if exp.models is not None and exp.ablation is not None:
        raise ConfigError(
            f"{exp.path}: holds both 'models' and 'ablation'; an experiment folder holds one table: "
            "split them into a compare config and an ablation config"
        )
    if kind == "compare" and not exp.model_runs:
        raise ConfigError(f"{exp.path}: 'geomamba experiment compare' needs a 'models' list")
    if kind == "ablate" and (exp.ablation is None or not exp.ablation.groups):
        raise ConfigError(f"{exp.path}: 'geomamba experiment ablate' needs 'ablation.groups'")
    cli = list(cli_overrides or [])
    shared = _recipe(exp, exp.recipe)
    runs: list[PlannedRun] = []
    for ds, dcfg in exp.dataset_configs.items():
        base = _recipe(exp, dcfg.recipe) if dcfg.recipe is not None else shared
        base = apply_overrides(base, [*exp.overrides, *dcfg.overrides])
        base["data"]["root"] = dcfg.root
        out = exp.folder / "runs" / ds
        if kind == "compare":
            for m in exp.model_runs:
                label = m.label or m.name
                cfg = _run_config(
                    base,
                    model=_model_name(m.name, f"models: {label}"),
                    options=m.options,
                    overrides=m.overrides,
                    cli=cli,
                    output_dir=out,
                    name=label,
                    where=f"{ds}/{label}",
                )
                runs.append(PlannedRun(ds, label, m.name, cfg, config_fingerprint(cfg), label, ()))
            continue
        ab = exp.ablation
        assert ab is not None
        model = _model_name(ab.model, "ablation.model")
        ab_base = apply_overrides(base, [])
        for k in ("version", "code"):  # the variant's switches replace the recipe's
            ab_base["model"]["options"].pop(k, None)
        variants: dict[str, tuple[SubtaskAblation, list[str]]] = {}
        for group, entries in ab.groups.items():
            check_plain_name(str(group), f"ablation.groups.{group}")
            if not isinstance(entries, list) or not entries:
                raise ConfigError(f"ablation.groups.{group}: expected a non-empty list of variants")
            for i, entry in enumerate(entries):
                v = parse_variant(entry, f"ablation.groups.{group}[{i}]")
                run_id = v.version if v.core == "fused" else f"{v.version}-{v.core}"
                variants.setdefault(run_id, (v, []))[1].append(str(group))
        for run_id, (v, groups) in variants.items():
            options = {k: val for k, val in ab.options.items() if k not in ("version", "code")}
            options.update(encoder=v.encoder, decoder=v.decoder, difference=v.difference, core=v.core)
            cfg = _run_config(
                ab_base,
                model=model,
                options=options,
                overrides=ab.overrides,
                cli=cli,
                output_dir=out,
                name=run_id,
                where=f"{ds}/{run_id}",
            )
            runs.append(
                PlannedRun(
                    ds,
                    run_id,
                    model,
                    cfg,
                    config_fingerprint(cfg),
                    run_id,
                    tuple(dict.fromkeys(groups)),
                    v.version,
                    v.code,
                )
            )
    return runs
