"""Run configuration: a typed schema of dataclasses, YAML files, dot-path overrides and validation.

A config is YAML whose keys are the fields below (every key optional; defaults shown in the dataclasses)::

    name: levircd_subtask_mamba
    task: change                  # or segmentation, classification (see geomamba.engine.tasks)
    model: {name: subtask_mamba, options: {depths: [2, 2, 10]}}
    loss: ce                      # or {name: ..., **options}; see geomamba.losses.build_loss
    data: {root: data/LEVIR-CD, crop_size: 256, batch_size: 16}
    optim: {name: adamw, lr: 1.0e-3}
    scheduler: {name: plateau, patience: 10}
    trainer: {max_epochs: 200, precision: bf16-mixed}
    eval: {window: 256, overlap: 64}

``base: other.yaml`` (a path relative to the file, or a list of them) starts from another config.
Overrides ``a.b.c=value`` (value parsed as YAML: ``model.options.depths=[2,2,8]``, ``optim.lr=8e-4``)
replace single keys. Unknown keys and wrong types raise ``ConfigError`` naming the key and listing the
valid ones; ``model.options`` and ``loss`` are checked against the model factory and the loss builder
when the run is built. Defaults that depend on the task (``eval.monitor``; for segmentation also the class
names of a named palette and ``loss.boundary_weight`` 0.3; for classification the ``adcd`` loss and, for
a synthetic scene, class names) are filled in when the key is not given.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from geomamba.data.errors import GeomambaError
from geomamba.data.seg_labels import PALETTES
from geomamba.engine.classification_config import (
    ClassificationConfig,
    MSPanDataConfig,
    StageConfig,
    SyntheticMSPanConfig,
    check_classification,
    classification_defaults,
)
from geomamba.engine.tasks import RESERVED_TASKS, TASKS

__all__ = [
    "AugmentConfig",
    "ClassificationConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "MSPanDataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SchedulerConfig",
    "SegmentationDataConfig",
    "StageConfig",
    "SyntheticMSPanConfig",
    "TrainerConfig",
    "apply_overrides",
    "config_keys",
    "config_to_dict",
    "load_config",
    "parse_config",
    "parse_section",
]


class ConfigError(GeomambaError, ValueError):
    """A config key is unknown, has a wrong type or a wrong value; the message names it."""


@dataclass
class ModelConfig:
    """``name``: a registered model (``geomamba models``); ``options``: its keyword options."""

    name: str = "subtask_mamba_tiny"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class AugmentConfig:
    """Training augmentation (probabilities and jitter limits); see ``geomamba.data.transforms``."""

    hflip: float = 0.5
    vflip: float = 0.5
    rotate90: float = 0.5
    date_swap: float = 0.0
    brightness: float = 0.1
    contrast: float = 0.1
    photometric_p: float = 0.5


@dataclass
class SplitsConfig:
    """Folder names of the splits under ``data.root``."""

    train: str = "train"
    val: str = "val"
    test: str = "test"


@dataclass
class ListFilesConfig:
    """Optional list files per split (default: ``root/list/<split>.txt`` or ``root/<split>.txt`` if present)."""

    train: str | None = None
    val: str | None = None
    test: str | None = None


@dataclass
class SegmentationDataConfig:
    """Segmentation datasets (``task: segmentation``): folders, label encoding, large tiles; see
    ``geomamba.data.segmentation`` and ``geomamba.data.seg_labels``."""

    image_dir: str = "{split}/images"
    label_dir: str = "{split}/labels"
    eval_label_dir: str | None = None
    image_suffix: str = ""
    label_suffix: str = ""
    eval_label_suffix: str | None = None
    encoding: Literal["ids", "rgb"] = "ids"
    palette: Union[str, list[list[int]], None] = None  # noqa: UP007
    ignore_colours: list[list[int]] | None = None
    colour_tolerance: int = 0
    reduce_zero_label: bool = False
    eval_tile: int | None = None


@dataclass
class DataConfig:
    """Dataset, normalisation, cropping and loading. ``cache``: keep the decoded training images in memory
    (shared by the loader workers); ``prefetch_factor``: batches each worker loads ahead."""

    root: str = ""
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    list_files: ListFilesConfig = field(default_factory=ListFilesConfig)
    bands: list[int] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    value_scale: float | None = None
    ignore_value: int | None = None
    class_names: list[str] = field(default_factory=lambda: ["unchanged", "changed"])
    crop_size: int | None = 256
    crops_per_image: int = 1
    batch_size: int = 8
    eval_batch_size: int = 1
    num_workers: int = 4
    prefetch_factor: int = 4
    cache: bool = False
    validate: Literal["full", "header", "off"] = "full"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    segmentation: SegmentationDataConfig = field(default_factory=SegmentationDataConfig)
    mspan: MSPanDataConfig = field(default_factory=MSPanDataConfig)


@dataclass
class OptimConfig:
    """Optimiser: AdamW (``betas``) or SGD (``momentum``, ``nesterov``); ``fused``: one fused kernel for
    all parameters when they are on a GPU."""

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9
    nesterov: bool = False
    fused: bool = True


@dataclass
class SchedulerConfig:
    """Learning-rate schedule: ``none``, ``poly``, ``cosine`` (both per step, with linear warm-up) or
    ``plateau`` (reduce on plateau of the monitored validation score, per epoch)."""

    name: Literal["none", "poly", "cosine", "plateau"] = "plateau"
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.01
    power: float = 0.9
    min_lr: float = 0.0
    factor: float = 0.5
    patience: int = 10


_PRECISIONS = Literal["32", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64", "64-true"]


@dataclass
class TrainerConfig:
    """Lightning Trainer settings, plus checkpoint/early-stopping options and speed switches: ``compile``
    (``torch.compile`` of the model with ``compile_mode``/``compile_backend`` and the inductor config values
    of ``compile_inductor``, eager fallback with a warning), ``channels_last`` (NHWC weights and activations) and ``fast_norm`` (LayerNorms in the
    autocast dtype instead of fp32, see ``engine.acceleration.apply_fast_norm``); reliability: ``save_every_n_steps``
    (also write ``last.ckpt`` every N optimizer steps), ``skip_nonfinite`` (skip and count steps with a
    NaN/inf loss or gradient; one host read per step unless the optimizer is fused), ``max_bad_steps``
    (stop after that many such steps in a row; None: never) and ``collapse_patience`` (validations in a row
    without a prediction of some class before the class-collapse report)."""

    max_epochs: int = 200
    max_steps: int = -1
    accelerator: str = "auto"
    devices: Union[int, str, list[int]] = "auto"  # noqa: UP007
    strategy: str = "auto"
    num_nodes: int = 1
    precision: _PRECISIONS = "32"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    check_val_every_n_epoch: int = 1
    val_check_interval: Union[int, float, None] = None  # noqa: UP007
    limit_train_batches: Union[int, float, None] = None  # noqa: UP007
    limit_val_batches: Union[int, float, None] = None  # noqa: UP007
    limit_test_batches: Union[int, float, None] = None  # noqa: UP007
    num_sanity_val_steps: int = 2
    log_every_n_steps: int = 10
    deterministic: bool = False
    benchmark: bool | None = None
    sync_batchnorm: bool = False
    early_stopping_patience: int | None = None
    save_every_n_steps: int | None = None
    enable_progress_bar: bool = True
    compile: bool = False
    compile_mode: str | None = None
    compile_backend: str = "inductor"
    compile_inductor: dict[str, Any] = field(default_factory=dict)
    channels_last: bool = False
    fast_norm: bool = True
    skip_nonfinite: bool = True
    max_bad_steps: int | None = 10
    collapse_patience: int = 3


@dataclass
class EvalConfig:
    """Validation/test/prediction: sliding window (``window_batch``: windows per forward pass),
    test-time augmentation, monitored score, figures."""

    window: int | None = None
    overlap: int = 64
    pad_multiple: int = 32
    window_batch: int = 16
    tta: bool = False
    monitor: str = "F1_changed"
    num_error_maps: int = 4
    test_after_fit: bool = True
    boundary_width: int = 3


@dataclass
class RunConfig:
    """A whole run; outputs go to ``output_dir/name/``."""

    name: str = "run"
    output_dir: str = "runs"
    seed: int = 42
    task: str = "change"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: Union[str, dict[str, Any]] = "ce"  # noqa: UP007
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    classification: ClassificationConfig = field(default_factory=ClassificationConfig)


# --------------------------------------------------------------------------------------------------
# Validation of a nested dict against the dataclasses.

_FREE_DICTS = ("model.options", "loss")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any, key: str) -> Any:
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except (_Mismatch, ConfigError):
                continue
        raise _Mismatch
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        if not isinstance(value, bool) and str(value) in choices:
            return str(value)
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(repr(c) for c in choices)}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Mismatch
        return _build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"unsupported schema type {tp} at {key}")


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in hints:
            where = f"in {prefix}" if prefix else "at the top level"
            raise ConfigError(f"unknown config key {full!r}; valid keys {where}: {', '.join(names)}")
        try:
            kwargs[key] = _coerce(value, hints[key], full)
        except _Mismatch:
            raise ConfigError(
                f"{full}: expected {_type_name(hints[key])}, got {value!r} ({type(value).__name__})"
            ) from None
    return cls(**kwargs)


def parse_section(cls: type, raw: Any, prefix: str = "") -> Any:
    """Validate a mapping against any config dataclass ``cls`` with the rules and messages of run configs
    (used by other config files, e.g. experiment configs); ``prefix`` names the section in errors."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {raw!r}")
    return _build(cls, raw, prefix)


