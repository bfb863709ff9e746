"""The classification task of the engine (``task: classification``): MS + PAN pixel-wise classification with
ADCD-Net's two stages (SPEC §3, seed 003). Config, Trainer, checkpoints, resume, logs and the CLI are shared
with the other tasks through ``geomamba.engine.tasks``; the two stages are two ordinary runs chained by
``geomamba.engine.adcd_stages``.

Data (``data.mspan``, ``geomamba.data.mspan``): one scene, an MS image, a PAN image at ``ratio`` times its
resolution and a sparse label map on the MS grid (0 = unlabelled, 1..K = ``data.class_names``), files
relative to ``data.root`` (or a synthetic scene generated under the run folder). The labelled pixels are
split by pixel, per class, with ``split_seed``: ``train_fraction`` (or ``train_per_class``) for training,
then ``val_fraction`` of the rest for validation, the remainder for the test. A sample is the MS/PAN patch
pair centred on one pixel (``patch_size`` MS pixels).

Stages (``classification.stage``, set by the two-stage runner):

1. self-supervised: the loss is ADCD-Net's MS/PAN similarity (``geomamba.losses.adcd.ADCDStage1Loss``);
   validation reports ``val/loss`` (that loss) and ``val/cosine``, the mean over the feature levels of the
   per-sample cosine similarity of the MS and PAN features (higher = better aligned; the monitored score);
   training uses the train pixels (``stage1_pixels: train``) or every pixel of the scene (``all``).
2. supervised: stage I's weights (``classification.stage1_checkpoint``) give the frozen priors; the loss
   is CE + weighted DTM auxiliary CE (``ADCDStage2Loss``); scores come from the shared confusion core:
   OA, AA, Kappa, per-class accuracy (``Acc`` column; logged as ``Recall_<class>``), mIoU, mF1...

Loss options (``loss``): ``{name: adcd, aux_weight: 0.3, similarity_weights: null, normalize: false}``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.fabric.utilities.warnings import PossibleUserWarning
from PIL import Image
from torchmetrics import MeanMetric

from geomamba.data.errors import DataError
from geomamba.data.mspan import (
    MSPanPatchDataset,
    MSPanScene,
    all_pixels,
    load_mspan,
    make_synthetic_mspan,
    split_pixels,
    write_mspan,
)
from geomamba.engine.config import ConfigError, RunConfig
from geomamba.engine.datamodule import ChangeDataModule
from geomamba.engine.figures import _default_colours
from geomamba.engine.module import ChangeDetectionModule, _synced_mean
from geomamba.losses.adcd import ADCDStage1Loss, ADCDStage2Loss
from geomamba.metrics.adcd import pixel_classification_scores
from geomamba.models.base import as_logits

__all__ = [
    "ClassificationDataModule",
    "ClassificationModule",
    "MSPanReport",
    "classification_has_split",
    "ensure_synthetic_scene",
    "prepare_classification_data",
]

log = logging.getLogger("geomamba.engine")

# Stage II keeps the frozen stage-I network in eval mode on purpose (fixed priors): silence Lightning's
# notice about modules in eval mode at the start of training.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=PossibleUserWarning)

PIXEL_SPLITS = ("train", "val", "test")
_LOSS_OPTIONS = ("name", "aux_weight", "similarity_weights", "normalize", "ignore_index")


@dataclass
class _SplitInfo:
    """One pixel split, as the engine reads a split of a report (``bands``, ``samples``)."""

    name: str
    samples: np.ndarray
    bands: int
    uniform_size: bool = True


@dataclass
class MSPanReport:
    """The loaded scene and its pixel splits (``pixels`` by name: train, val, test, and ``stage1``)."""

    scene: MSPanScene
    pixels: dict[str, np.ndarray]
    splits: dict[str, _SplitInfo] = field(default_factory=dict)
    stats: Any = None


# --------------------------------------------------------------------------------------------- data


def ensure_synthetic_scene(cfg: RunConfig) -> Path:
    """Write the synthetic scene of ``data.mspan.synthetic`` as ``ms.tif``, ``pan.tif``, ``labels.tif``
    under ``<output_dir>/<name>/synthetic_data/`` (again only when its options changed); returns the folder.
    Files are replaced atomically, so concurrent DDP processes never read half-written ones."""
    m = cfg.data.mspan
    assert m.synthetic is not None
    folder = Path(cfg.output_dir) / cfg.name / "synthetic_data"
    spec = {**asdict(m.synthetic), "ratio": m.ratio or 4}
    marker = folder / "synthetic.json"
    files = [folder / f"{n}.tif" for n in ("ms", "pan", "labels")]
    try:
        if json.loads(marker.read_text(encoding="utf-8")) == spec and all(f.is_file() for f in files):
            return folder
    except (OSError, ValueError):
        pass
    s = m.synthetic
    scene = make_synthetic_mspan(
        s.size,
        ratio=spec["ratio"],
        bands=s.bands,
        num_classes=s.num_classes,
        labelled_fraction=s.labelled_fraction,
        noise=s.noise,
        seed=s.seed,
    )
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        for path in write_mspan(tmp, scene).values():
            os.replace(path, folder / path.name)
    tmp_marker = folder / f".synthetic.json.tmp-{os.getpid()}"
    tmp_marker.write_text(json.dumps(spec), encoding="utf-8")
    os.replace(tmp_marker, marker)
    log.info("synthetic MS + PAN scene (%s) written to %s", spec, folder)
    return folder


def _scene_paths(cfg: RunConfig) -> tuple[Path, Path, Path]:
    d, m = cfg.data, cfg.data.mspan
    root = Path(d.root)
    return tuple(p if Path(p).is_absolute() else root / p for p in (m.ms, m.pan, m.labels))  # type: ignore[return-value]


def classification_has_split(cfg: RunConfig, split: str) -> bool:
    """Whether ``split`` names one of the pixel splits (train, val, test) of a scene with labels."""
    return split in PIXEL_SPLITS and (bool(cfg.data.root) or cfg.data.mspan.synthetic is not None)


def _split_name(cfg: RunConfig, role: str) -> str:
    name = getattr(cfg.data.splits, role)
    if name not in PIXEL_SPLITS:
        raise ConfigError(
            f"data.splits.{role}: {name!r} is not a pixel split of an MS + PAN scene; use train, val or test"
        )
    return name


def _class_counts(labels: np.ndarray, pixels: np.ndarray, k: int) -> list[int]:
    return np.bincount(labels[pixels[:, 0], pixels[:, 1]] - 1, minlength=k)[:k].tolist()


def prepare_classification_data(cfg: RunConfig, roles: tuple[str, ...]) -> tuple[RunConfig, MSPanReport]:
    """Read and check the scene, split its labelled pixels and resolve the config: ``data.root`` of a
    synthetic scene, ``data.mspan.ratio`` (when inferred), ``model.options`` ``in_channels``,
    ``num_classes`` and ``ratio`` (unless given; a given ``ratio`` must match the scene's)."""
    from geomamba.models import get_model_entry, list_models

    try:
        entry = get_model_entry(cfg.model.name)
    except KeyError as exc:
        raise ConfigError(f"model.name: {exc.args[0]}") from None
    if entry.task != "classification":
        raise ConfigError(
            f"model.name: {cfg.model.name!r} is a {entry.task} model; task classification trains "
            f"{', '.join(list_models(task='classification'))}"
        )
    d, m = cfg.data, cfg.data.mspan
    if m.synthetic is not None:
        cfg = replace(cfg, data=replace(d, root=str(ensure_synthetic_scene(cfg))))
        d = cfg.data
    if not d.root:
        raise ConfigError(
            "data.root: the folder of the MS + PAN scene is not set (or set data.mspan.synthetic for a "
            "generated scene)"
        )
    ms, pan, labels = _scene_paths(cfg)
    try:
        scene = load_mspan(ms, pan, labels, ratio=m.ratio, normalise=m.normalise)
    except (OSError, ValueError) as exc:
        raise DataError(str(exc)) from None
    assert scene.labels is not None
    k = len(d.class_names)
    if scene.num_classes > k:
        raise ConfigError(
            f"data.class_names: {labels} holds labels up to {scene.num_classes} but {k} class names are given "
            f"({', '.join(d.class_names)}); labels are 1..K, 0 = unlabelled"
        )
    train, rest = split_pixels(
        scene.labels, train_fraction=m.train_fraction, per_class=m.train_per_class, seed=m.split_seed
    )
    if not len(train):
        raise DataError(f"{labels}: no labelled pixel (labels are 1..K, 0 = unlabelled)")
    held_out = np.zeros_like(scene.labels)
    held_out[rest[:, 0], rest[:, 1]] = scene.labels[rest[:, 0], rest[:, 1]]
    val, test = split_pixels(held_out, train_fraction=m.val_fraction, seed=m.split_seed + 1)
    pixels = {"train": train, "val": val, "test": test}
    pixels["stage1"] = all_pixels(scene.shape) if m.stage1_pixels == "all" else train
    bands = int(scene.ms.shape[0])
    log.info(
        "scene %s: MS %d band(s) %dx%d, PAN %dx%d (ratio %d), %d labelled pixels",
        ms.parent,
        bands,
        *scene.shape,
        *scene.pan.shape[1:],
        scene.ratio,
        int((scene.labels > 0).sum()),
    )
    for name in PIXEL_SPLITS:
        counts = _class_counts(scene.labels, pixels[name], k)
        shares = ", ".join(f"{n} {c}" for n, c in zip(d.class_names, counts))
        log.info("%s: %d pixels (%s)", name, len(pixels[name]), shares)
        if name == "train" and 0 in counts:
            absent = [n for n, c in zip(d.class_names, counts) if c == 0]
            log.warning(
                "the train pixels hold no pixel of class(es) %s: they cannot be learnt", ", ".join(absent)
            )
    options = dict(cfg.model.options)
    if options.setdefault("ratio", scene.ratio) != scene.ratio:
        raise ConfigError(
            f"model.options.ratio: {options['ratio']} but the scene's PAN is {scene.ratio}x the MS resolution"
        )
    options.setdefault("in_channels", bands)
    options.setdefault("num_classes", k)
    resolved = replace(
        cfg,
        data=replace(d, mspan=replace(m, ratio=scene.ratio)),
        model=replace(cfg.model, options=options),
    )
    report = MSPanReport(scene, pixels)
    for role in roles:
        name = _split_name(cfg, role)
        report.splits[name] = _SplitInfo(name, pixels[name], bands)
    return resolved, report


class ClassificationDataModule(ChangeDataModule):
    """Patch-pair loaders of the pixel splits (loaders, samplers and DDP behaviour as ``ChangeDataModule``).

    Args:
        cfg: the run config.
        report: the report of ``prepare_classification_data``, if it ran (else the scene is read again).
    """

    @property
    def scene_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the MS grid."""
        return self._report().scene.shape

    def _report(self) -> MSPanReport:
        if not isinstance(self.report, MSPanReport):
            _, self.report = prepare_classification_data(self.cfg, ())
        return self.report  # type: ignore[return-value]

    def _dataset(self, role: str) -> MSPanPatchDataset:  # type: ignore[override]
        if role not in self.datasets:
            report, stage = self._report(), self.cfg.classification.stage
            name = _split_name(self.cfg, role)
            pixels = report.pixels["stage1" if role == "train" and stage == 1 else name]
            self.datasets[role] = MSPanPatchDataset(  # type: ignore[assignment]
                report.scene, pixels, patch_size=self.cfg.data.mspan.patch_size, with_labels=stage == 2
            )
        return self.datasets[role]  # type: ignore[return-value]

    def _eval_batch(self, role: str) -> int:
        return self.cfg.data.eval_batch_size


# ------------------------------------------------------------------------------------------- module


def _feature_cosine(ms_levels: list[torch.Tensor], pan_levels: list[torch.Tensor]) -> torch.Tensor:
    """``(B,)``: per sample, the mean over levels of the cosine similarity of the flattened features."""
    cos = [
        F.cosine_similarity(a.flatten(1).float(), b.flatten(1).float(), dim=1)
        for a, b in zip(ms_levels, pan_levels)
    ]
    return torch.stack(cos).mean(0)


class ClassificationModule(ChangeDetectionModule):
    """One stage of ADCD-Net training, validation and test (see the module docstring).

    Batches: ``{"ms": (B, C, s, s), "pan": (B, 1, r*s, r*s), "label": (B,) int64 (stage II), "pixel": (B, 2)}``.
    Logged: ``train/loss`` and its components (stage I ``similarity``; stage II ``ce``, ``aux_ms``,
    ``aux_pan``), ``lr``, ``val/loss``, then stage I ``val/cosine``, stage II the confusion scores with
    ``val/AA`` (and the same under ``test/``).

    Args:
        config: a resolved run config as a plain dict with ``task: classification`` and
            ``classification.stage`` 1 or 2.
    """

    task = "classification"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        if self.cfg.task != "classification":
            raise ConfigError(
                f"task: ClassificationModule needs task 'classification', got {self.cfg.task!r}"
            )
        if not hasattr(self.model, "set_stage") or not hasattr(self.model, "forward_stage2"):
            raise ConfigError(
                f"model.name: {self.cfg.model.name!r} is not a two-stage MS + PAN model; task classification "
                "trains ADCD-Net (adcdnet, adcdnet_tiny)"
            )
        if "stage" in self.cfg.model.options:
            raise ConfigError(
                "model.options.stage: set classification.stage (or leave it null for both stages)"
            )
        self.stage = self._stage()
        self.model.set_stage(self.stage)
        self.curve_keys = ("cosine",) if self.stage == 1 else ("OA", "AA", "Kappa", "mF1")
        self.val_cosine, self.test_cosine = MeanMetric(), MeanMetric()
        self._stage1_loaded = False

    def _stage(self) -> int:
        stage = self.cfg.classification.stage
        if stage not in (1, 2):
            raise ConfigError(
                "classification.stage: a training module runs stage 1 or 2 (null runs both through "
                f"geomamba train), got {stage!r}"
            )
        return int(stage)

    def make_loss(self) -> nn.Module:
        spec = {"name": self.cfg.loss} if isinstance(self.cfg.loss, str) else dict(self.cfg.loss)
        unknown = sorted(set(spec) - set(_LOSS_OPTIONS))
        if spec.get("name") != "adcd" or unknown:
            raise ConfigError(
                f"loss: ADCD-Net trains with {{name: adcd, aux_weight: 0.3, similarity_weights: null, "
                f"normalize: false}}; got {self.cfg.loss!r}"
                + (f" (unknown keys {unknown})" if unknown else "")
            )
        if self._stage() == 1:
            return ADCDStage1Loss(
                weights=spec.get("similarity_weights"), normalize=bool(spec.get("normalize", False))
            )
        return ADCDStage2Loss(
            aux_weight=float(spec.get("aux_weight", 0.3)), ignore_index=int(spec.get("ignore_index", 255))
        )

    # ------------------------------------------------------------------ stage I's weights
    def setup(self, stage: str) -> None:
        # Before Lightning restores a checkpoint to resume: a resumed stage II gets its own weights back.
        if stage == "fit" and self.stage == 2 and not self._stage1_loaded:
            self.load_stage1(self.cfg.classification.stage1_checkpoint)

    def load_stage1(self, path: str | Path | None) -> None:
        """Load stage I's weights (the priors) from a stage-I checkpoint of this task."""
        if not path:
            raise ConfigError("classification.stage1_checkpoint: stage II needs a stage-I checkpoint")
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"classification.stage1_checkpoint: {path} not found")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        meta = ckpt.get("geomamba", {}) if isinstance(ckpt, dict) else {}
        stage = meta.get("config", {}).get("classification", {}).get("stage")
        if meta.get("task") != "classification" or stage != 1:
            raise ConfigError(
                f"classification.stage1_checkpoint: {path} is not a stage-I ADCD-Net checkpoint (task "
                f"{meta.get('task')!r}, stage {stage!r})"
            )
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        try:
            self.model.load_stage1_state_dict(state)
        except (ValueError, RuntimeError) as exc:
            msg = str(exc).split("\n")[0]
            raise ConfigError(
                f"classification.stage1_checkpoint: {path} does not fit this model ({msg})"
            ) from None
        self._stage1_loaded = True
        log.info("stage II: stage I's weights (priors) from %s", path)

    # ------------------------------------------------------------------ forward and prediction
    def forward(self, ms: torch.Tensor, pan: torch.Tensor) -> Any:
        return self.model(ms, pan)

    def example_input(self, channels: int, size: int) -> dict[str, torch.Tensor]:
        """A zero batch of one patch pair (``size`` is ignored: the patch size is the config's)."""
        s, r = self.cfg.data.mspan.patch_size, self.model.ratio
        return {
            "ms": torch.zeros(1, channels, s, s),
            "pan": torch.zeros(1, self.model.pan_channels, r * s, r * s),
        }

    def predict_probs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        """Class probabilities ``(B, K)`` of the centre pixels (stage II with stage I's priors)."""
        return torch.softmax(as_logits(self.model.forward_stage2(batch["ms"], batch["pan"])).float(), dim=1)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model(batch["ms"], batch["pan"])
        loss = self.loss_fn(out) if self.stage == 1 else self.loss_fn(out, batch["label"])
        bs = batch["ms"].shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=bs)
        for name, value in self.loss_fn.last_components.items():
            self.log(f"train/loss_{name}", value, on_step=True, on_epoch=False, batch_size=bs)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=bs)
        self.train_loss.update(loss.detach())
        return loss

    # ------------------------------------------------------------------ evaluation
    def _scores(self, cm: torch.Tensor) -> dict:
        return pixel_classification_scores(cm, self.class_names)

    def _eval(self, batch: dict, confusion, cosine: MeanMetric) -> None:
        if self.stage == 1:
            out = self.model.forward_stage1(batch["ms"], batch["pan"])
            self.val_loss.update(self.loss_fn(out).detach())
            cosine.update(_feature_cosine(out["ms_levels"], out["pan_levels"]))
            return
        probs = self.predict_probs(batch)
        preds = probs.argmax(1)
        confusion.update(preds, batch["label"])
        self.val_loss.update(self.loss_fn(torch.log(probs.clamp_min(1e-8)), batch["label"]).detach())
        if self.trainer.is_global_zero and self.cfg.eval.num_error_maps > 0:
            self.error_samples.append(
                {"pixel": batch["pixel"].cpu(), "pred": preds.cpu(), "label": batch["label"].cpu()}
            )

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval(batch, self.val_confusion, self.val_cosine)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval(batch, self.test_confusion, self.test_cosine)

    def _stage1_scores(self, cosine: MeanMetric) -> dict[str, float]:
        scores = {"cosine": float(_synced_mean(cosine)), "similarity": float(_synced_mean(self.val_loss))}
        cosine.reset()
        self.val_loss.reset()
        return scores

    def on_validation_epoch_end(self) -> None:
        if self.stage == 2:
            return super().on_validation_epoch_end()
        scores = self._stage1_scores(self.val_cosine)
        if self.trainer.sanity_checking:
            return None
        self.last_val_scores = scores
        self.log_dict({"val/cosine": scores["cosine"], "val/loss": scores["similarity"]}, sync_dist=False)
        train_loss = _synced_mean(self.train_loss)
        self.train_loss.reset()
        lr = float(self.optimizers().param_groups[0]["lr"]) if self.trainer.optimizers else float("nan")
        self.history.append(
            {
                "epoch": int(self.current_epoch),
                "step": int(self.global_step),
                "train_loss": float(train_loss),
                "lr": lr,
                "cosine": scores["cosine"],
                "loss": scores["similarity"],
            }
        )
        if self.trainer.is_global_zero:
            log.info(
                "stage I validation epoch %d (step %d): MS/PAN feature cosine %.4f, similarity loss %.5f",
                self.current_epoch,
                self.global_step,
                scores["cosine"],
                scores["similarity"],
            )
        return None

    def on_test_epoch_end(self) -> None:
        if self.stage == 2:
            return super().on_test_epoch_end()
        self.test_scores = self._stage1_scores(self.test_cosine)
        self.log_dict({f"test/{k}": v for k, v in self.test_scores.items()}, sync_dist=False)
        if self.trainer.is_global_zero:
            log.info(
                "stage I test: MS/PAN feature cosine %.4f, similarity loss %.5f", *self.test_scores.values()
            )
        return None

    def save_samples(self, samples: list[dict], folder: Path, title: str = "") -> Path | None:
        """``prediction.png`` (classes of the evaluated pixels on the MS grid, black elsewhere) and
        ``errors.png`` (right green, wrong red) of an evaluation (used by ``RunArtifacts``)."""
        if not samples:
            return None
        pixels = torch.cat([s["pixel"] for s in samples]).numpy()
        pred = torch.cat([s["pred"] for s in samples]).numpy()
        label = torch.cat([s["label"] for s in samples]).numpy()
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        shape = dm.scene_shape if isinstance(dm, ClassificationDataModule) else tuple(pixels.max(0) + 1)
        colours = np.asarray(_default_colours(len(self.class_names)), np.uint8)
        classes = np.zeros((*shape, 3), np.uint8)
        classes[pixels[:, 0], pixels[:, 1]] = colours[pred]
        errors = np.zeros((*shape, 3), np.uint8)
        errors[pixels[:, 0], pixels[:, 1]] = np.where((pred == label)[:, None], [0, 200, 0], [230, 0, 0])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(classes).save(folder / "prediction.png")
        Image.fromarray(errors).save(folder / "errors.png")
        return folder / "errors.png"
