"""Speed switches of the engine, checked on CPU for equivalence with the plain path: torch.compile with an
eager fallback, channels-last weights, the fused optimiser, and a training step without host syncs."""

import copy
import traceback
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

import geomamba
from geomamba.engine.acceleration import CompiledModel, apply_channels_last, build_optimizer
from geomamba.engine.config import ConfigError, OptimConfig, load_config
from geomamba.engine.train import train

_SYNCS = {"item", "__bool__", "tolist", "__int__", "__float__", "nonzero", "unique", "masked_select", "numpy"}


class HostSyncDetector(TorchFunctionMode):
    """Records tensor calls that need the value on the host (a device synchronisation on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name == "__getitem__" and len(args) > 1:
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index):
                name = "boolean mask indexing"
        if (name in _SYNCS or name == "boolean mask indexing") and not _in_optimizer():
            self.calls.append(f"{name} at {_caller()}")
        return func(*args, **(kwargs or {}))


def _in_optimizer() -> bool:
    """Made by ``torch.optim`` itself (the innermost frame of the call): the step counters read there are
    host tensors on GPUs too (or device tensors nobody reads, with ``fused=True``). (Lightning runs the
    whole training step inside ``optimizer.step(closure)``, so only the innermost frame tells.)"""
    skip = (__file__, "/torch/overrides.py", "/torch/_tensor.py")
    for frame in reversed(traceback.extract_stack()):
        if not frame.filename.endswith(skip):
            return "/torch/optim/" in frame.filename
    return False


def _caller() -> str:
    """``file:line`` of the innermost frame outside torch (where the call was made)."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/torch/" not in frame.filename:
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return "?"


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_sync_detector_sees_syncs():
    x = torch.randn(4)
    with HostSyncDetector() as d:
        bool(x.sum() > 0)
        _ = x[x > 0]
        x.max().item()
    assert [c.split(" at ")[0] for c in d.calls] == ["__bool__", "boolean mask indexing", "item"]
    assert d.calls[0].endswith(f"test_acceleration.py:{d.calls[0].rsplit(':', 1)[1]}")


def test_compiled_model_falls_back_to_eager_with_a_warning():
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no code generator here")

    torch._dynamo.reset()
    model = nn.Linear(4, 3)
    compiled = CompiledModel(model, backend=broken_backend)
    x = torch.randn(2, 4)
    with pytest.warns(RuntimeWarning, match="running the model eagerly"):
        out = compiled(x)
    assert not compiled.active and "no code generator here" in compiled.failure
    torch.testing.assert_close(out, model(x))
    torch.testing.assert_close(compiled(x), model(x))  # later calls: eager, no new warning


def test_compiled_model_raises_the_models_own_error():
    torch._dynamo.reset()
    compiled = CompiledModel(geomamba.create_model("subtask_mamba_tiny"), backend="eager")
    with pytest.raises(ValueError, match="in_channels=3 bands"):
        compiled(torch.randn(1, 2, 4, 32, 32))
    assert compiled.active  # a bad input is not a compiler failure