def _check_values(cfg: RunConfig) -> None:
    def positive(key: str, value: float | int | None, allow_zero: bool = False) -> None:
        if value is not None and (value < 0 or (value == 0 and not allow_zero)):
            raise ConfigError(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")

    positive("optim.lr", cfg.optim.lr)
    positive("optim.weight_decay", cfg.optim.weight_decay, allow_zero=True)
    positive("data.batch_size", cfg.data.batch_size)
    positive("data.eval_batch_size", cfg.data.eval_batch_size)
    positive("data.crop_size", cfg.data.crop_size)
    positive("data.crops_per_image", cfg.data.crops_per_image)
    positive("data.num_workers", cfg.data.num_workers, allow_zero=True)
    positive("data.prefetch_factor", cfg.data.prefetch_factor)
    positive("eval.window_batch", cfg.eval.window_batch)
    positive("trainer.accumulate_grad_batches", cfg.trainer.accumulate_grad_batches)
    positive("eval.window", cfg.eval.window)
    positive("trainer.max_bad_steps", cfg.trainer.max_bad_steps)
    positive("trainer.collapse_patience", cfg.trainer.collapse_patience)
    positive("trainer.save_every_n_steps", cfg.trainer.save_every_n_steps)
    positive("eval.overlap", cfg.eval.overlap, allow_zero=True)
    positive("eval.pad_multiple", cfg.eval.pad_multiple)
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"optim.betas: expected two values, got {cfg.optim.betas}")
    if (cfg.data.mean is None) != (cfg.data.std is None):
        raise ConfigError("data.mean and data.std must be given together (or both left null)")
    if cfg.data.mean is not None and len(cfg.data.mean) != len(cfg.data.std):
        raise ConfigError(f"data.mean has {len(cfg.data.mean)} values but data.std {len(cfg.data.std)}")
    if cfg.data.std is not None and any(s <= 0 for s in cfg.data.std):
        raise ConfigError(f"data.std: values must be > 0, got {cfg.data.std}")
    if cfg.task not in TASKS:
        reserved = "".join(
            f"; {t!r} is reserved ({why}) and not wired in yet" for t, why in RESERVED_TASKS.items()
        )
        raise ConfigError(f"task: {cfg.task!r} is not one of {', '.join(TASKS)}{reserved}")
    if cfg.task == "change" and cfg.data.ignore_value in (0, 1):
        raise ConfigError(f"data.ignore_value: {cfg.data.ignore_value} is a class value; use e.g. 255")
    positive("eval.boundary_width", cfg.eval.boundary_width)
    if cfg.task == "segmentation":
        _check_segmentation(cfg)
    if cfg.task == "classification":
        check_classification(cfg)
    if len(cfg.data.class_names) < 2:
        raise ConfigError(f"data.class_names: need at least 2 classes, got {cfg.data.class_names}")
    if cfg.eval.window is not None:
        if cfg.eval.window % cfg.eval.pad_multiple:
            raise ConfigError(
                f"eval.window ({cfg.eval.window}) must be a multiple of eval.pad_multiple ({cfg.eval.pad_multiple})"
            )
        if 2 * cfg.eval.overlap >= cfg.eval.window:
            raise ConfigError(
                f"eval.overlap ({cfg.eval.overlap}) must be < eval.window/2 ({cfg.eval.window})"
            )
    metric = cfg.eval.monitor.split("_", 1)
    valid, overall = TASKS[cfg.task].class_scores, TASKS[cfg.task].scores
    if cfg.eval.monitor not in overall and not (
        len(metric) == 2 and metric[0] in valid and metric[1] in cfg.data.class_names
    ):
        raise ConfigError(
            f"eval.monitor: {cfg.eval.monitor!r} is not a score; use one of {', '.join(overall)} or "
            f"<{'|'.join(valid)}>_<class name> (class names: {', '.join(cfg.data.class_names)})"
        )
    if not cfg.name or "/" in cfg.name or cfg.name in (".", ".."):
        raise ConfigError(f"name: {cfg.name!r} must be a plain folder name")


