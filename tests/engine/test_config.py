import pytest

from _engine_helpers import TINY_MODEL
from geomamba.engine.config import ConfigError, config_keys, load_config, parse_config
from geomamba.engine.module import _lr_lambda, build_loss_from_config, build_model


def test_overrides_types_and_defaults(tmp_path):
    cfg = load_config(
        None,
        ["model.options.depths=[2,2,8]", "optim.lr=8e-4", "trainer.precision=32", "trainer.devices=[0,1]"],
    )
    assert cfg.model.options == {"depths": [2, 2, 8]}
    assert cfg.optim.lr == pytest.approx(8e-4) and cfg.trainer.precision == "32"
    assert cfg.trainer.devices == [0, 1] and cfg.data.crop_size == 256
    keys = {k for k, _, _ in config_keys()}
    assert {"optim.lr", "data.augment.date_swap", "trainer.precision", "eval.window"} <= keys


def test_base_inheritance(tmp_path):
    (tmp_path / "base.yaml").write_text("optim: {lr: 0.01, name: sgd}\ndata: {batch_size: 4}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\noptim: {lr: 0.002}\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.optim.name, cfg.optim.lr, cfg.data.batch_size) == ("sgd", 0.002, 4)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr'; valid keys in optim: name, lr,"),
        ("foo=1", "unknown config key 'foo'; valid keys at the top level: name,"),
        ("data.batch_size=2.5", "data.batch_size: expected int, got 2.5"),
        ("optim.lr=fast", "optim.lr: expected float, got 'fast'"),
        ("trainer.precision=8", "trainer.precision: 8 is not one of '32'"),
        ("eval.monitor=F1_roads", "eval.monitor: 'F1_roads' is not a score"),
        ("data.mean=[1,2]", "data.mean and data.std must be given together"),
        ("eval.window=100", "eval.window (100) must be a multiple of eval.pad_multiple (32)"),
        ("optim=3", "optim: expected OptimConfig"),
    ],
)
def test_bad_keys_and_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_bad_yaml_and_missing_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_model_and_loss_validation():
    with pytest.raises(ConfigError, match=r"model.name: unknown model 'no_such_net'"):
        build_model(parse_config({"model": {"name": "no_such_net"}}))
    with pytest.raises(
        ConfigError, match=r"model.options.depth: not an option of model .* valid options: in_channels"
    ):
        build_model(parse_config({"model": {"name": TINY_MODEL, "options": {"depth": 3}}}))
    with pytest.raises(ConfigError, match=r"model.options of .*unexpected keyword argument 'depth'"):
        build_model(parse_config({"model": {"name": TINY_MODEL + "_kwargs", "options": {"depth": 3}}}))
    with pytest.raises(ConfigError, match=r"^loss: unknown loss"):
        build_loss_from_config(parse_config({"loss": "no_such_loss"}))


def test_learning_rate_schedules():
    poly = _lr_lambda("poly", total=110, warmup=10, start=0.1, power=1.0, floor=0.0)
    assert poly(0) == pytest.approx(0.1) and poly(5) == pytest.approx(0.55)
    assert (
        poly(10) == pytest.approx(1.0) and poly(60) == pytest.approx(0.5) and poly(110) == pytest.approx(0.0)
    )
    cos = _lr_lambda("cosine", total=100, warmup=0, start=1.0, power=1.0, floor=0.1)
    assert cos(0) == pytest.approx(1.0) and cos(50) == pytest.approx(0.55) and cos(100) == pytest.approx(0.1)


def test_shipped_recipes_parse():
    from pathlib import Path

    configs = Path(__file__).resolve().parents[2] / "configs"
    levir = load_config(configs / "levircd.yaml")
    assert (levir.data.crop_size, levir.data.batch_size, levir.optim.lr) == (256, 16, 1e-3)
    assert levir.scheduler.name == "plateau" and levir.model.options["depths"] == [2, 2, 10]
    whu = load_config(configs / "whucd.yaml")
    assert whu.name == "whucd_subtask_mamba" and whu.optim.lr == levir.optim.lr
    assert load_config(configs / "demo.yaml").model.name == "subtask_mamba_tiny"