@pytest.mark.slow
def test_compiled_flagship_matches_eager_forward_and_gradients():
    """Dynamo + AOT autograd over the whole tiny flagship (custom scan ops, deformable conv, DropPath off)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = geomamba.create_model("subtask_mamba_tiny")
    twin = copy.deepcopy(model)
    x = torch.randn(2, 2, 3, 32, 32)
    compiled = CompiledModel(twin, backend="aot_eager")
    out_c = compiled(x)
    assert compiled.active, compiled.failure
    out_e = model(x)
    torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-5)
    out_c.square().mean().backward()
    out_e.square().mean().backward()
    gc, ge = _grads(twin), _grads(model)
    assert gc.keys() == ge.keys() and len(ge) > 50
    for n in ge:
        atol = 1e-4 * float(ge[n].abs().max()) + 1e-7
        torch.testing.assert_close(gc[n], ge[n], rtol=1e-3, atol=atol, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("name", ["subtask_mamba_tiny", "bit_tiny"])
def test_channels_last_gives_the_same_outputs_and_gradients(name):
    torch.manual_seed(0)
    model = geomamba.create_model(name)
    twin = apply_channels_last(copy.deepcopy(model))
    convs = [m.weight for m in twin.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    x = torch.randn(2, 2, 3, 32, 32)
    out, out_cl = model(x), twin(x)
    # fp32 convolutions sum in another order per layout (and per thread count): relative to the scale
    torch.testing.assert_close(out_cl, out, rtol=1e-3, atol=1e-5 * float(out.abs().max()) + 1e-5)
    out.square().mean().backward()
    out_cl.square().mean().backward()
    g, g_cl = _grads(model), _grads(twin)
    for n in g:  # float summation order differs between the layouts: tolerance relative to the scale
        atol = 1e-3 * float(g[n].abs().max()) + 1e-7
        torch.testing.assert_close(g_cl[n], g[n], rtol=1e-3, atol=atol, msg=lambda m, n=n: f"{n}: {m}")
    # a state dict saved from the channels-last model loads into a plain one with the same values
    plain = geomamba.create_model(name)
    plain.load_state_dict(twin.state_dict())
    ref = plain.eval()(x)
    torch.testing.assert_close(ref, twin.eval()(x), rtol=1e-3, atol=1e-5 * float(ref.abs().max()) + 1e-5)


def test_fused_optimiser_on_cuda_and_same_steps():
    cfg = OptimConfig(name="adamw", lr=1e-2, weight_decay=0.01, fused=True)
    assert build_optimizer([nn.Parameter(torch.zeros(1))], cfg, "cuda").defaults["fused"] is True
    assert not build_optimizer([nn.Parameter(torch.zeros(1))], cfg, "cpu").defaults.get("fused")
    off = OptimConfig(name="adamw", lr=1e-2, weight_decay=0.01, fused=False)
    assert not build_optimizer([nn.Parameter(torch.zeros(1))], off, "cuda").defaults.get("fused")
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))
    b = copy.deepcopy(a)
    opt_a = build_optimizer(a.parameters(), cfg, "cuda")  # fused kernel (runs on CPU tensors too)
    opt_b = build_optimizer(b.parameters(), off, "cpu")
    for _ in range(3):
        x = torch.randn(8, 5)
        for model, opt in ((a, opt_a), (b, opt_b)):
            model(x).square().mean().backward()
            opt.step()
            opt.zero_grad()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    sgd = OptimConfig(name="sgd", lr=0.1, momentum=0.9, fused=True)
    assert build_optimizer([nn.Parameter(torch.zeros(1))], sgd, "cuda").defaults["fused"] is True


def test_config_speed_keys():
    cfg = load_config(
        None,
        ["trainer.compile=true", "trainer.channels_last=true", "data.cache=true", "eval.window_batch=8"],
    )
    assert cfg.trainer.compile and cfg.trainer.channels_last and cfg.data.cache and cfg.trainer.fast_norm
    assert cfg.trainer.compile_backend == "inductor" and cfg.optim.fused and cfg.data.prefetch_factor == 4
    with pytest.raises(ConfigError, match=r"data\.prefetch_factor"):
        load_config(None, ["data.prefetch_factor=0"])
    with pytest.raises(ConfigError, match=r"eval\.window_batch"):
        load_config(None, ["eval.window_batch=0"])
    configs = Path(__file__).resolve().parents[2] / "configs"
    for path in (configs / "levircd.yaml", configs / "whucd.yaml"):
        shipped = load_config(path)
        assert shipped.trainer.compile and shipped.data.cache and shipped.optim.fused, path
    levircd = load_config(configs / "levircd.yaml").trainer
    assert levircd.compile_mode == "reduce-overhead"  # CUDA graphs
    assert levircd.compile_inductor == {"layout_optimization": False}  # faster inference on an H100
    assert load_config(None, ["trainer.compile_inductor.max_autotune=true"]).trainer.compile_inductor == {
        "max_autotune": True
    }


def test_compiled_model_patches_inductor_config_around_each_call():
    """``trainer.compile_inductor``: the values are in force while the compiled model runs (Dynamo compiles
    lazily, at the first call and at recompiles), and restored after; unknown names are refused."""
    import torch._inductor.config as inductor_config

    before = inductor_config.layout_optimization
    compiled = CompiledModel(nn.Linear(4, 3), inductor={"layout_optimization": not before})
    seen = []
    compiled.compiled = lambda x: seen.append(inductor_config.layout_optimization) or x
    compiled(torch.randn(2, 4))
    assert seen == [not before] and inductor_config.layout_optimization == before
    with pytest.raises(ValueError, match=r"unknown inductor config name\(s\) \['no_such_switch'\]"):
        CompiledModel(nn.Linear(4, 3), inductor={"no_such_switch": 1})
    assert CompiledModel(nn.Linear(4, 3), backend="eager", inductor={"no_such_switch": 1}).inductor == {}


class _SyncWatch(pl.Callback):
    """Watches every training step after the first (the label check runs on batch 0 only)."""

    def __init__(self) -> None:
        self.detector = HostSyncDetector()
        self.calls: list[list[str]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx > 0:
            self.detector.calls = []
            self.detector.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx > 0:
            self.detector.__exit__(None, None, None)
            self.calls.append(list(self.detector.calls))


@pytest.mark.slow
def test_training_step_has_no_host_sync(tiny_dataset, overrides, tmp_path):
    """The whole Lightning step (flagship forward, CE + Lovasz loss, backward, clipping, optimiser, logging)
    asks nothing of the device's values; the label check still runs, once per epoch."""
    over = [
        *overrides(tiny_dataset, tmp_path),
        "model.name=subtask_mamba_tiny",
        "loss={name: ce_lovasz, lovasz_weight: 0.75}",
        "trainer.max_epochs=1",
        "trainer.gradient_clip_val=1.0",
        "eval.pad_multiple=16",
        # The non-finite guard reads one flag per step unless the optimiser takes ``found_inf`` (fused,
        # on a GPU); its device-side path is tested in tests/reliability/test_numerical_guards.py.
        "trainer.skip_nonfinite=false",
    ]
    watch = _SyncWatch()
    train(load_config(None, over), resume=False, callbacks=[watch])
    assert watch.calls == [[]]  # 4 samples, batch 2: one watched step, no sync