def _check_segmentation(cfg: RunConfig) -> None:
    d, s = cfg.data, cfg.data.segmentation
    k = len(d.class_names)
    if k > 255:
        raise ConfigError(f"data.class_names: at most 255 classes, got {k}")
    if d.ignore_value is not None and not 0 <= d.ignore_value <= 65535:
        raise ConfigError(f"data.ignore_value: {d.ignore_value} is not a label file value (0..65535)")
    if d.augment.date_swap:
        raise ConfigError("data.augment.date_swap: applies to change detection only; set it to 0")
    for key in ("image_dir", "label_dir"):
        if not getattr(s, key):
            raise ConfigError(f"data.segmentation.{key}: must name a folder (template with {{split}})")
    if s.colour_tolerance < 0 or s.colour_tolerance > 255:
        raise ConfigError(f"data.segmentation.colour_tolerance: must be 0..255, got {s.colour_tolerance}")
    if s.eval_tile is not None and s.eval_tile < 1:
        raise ConfigError(f"data.segmentation.eval_tile: must be > 0, got {s.eval_tile}")

    def colours(key: str, value: list[list[int]]) -> None:
        for c in value:
            if len(c) != 3 or any(not 0 <= v <= 255 for v in c):
                raise ConfigError(f"{key}: colours are [r, g, b] with values 0..255, got {c}")

    if isinstance(s.palette, str):
        if s.palette not in PALETTES:
            raise ConfigError(
                f"data.segmentation.palette: unknown palette {s.palette!r}; named palettes: "
                f"{', '.join(PALETTES)} (or a list of [r, g, b], one per class)"
            )
        n = len(PALETTES[s.palette].colours)
        if n != k:
            raise ConfigError(f"data.segmentation.palette {s.palette!r} has {n} colours but {k} classes")
    elif s.palette is not None:
        colours("data.segmentation.palette", s.palette)
        if len(s.palette) != k:
            raise ConfigError(f"data.segmentation.palette: {len(s.palette)} colours for {k} classes")
    if s.ignore_colours is not None:
        colours("data.segmentation.ignore_colours", s.ignore_colours)
    if s.encoding == "rgb" and s.palette is None:
        raise ConfigError(
            f"data.segmentation.palette: RGB-coded labels need a palette: [[r, g, b], ...] with one colour "
            f"per class ({k}), or a named palette ({', '.join(PALETTES)})"
        )


