import numpy as np
import pytest

from _engine_helpers import tiny_overrides
from geomamba.data.io import raster_info, read_raster
from geomamba.engine.config import load_config
from geomamba.engine.predict import predict_paths
from geomamba.engine.train import train


@pytest.mark.realdata
def test_train_and_predict_on_levircd_samples(shared_data, tmp_path):
    root = shared_data / "cd" / "levircd_samples"  # A/B/label directly: one split used for all
    over = [
        *tiny_overrides(root, tmp_path),
        "data.crop_size=64",
        "trainer.max_epochs=-1",
        "trainer.max_steps=3",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "eval.window=128",
        "eval.overlap=32",
    ]
    result = train(load_config(None, over), resume=False)
    assert result.last_checkpoint.is_file() and result.test_scores is not None
    cfg = load_config(result.run_dir / "config.yaml")
    assert len(cfg.data.mean) == 3 and 50 < cfg.data.mean[0] < 200  # statistics of real RGB tiles
    name = sorted((root / "A").glob("*.png"))[0].name
    res = predict_paths(
        result.last_checkpoint,
        root / "A" / name,
        root / "B" / name,
        tmp_path / "pred.png",
        label=root / "label" / name,
        progress=False,
    )
    assert raster_info(tmp_path / "pred.png").size == (256, 256)
    assert set(np.unique(read_raster(tmp_path / "pred.png"))) <= {0, 255}
    assert res.scores["support"]["changed"] == int((read_raster(root / "label" / name) > 0).sum())