@pytest.mark.slow
def test_compile_switch_trains_like_eager(tiny_dataset, overrides, tmp_path):
    """``trainer.compile`` (here with the aot_eager backend: no C++ compiler needed) gives the run of the
    eager model: same losses and scores."""
    torch._dynamo.reset()
    runs = {}
    for flag in ("false", "true"):
        over = [
            *overrides(tiny_dataset, tmp_path, name=f"c{flag}"),
            f"trainer.compile={flag}",
            "trainer.compile_backend=aot_eager",
            "trainer.max_epochs=1",
        ]
        runs[flag] = train(load_config(None, over), resume=False)
    eager, compiled = runs["false"], runs["true"]
    assert compiled.best["train_loss"] == pytest.approx(eager.best["train_loss"], rel=1e-5)
    assert compiled.test_scores["confusion"] == eager.test_scores["confusion"]


def test_fast_norm_runs_layernorms_in_the_autocast_dtype():
    """``trainer.fast_norm``: under autocast the LayerNorms return bf16 (no fp32 round trip), with outputs
    close to the fp32-LayerNorm path; without autocast nothing changes."""
    from timm.layers import LayerNorm, LayerNorm2d

    from geomamba.engine.acceleration import apply_fast_norm
    from geomamba.layers.vss_block import VSSBlock

    torch.manual_seed(0)
    block = nn.Sequential(LayerNorm2d(16), nn.Conv2d(16, 16, 1)).eval()
    vss = VSSBlock(16, channels_last=True).eval()
    x, xl = torch.randn(2, 16, 12, 12), torch.randn(2, 12, 12, 16)
    norms = [m for m in (*block.modules(), *vss.modules()) if isinstance(m, (LayerNorm, LayerNorm2d))]
    assert len(norms) == 4  # LayerNorm2d; VSSBlock's two norms and SS2D's out_norm are timm LayerNorms
    seen: list[torch.dtype] = []
    for m in norms:
        m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    with torch.no_grad():
        ref = (block(x), vss(xl))
        assert apply_fast_norm(block) + apply_fast_norm(vss) == len(norms)
        torch.testing.assert_close((block(x), vss(xl)), ref, rtol=0, atol=0)  # fp32: the same op
        outs = {}
        for flag in (False, True):
            apply_fast_norm(block, flag)
            apply_fast_norm(vss, flag)
            seen.clear()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                outs[flag] = (block(x).float(), vss(xl).float())
            # fast: every norm returns bf16; otherwise a norm of an fp32 input returns fp32 (on CUDA
            # autocast runs every layer_norm in fp32; on CPU it keeps the input's dtype)
            assert (set(seen) == {torch.bfloat16}) is flag
    for fast, slow, r in zip(outs[True], outs[False], ref, strict=True):
        torch.testing.assert_close(fast, slow, rtol=0.05, atol=0.05)
        torch.testing.assert_close(fast, r, rtol=0.1, atol=0.1)


def test_the_module_applies_the_fast_norm_switch():
    from geomamba.engine.config import config_to_dict
    from geomamba.engine.module import ChangeDetectionModule

    for flag in (True, False):
        cfg = load_config(None, ["model.name=subtask_mamba_tiny", f"trainer.fast_norm={str(flag).lower()}"])
        module = ChangeDetectionModule(config_to_dict(cfg))
        flags = {m._fast_norm for m in module.model.modules() if hasattr(m, "_fast_norm")}
        assert flags == {flag}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_compile_mode_trains_and_evaluates_like_eager(tiny_dataset, overrides, tmp_path):
    """``trainer.compile_mode=reduce-overhead`` (CUDA graphs) and the inductor config of levircd through the
    whole engine:
    training, validation and test run compiled (no eager fallback) and give the eager run's figures."""
    import warnings

    torch._dynamo.reset()
    runs = {}
    for flag in ("false", "true"):
        over = [
            *overrides(tiny_dataset, tmp_path, name=f"g{flag}"),
            "trainer.accelerator=gpu",
            "trainer.precision=32",
            f"trainer.compile={flag}",
            "trainer.compile_mode=reduce-overhead",
            "trainer.compile_inductor.layout_optimization=false",  # as levircd
        ]
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            runs[flag] = train(load_config(None, over), resume=False)
        fallbacks = [str(w.message) for w in seen if "running the model eagerly" in str(w.message)]
        assert not fallbacks, fallbacks
    eager, graphed = runs["false"], runs["true"]
    assert graphed.best["train_loss"] == pytest.approx(eager.best["train_loss"], rel=1e-3)
    cm_g, cm_e = (torch.tensor(r.test_scores["confusion"]) for r in (graphed, eager))
    # kernels of another summation order may flip a pixel on the decision boundary: not more than 0.5%
    assert cm_g.sum() == cm_e.sum() and (cm_g - cm_e).abs().max() <= 0.005 * cm_e.sum()
