"""``geomamba demo``: synthetic data -> train a small model on CPU -> test -> predict a GeoTIFF pair.

Everything goes under one folder (default ``runs/demo``)::

    data/        the synthetic dataset (GeoTIFF, train/val/test), reused when present
    run/         the training run (config.yaml, checkpoints/, metrics.json, curves/, error_maps/, logs/)
    prediction/  a change map predicted for one test pair (GeoTIFF with image A's georeference)
"""

from __future__ import annotations

import logging
from pathlib import Path

from geomamba.data.errors import GeomambaError

__all__ = ["DEMO_DATA", "find_demo_config", "run_demo"]

log = logging.getLogger("geomamba")

# Synthetic dataset of the demo: tiles per split, tile size, seed.
DEMO_DATA = {"splits": {"train": 64, "val": 8, "test": 8}, "size": 64, "seed": 0}


def find_demo_config(path: str | Path | None = None) -> Path:
    """``path``, else ``configs/demo.yaml`` in the working folder or in the source checkout."""
    if path is not None:
        return Path(path)
    here = Path(__file__).resolve()
    for cand in (Path.cwd() / "configs" / "demo.yaml", here.parents[3] / "configs" / "demo.yaml"):
        if cand.is_file():
            return cand
    raise GeomambaError("configs/demo.yaml not found: run from the repository root or pass --config")


def run_demo(out: str | Path = "runs/demo", config: str | Path | None = None, overrides=()) -> dict:
    """Run the demo; returns ``{"run_dir", "test_f1", "prediction", ...}``."""
    from geomamba.data.synthetic import generate_dataset
    from geomamba.engine.config import load_config
    from geomamba.engine.predict import predict_paths
    from geomamba.engine.train import setup_logging, train

    out = Path(out)
    setup_logging()
    data = out / "data"
    marker = data / ".complete"
    if not marker.is_file():
        log.info("generating the synthetic dataset in %s", data)
        generate_dataset(
            data, splits=DEMO_DATA["splits"], size=DEMO_DATA["size"], seed=DEMO_DATA["seed"], fmt="tif"
        )
        marker.write_text("synthetic demo data\n")
    cfg = load_config(
        find_demo_config(config),
        [f"data.root={data}", f"output_dir={out}", "name=run", *overrides],
    )
    result = train(cfg, resume=False)
    ckpt = result.best_checkpoint or result.last_checkpoint
    test_dir = data / cfg.data.splits.test
    first = sorted((test_dir / "A").glob("*.tif"))[0].name
    pred = predict_paths(
        ckpt,
        test_dir / "A" / first,
        test_dir / "B" / first,
        out / "prediction" / first,
        label=test_dir / "label" / first,
        progress=False,
    )
    scores = result.test_scores or {}
    f1 = scores.get("per_class", {}).get("changed", {}).get("F1", float("nan"))
    lines = [
        "",
        "geomamba demo finished",
        f"  synthetic data      {data}",
        f"  run folder          {result.run_dir}",
        f"  best checkpoint     {ckpt}",
        f"  metrics             {result.run_dir / 'metrics.json'}",
        f"  curves              {result.run_dir / 'curves'}",
        f"  error maps          {result.run_dir / 'error_maps'} (TP white, TN black, FP red, FN green)",
        f"  predicted GeoTIFF   {pred.outputs[0].path}",
        f"  test F1 (changed)   {f1:.4f}",
    ]
    print("\n".join(lines))
    return {"run_dir": result.run_dir, "test_f1": f1, "prediction": pred.outputs[0].path, "result": result}
