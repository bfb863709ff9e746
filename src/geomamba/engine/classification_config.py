"""Config schema of MS + PAN pixel classification (``task: classification``, ADCD-Net): the ``data.mspan``
and ``classification`` sections of a run config, their value checks and task defaults (used by
``geomamba.engine.config``, which holds the rest of the schema)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ClassificationConfig",
    "MSPanDataConfig",
    "StageConfig",
    "SyntheticMSPanConfig",
    "check_classification",
    "classification_defaults",
]


@dataclass
class SyntheticMSPanConfig:
    """A generated MS + PAN scene (``geomamba.data.mspan.make_synthetic_mspan``), written as GeoTIFFs
    under ``<output_dir>/<name>/synthetic_data/`` on first use."""

    size: int = 64
    bands: int = 4
    num_classes: int = 4
    labelled_fraction: float = 0.3
    noise: float = 0.02
    seed: int = 0


@dataclass
class MSPanDataConfig:
    """MS + PAN pixel classification (``task: classification``, ADCD-Net): the scene's files (relative to
    ``data.root``), patches and the by-pixel splits; see ``geomamba.engine.classification``."""

    ms: str = "ms.tif"
    pan: str = "pan.tif"
    labels: str = "labels.tif"
    ratio: int | None = 4
    normalise: Literal["zscore", "minmax", "none"] = "zscore"
    patch_size: int = 16
    train_fraction: float = 0.1
    train_per_class: int | None = None
    val_fraction: float = 0.2
    split_seed: int = 0
    stage1_pixels: Literal["train", "all"] = "train"
    synthetic: SyntheticMSPanConfig | None = None


@dataclass
class StageConfig:
    """Settings of one ADCD-Net stage; ``null`` takes ``trainer.max_epochs``/``max_steps``, ``optim.lr``."""

    max_epochs: int | None = None
    max_steps: int | None = None
    lr: float | None = None


@dataclass
class ClassificationConfig:
    """Two-stage training (``task: classification``): ``stage`` null runs stage I then stage II (into
    ``<run>/stage1``, ``<run>/stage2``); 1 or 2 runs that stage alone (stage II needs
    ``stage1_checkpoint``, a stage-I checkpoint whose weights give the priors)."""

    stage: int | None = None
    stage1_checkpoint: str | None = None
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=StageConfig)


def check_classification(cfg: Any) -> None:
    """Value checks of a ``task: classification`` run config (``ConfigError`` naming the key)."""
    from geomamba.engine.config import ConfigError

    m, c = cfg.data.mspan, cfg.classification
    if m.patch_size < 1:
        raise ConfigError(f"data.mspan.patch_size: must be > 0, got {m.patch_size}")
    if m.ratio is not None and m.ratio < 1:
        raise ConfigError(f"data.mspan.ratio: must be > 0 (or null to infer it), got {m.ratio}")
    if not 0 < m.train_fraction <= 1:
        raise ConfigError(f"data.mspan.train_fraction: must be in (0, 1], got {m.train_fraction}")
    if m.train_per_class is not None and m.train_per_class < 1:
        raise ConfigError(f"data.mspan.train_per_class: must be > 0, got {m.train_per_class}")
    if not 0 < m.val_fraction < 1:
        raise ConfigError(f"data.mspan.val_fraction: must be in (0, 1), got {m.val_fraction}")
    if m.synthetic is not None and (
        m.synthetic.size < 2 or m.synthetic.num_classes < 1 or m.synthetic.bands < 1
    ):
        raise ConfigError(f"data.mspan.synthetic: bad scene options {m.synthetic}")
    if c.stage not in (None, 1, 2):
        raise ConfigError(f"classification.stage: 1, 2 or null (both stages), got {c.stage}")
    if c.stage == 2 and not c.stage1_checkpoint:
        raise ConfigError(
            "classification.stage1_checkpoint: stage II alone needs a stage-I checkpoint for its priors "
            "(or set classification.stage=null to run both stages)"
        )
    for key in ("stage1", "stage2"):
        st = getattr(c, key)
        if st.max_epochs is not None and st.max_epochs < 1:
            raise ConfigError(f"classification.{key}.max_epochs: must be > 0, got {st.max_epochs}")
        if st.lr is not None and st.lr <= 0:
            raise ConfigError(f"classification.{key}.lr: must be > 0, got {st.lr}")
    if c.stage == 1 and cfg.eval.monitor != "cosine":
        raise ConfigError(
            f"eval.monitor: stage I (self-supervised) reports 'cosine' only, got {cfg.eval.monitor!r}"
        )
    if c.stage != 1 and cfg.eval.monitor == "cosine":
        raise ConfigError("eval.monitor: 'cosine' is stage I's score; stage II monitors OA, AA, Kappa...")


def classification_defaults(
    cfg: Any, raw: dict[str, Any], given_data: dict[str, Any], given_eval: dict[str, Any]
) -> None:
    """Task defaults of keys that ``raw`` does not give: stage I's monitor ``cosine``, the ``adcd`` loss,
    the class names ``class1..classK`` of a synthetic scene."""
    from geomamba.engine.config import ConfigError

    if cfg.classification.stage == 1 and "monitor" not in given_eval:
        cfg.eval.monitor = "cosine"
    if "loss" not in raw:
        cfg.loss = {"name": "adcd"}
    synthetic = cfg.data.mspan.synthetic
    if "class_names" not in given_data:
        if synthetic is None:
            raise ConfigError(
                "data.class_names: set the names of the classes of the label map (label values 1..K, "
                "0 = unlabelled), e.g. data.class_names=[water,tree,building,road]"
            )
        cfg.data.class_names = [f"class{k}" for k in range(1, synthetic.num_classes + 1)]