def _task_defaults(cfg: RunConfig, raw: dict[str, Any]) -> None:
    """Fill the task-dependent defaults of keys that ``raw`` does not give."""
    given_data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    given_eval = raw.get("eval") if isinstance(raw.get("eval"), dict) else {}
    if cfg.task in TASKS and "monitor" not in given_eval:
        cfg.eval.monitor = TASKS[cfg.task].monitor
    if cfg.task == "classification":
        classification_defaults(cfg, raw, given_data, given_eval)
    if cfg.task != "segmentation":
        return
    seg = cfg.data.segmentation
    if seg.encoding == "rgb" and seg.palette is None:
        if "class_names" not in given_data or len(cfg.data.class_names) == len(PALETTES["isprs"].colours):
            seg.palette = "isprs"
    if "class_names" not in given_data:
        if not isinstance(seg.palette, str):
            raise ConfigError(
                "data.class_names: set the class names of the segmentation dataset (e.g. the ISPRS or "
                "LoveDA names of configs/potsdam.yaml, configs/loveda.yaml)"
            )
        cfg.data.class_names = list(PALETTES[seg.palette].classes)
    loss = {"name": cfg.loss} if isinstance(cfg.loss, str) else dict(cfg.loss)
    if "loss" not in raw:
        loss = {"name": "ce"}
    loss.setdefault("boundary_weight", 0.3)
    cfg.loss = loss


