"""Experiment configs: a shared run recipe, datasets, and the runs (compared models or ablation variants).

An experiment config is YAML::

    name: levircd_compare            # the experiment folder is <output_dir>/<name>/
    output_dir: experiments
    recipe: ../levircd.yaml          # the shared run config (path relative to this file, or a mapping)
    overrides: [trainer.max_epochs=200]        # applied to every run
    datasets:
      LEVIR-CD: {root: data/LEVIR-CD}          # optional per dataset: recipe, overrides
    models:                          # `geomamba experiment compare`
      - fc_ef
      - {name: snunet_c16, label: SNUNet-c16, options: {}, overrides: []}
    ablation:                        # `geomamba experiment ablate`
      model: subtask_mamba
      groups:
        decoder: ["0 0 0", "0 1 0", de_ca, en_sicnn_inmlp-de_sa-di_so_fo_m]
    efficiency: {input_size: 256, batch_size: 8, warmup: 10, iters: 50}
    figure: {samples: 4}
    devices: null                    # [0, 1, 2, 3] or auto: one run per GPU at a time

A run's config is built in this order: the recipe (a dataset's own ``recipe`` replaces the experiment's),
the experiment ``overrides``, ``data.root`` and the dataset's ``overrides``, the run's model (its options
start from the recipe's options when the model name is the recipe's, else from none), the run's
``overrides``, then the command line's recipe overrides. ``name``/``output_dir`` are set by the runner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from geomamba.engine.config import ConfigError, apply_overrides, parse_section

__all__ = [
    "AblationConfig",
    "DatasetConfig",
    "EfficiencyConfig",
    "ExperimentConfig",
    "FigureConfig",
    "ModelRunConfig",
    "load_experiment",
    "split_overrides",
]

_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def check_plain_name(value: str, key: str) -> str:
    """``value`` must be usable as one folder name (letters, digits, ``. _ + -``)."""
    if not isinstance(value, str) or not _PLAIN.match(value):
        raise ConfigError(f"{key}: {value!r} must be a plain folder name (letters, digits, '._+-')")
    return value


@dataclass
class DatasetConfig:
    """One dataset of the experiment: its root, and optionally its own recipe and overrides."""

    root: str = ""
    recipe: Union[str, dict[str, Any], None] = None  # noqa: UP007
    overrides: list[str] = field(default_factory=list)


@dataclass
class ModelRunConfig:
    """One compared model: registered ``name``, a table ``label`` (default the name, also the run folder),
    its ``options`` and run-config ``overrides`` of its own."""

    name: str = ""
    label: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)


@dataclass
class AblationConfig:
    """The ablation grid: ``groups`` maps a group name to variants of ``model``, each a numeric code
    (``"0 1 0"``), a version name (``de_ca`` or ``en_..-de_..-di_..``) or a mapping of switches
    (``{code: "0 1 0", core: shared}``)."""

    model: str = "subtask_mamba"
    options: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    groups: dict[str, Any] = field(default_factory=dict)


@dataclass
class EfficiencyConfig:
    """Parameters, GFLOPs (one pair of ``input_size``) and timed loops on the run's device: ``warmup``
    then ``iters`` steps of ``batch_size`` random pairs, inference (eval mode, no grad) and training
    (forward, loss, backward, optimiser step)."""

    enabled: bool = True
    input_size: int = 256
    batch_size: int = 8
    warmup: int = 10
    iters: int = 50


@dataclass
class FigureConfig:
    """Error-map figure per dataset: ``samples`` test images (or the ``names`` given, per dataset)."""

    samples: int = 4
    names: dict[str, list[str]] = field(default_factory=dict)
    dpi: int = 100


@dataclass
class ExperimentConfig:
    """A whole experiment (see the module docstring)."""

    name: str = "experiment"
    output_dir: str = "experiments"
    recipe: Union[str, dict[str, Any]] = ""  # noqa: UP007
    overrides: list[str] = field(default_factory=list)
    datasets: dict[str, Any] = field(default_factory=dict)
    models: list[Any] | None = None
    ablation: AblationConfig | None = None
    efficiency: EfficiencyConfig = field(default_factory=EfficiencyConfig)
    figure: FigureConfig = field(default_factory=FigureConfig)
    devices: Union[str, list[Any], None] = None  # noqa: UP007
    # Set by load_experiment: the file, parsed datasets and models.
    path: Path | None = None
    dataset_configs: dict[str, DatasetConfig] = field(default_factory=dict)
    model_runs: list[ModelRunConfig] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        """``<output_dir>/<name>``."""
        return Path(self.output_dir) / self.name

    def resolve_path(self, value: str) -> Path:
        """A path from the config file: relative to the file's folder (or the working folder)."""
        p = Path(value)
        if p.is_absolute() or self.path is None:
            return p
        return self.path.parent / p


