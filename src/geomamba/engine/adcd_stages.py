"""ADCD-Net's two-stage training from one config (``task: classification``, ``classification.stage: null``).

``geomamba train cfg.yaml`` (or ``train(cfg)``) runs::

    <output_dir>/<name>/
        config.yaml        the config as given (rerun it to resume or reproduce)
        synthetic_data/    the generated scene, when data.mspan.synthetic is set
        stage1/            stage I, self-supervised: a complete run folder (config.yaml, checkpoints/,
                           metrics.json, logs/, curves/, train.log), monitored by val/cosine
        stage2/            stage II, supervised, with classification.stage1_checkpoint = stage I's best
                           checkpoint (its last when there is no best): the priors; monitored by eval.monitor
        metrics.json       stage II's history, best and test scores, plus a summary of both stages
        train.log

Each stage is an ordinary one-stage run of ``geomamba.engine.train.train`` (``classification.stage`` 1 or
2, ``output_dir`` the run folder, ``name`` ``stage1``/``stage2``), so each resumes on its own from its
``checkpoints/last.ckpt``: rerunning an interrupted run finishes stage I (a finished stage I resumes as a
no-op and is tested again) and then continues stage II. Per-stage settings: ``classification.stage1`` /
``stage2`` ``max_epochs``, ``max_steps``, ``lr`` (null: ``trainer.*`` / ``optim.lr``).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from geomamba.data.errors import GeomambaError
from geomamba.engine.config import RunConfig, config_to_dict, parse_config

__all__ = ["stage_configs", "train_stages"]

log = logging.getLogger("geomamba.engine")


def stage_configs(cfg: RunConfig, stage1_checkpoint: str | Path | None = None) -> tuple[RunConfig, RunConfig]:
    """The one-stage configs ``(stage I, stage II)`` of a two-stage config (see the module docstring).

    ``stage1_checkpoint`` goes into stage II's config (``None``: a placeholder path inside stage I's
    folder, for inspection only)."""
    run_dir = Path(cfg.output_dir) / cfg.name
    base = config_to_dict(cfg)
    if cfg.data.mspan.synthetic is not None:
        from geomamba.engine.classification import ensure_synthetic_scene

        base["data"]["root"] = str(ensure_synthetic_scene(cfg))
        base["data"]["mspan"]["synthetic"] = None
    out = []
    for k in (1, 2):
        d = copy.deepcopy(base)
        d["output_dir"], d["name"] = str(run_dir), f"stage{k}"
        d["classification"]["stage"] = k
        stage = d["classification"][f"stage{k}"]
        for key, section in (("max_epochs", "trainer"), ("max_steps", "trainer"), ("lr", "optim")):
            if stage[key] is not None:
                d[section][key] = stage[key]
        if k == 1:
            d["eval"]["monitor"] = "cosine"
        else:
            ckpt = stage1_checkpoint or run_dir / "stage1" / "checkpoints" / "last.ckpt"
            d["classification"]["stage1_checkpoint"] = str(ckpt)
        out.append(d)
    stage1 = parse_config(out[0])
    return stage1, parse_config(out[1])


def _stage_resumes(run_dir: Path, resume: bool | str | Path | None) -> tuple[Any, Any]:
    """``train``'s ``resume`` argument for each stage."""
    if resume is None or resume is False:
        return resume, resume
    if resume is True:
        return True, None
    path = Path(resume).resolve()
    for k in (1, 2):
        if path.is_relative_to((run_dir / f"stage{k}").resolve()):
            return (path, None) if k == 1 else (None, path)
    raise GeomambaError(
        f"{resume}: a two-stage run resumes from a checkpoint of {run_dir}/stage1 or {run_dir}/stage2"
    )


def train_stages(cfg: RunConfig, *, resume: bool | str | Path | None = None, callbacks: list | None = None):
    """Run stage I then stage II of ``cfg`` (``classification.stage`` null); ``None`` for a one-stage
    config (``classification.stage`` 1 or 2), which ``train`` then runs itself. Returns stage II's
    ``TrainResult`` with ``run_dir`` the two-stage run folder."""
    if cfg.classification.stage is not None:
        return None
    from geomamba.engine.callbacks import write_json
    from geomamba.engine.distributed import is_launch_rank_zero
    from geomamba.engine.train import TrainResult, _write_config, setup_logging, train

    run_dir = Path(cfg.output_dir) / cfg.name
    setup_logging(run_dir / "train.log")
    _write_config(cfg, run_dir / "config.yaml")
    first_resume, second_resume = _stage_resumes(run_dir, resume)
    stage1_cfg, _ = stage_configs(cfg)
    log.info("ADCD-Net stage I (self-supervised MS/PAN similarity) in %s", run_dir / "stage1")
    first = train(stage1_cfg, resume=first_resume, callbacks=callbacks)
    stage1_ckpt = first.best_checkpoint or first.last_checkpoint
    if stage1_ckpt is None:
        raise GeomambaError(f"stage I in {first.run_dir} wrote no checkpoint; stage II needs its weights")
    _, stage2_cfg = stage_configs(cfg, stage1_ckpt)
    log.info("ADCD-Net stage II (supervised, priors of %s) in %s", stage1_ckpt, run_dir / "stage2")
    second = train(stage2_cfg, resume=second_resume, callbacks=callbacks)
    setup_logging(run_dir / "train.log")
    summary = {}
    for k, r in ((1, first), (2, second)):
        summary[f"stage{k}"] = {
            "run_dir": str(r.run_dir),
            "monitor": r.monitor,
            "best_checkpoint": str(r.best_checkpoint) if r.best_checkpoint else None,
            "last_checkpoint": str(r.last_checkpoint) if r.last_checkpoint else None,
            "best": r.best,
            "test": r.test_scores,
        }
    if is_launch_rank_zero():
        try:
            metrics = json.loads((second.run_dir / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            metrics = {}
        write_json(run_dir / "metrics.json", {**metrics, "stages": summary})
    log.info("ADCD-Net: stage I best %s; stage II best %s", _best(first), _best(second))
    return TrainResult(
        run_dir,
        second.best_checkpoint,
        second.last_checkpoint,
        second.best,
        second.test_scores,
        cfg.task,
        second.monitor,
    )


def _best(result: Any) -> str:
    if not result.best:
        return "-"
    value = result.best.get(result.monitor, float("nan"))
    return f"{result.monitor} {value:.4f} (epoch {result.best['epoch']})"