def parse_config(raw: dict[str, Any] | None) -> RunConfig:
    """Validate a nested dict against the schema and return a ``RunConfig`` (``ConfigError`` if bad)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of keys, got {type(raw).__name__}")
    cfg = _build(RunConfig, raw, "")
    _task_defaults(cfg, raw)
    _check_values(cfg)
    return cfg


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain nested dict (YAML/JSON/``torch.load(weights_only=True)`` safe) of a config."""
    return dataclasses.asdict(cfg)


def config_keys(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, Any]]:
    """Every leaf key as ``(dot.path, type, default)``; used by the CLI reference."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(config_keys(tp, key + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append((key, _type_name(tp), default))
    return out


# --------------------------------------------------------------------------------------------------
# Files and overrides.


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "options":
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'base' loop through {' -> '.join(str(p) for p in seen)}")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})".replace("\n", " ")) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(raw).__name__}")
    bases = raw.pop("base", None)
    if bases is None:
        return raw
    merged: dict[str, Any] = {}
    for b in [bases] if isinstance(bases, str) else list(bases):
        merged = _deep_merge(merged, _read_yaml(path.parent / b, (*seen, path)))
    return _deep_merge(merged, raw)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a nested dict; returns a new dict."""
    out = _deep_copy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: the value is not valid YAML") from None
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: bad key {key!r}")
        node = out
        for i, p in enumerate(parts[:-1]):
            nxt = node.get(p)
            if nxt is None or not isinstance(nxt, dict):
                if nxt is not None and not isinstance(nxt, dict):
                    if ".".join(parts[: i + 1]) == "loss" and isinstance(nxt, str):
                        nxt = {"name": nxt}  # loss=ce then loss.weight=...: expand the short form
                    else:
                        raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a mapping")
                else:
                    nxt = {}
                node[p] = nxt
            node = nxt
        node[parts[-1]] = value
    return out


def _deep_copy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _deep_copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_deep_copy(v) for v in x]
    return x


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (with its ``base`` chain), apply ``overrides`` and validate."""
    raw = _read_yaml(Path(path)) if path is not None else {}
    return parse_config(apply_overrides(raw, overrides or []))