_EXPERIMENT_KEYS = {
    "name",
    "output_dir",
    "recipe",
    "overrides",
    "datasets",
    "models",
    "ablation",
    "efficiency",
    "figure",
    "devices",
}


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Split command-line ``key=value`` overrides into experiment ones (keys of the experiment config,
    e.g. ``datasets.LEVIR-CD.root=...``) and recipe ones (every other key, e.g. ``trainer.max_epochs=1``)."""
    exp, recipe = [], []
    for item in overrides:
        key = item.split("=", 1)[0].strip().split(".", 1)[0]
        (exp if key in _EXPERIMENT_KEYS else recipe).append(item)
    return exp, recipe


def _parse_models(raw: list[Any] | None) -> list[ModelRunConfig]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"models: expected a list of model names or mappings, got {raw!r}")
    runs = []
    for i, item in enumerate(raw):
        key = f"models[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        run = parse_section(ModelRunConfig, item, key)
        if not run.name:
            raise ConfigError(f"{key}.name: a registered model name is required")
        check_plain_name(run.label or run.name, f"{key}.label")
        runs.append(run)
    labels = [r.label or r.name for r in runs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(f"models: run labels must be unique; repeated: {', '.join(dup)} (set label:)")
    return runs


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read and validate an experiment config; ``overrides`` (``key=value``) apply to experiment keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: experiment config not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})".replace("\n", " ")) from None
    if raw is None:
        raw = {}
    raw = apply_overrides(raw, overrides or []) if isinstance(raw, dict) else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: an experiment config must be a mapping of keys")
    bad = sorted(set(raw) - _EXPERIMENT_KEYS)
    if bad:
        raise ConfigError(
            f"{path}: unknown experiment key {bad[0]!r}; valid keys: {', '.join(sorted(_EXPERIMENT_KEYS))}"
        )
    exp = parse_section(ExperimentConfig, raw)
    exp.path = path.resolve()
    check_plain_name(exp.name, "name")
    if not exp.recipe:
        raise ConfigError(f"{path}: recipe: the shared run config is not set (e.g. recipe: ../levircd.yaml)")
    if not exp.datasets:
        raise ConfigError(f"{path}: datasets: name at least one dataset, e.g. {{LEVIR-CD: {{root: ...}}}}")
    for ds, entry in exp.datasets.items():
        check_plain_name(str(ds), f"datasets.{ds}")
        cfg = parse_section(DatasetConfig, entry if entry is not None else {}, f"datasets.{ds}")
        if not cfg.root:
            raise ConfigError(f"datasets.{ds}.root: the dataset folder is not set")
        exp.dataset_configs[str(ds)] = cfg
    exp.model_runs = _parse_models(exp.models)
    e = exp.efficiency
    for key in ("input_size", "batch_size", "iters"):
        if getattr(e, key) < 1:
            raise ConfigError(f"efficiency.{key}: must be >= 1, got {getattr(e, key)}")
    if e.warmup < 0:
        raise ConfigError(f"efficiency.warmup: must be >= 0, got {e.warmup}")
    if exp.figure.samples < 1:
        raise ConfigError(f"figure.samples: must be >= 1, got {exp.figure.samples}")
    unknown = sorted(set(exp.figure.names) - set(exp.dataset_configs))
    if unknown:
        raise ConfigError(f"figure.names: {unknown[0]!r} is not a dataset of this experiment")
    if isinstance(exp.devices, str) and exp.devices != "auto":
        exp.devices = [d.strip() for d in exp.devices.split(",") if d.strip()]
    return exp
