"""The measurements of ``bench/train_speed.py``: one function per job kind, each returning a dict of figures.

Every job builds its model from the registry and the run config (loss, optimiser, precision, gradient
clipping, sliding-window settings), runs on fixed synthetic inputs already on the device, and times with
CUDA events (wall clock on CPU): warm-up steps, then up to ``steps`` timed steps or until its time cap,
median per step. Peak memory is ``torch.cuda.max_memory_allocated`` since the job started (model,
optimiser state and activations).
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.optim import param_groups_weight_decay

import geomamba
from geomamba.engine.acceleration import (
    CompiledModel,
    apply_channels_last,
    apply_fast_norm,
    build_optimizer,
    clips_under_amp,
)
from geomamba.engine.config import RunConfig
from geomamba.engine.inference import make_predict_fn, sliding_window_probs
from geomamba.experiments.speed import autocast_context, sync
from geomamba.losses import build_loss


def reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, float | None]:
    if device.type != "cuda":
        return {"peak_allocated_gb": None, "peak_reserved_gb": None}
    return {
        "peak_allocated_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 3),
        "peak_reserved_gb": round(torch.cuda.max_memory_reserved(device) / 1e9, 3),
    }


def time_steps(
    step, device: torch.device, *, warmup: int, steps: int, cap_s: float, min_steps: int = 3
) -> dict[str, Any]:
    """Run ``warmup`` untimed calls of ``step`` (at least one; the warm-up stops after ``cap_s / 2``),
    then up to ``steps`` timed calls: at least ``min(min_steps, steps)``, then until the cap is reached (a
    slow warm-up, e.g. kernels compiled at the first call, still leaves the timed loop ``cap_s / 2``).
    Per-step times from CUDA events (GPU time between consecutive step starts/ends, idle gaps included) or
    the wall clock on CPU; also the wall time per step over the timed loop."""
    t0 = time.perf_counter()
    warm_times = []
    for _i in range(warmup):
        t = time.perf_counter()
        step()
        sync(device)
        warm_times.append(time.perf_counter() - t)
        if time.perf_counter() - t0 > cap_s / 2:
            break
    cuda = device.type == "cuda"
    events, times = [], []
    start = time.perf_counter()
    for i in range(steps):
        if cuda:
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            step()
            e1.record()
            events.append((e0, e1))
        else:
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        if i + 1 >= min_steps and time.perf_counter() - start > max(cap_s - (start - t0), cap_s / 2):
            break
    sync(device)
    wall = time.perf_counter() - start
    if cuda:
        times = [a.elapsed_time(b) / 1e3 for a, b in events]
    n = len(times)
    return {
        "steps": n,
        "median_s": round(statistics.median(times), 6),
        "min_s": round(min(times), 6),
        "wall_per_step_s": round(wall / n, 6),
        "warmup_steps": len(warm_times),
        "first_step_s": round(warm_times[0], 3) if warm_times else None,
        "warmup_s": round(sum(warm_times), 3),
    }


def model_options(cfg: RunConfig, name: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The run config's model options when ``name`` is the config's model, plus ``extra``."""
    opts = dict(cfg.model.options) if name == cfg.model.name else {}
    opts.update(extra)
    return opts


def _compiled(cfg: RunConfig, model: torch.nn.Module, dynamic: bool | None = None) -> CompiledModel:
    t = cfg.trainer
    return CompiledModel(
        model, mode=t.compile_mode, backend=t.compile_backend, dynamic=dynamic, inductor=t.compile_inductor
    )


def _inputs(batch: int, size: int, device: torch.device, channels: int = 3):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 2, channels, size, size, generator=gen)
    y = (torch.rand(batch, size, size, generator=gen) < 0.1).long()
    return x.to(device), y.to(device)


def build_train_step(cfg: RunConfig, p: dict[str, Any], device: torch.device, *, compile_model: bool = False):
    """The engine's training step (forward and loss under autocast, backward, gradient clipping, fused
    optimiser step) on a fixed batch: returns ``(step, model, forward)``."""
    model = geomamba.create_model(p["model"], **model_options(cfg, p["model"], p.get("options", {})))
    model.to(device).train()
    if p.get("channels_last", False):
        apply_channels_last(model)
    apply_fast_norm(model, p.get("fast_norm", cfg.trainer.fast_norm))
    forward = _compiled(cfg, model, p.get("dynamic")) if compile_model else model
    spec = {"name": cfg.loss} if isinstance(cfg.loss, str) else dict(cfg.loss)
    loss_fn = build_loss({**spec, "validate": False})
    groups = param_groups_weight_decay(model, cfg.optim.weight_decay)
    # the optimiser the engine builds (not fused when it clips under fp16 mixed precision); ``fused``: force
    amp_clipping = clips_under_amp(cfg.trainer) if "fused" not in p else not p["fused"]
    opt = build_optimizer(groups, cfg.optim, device, amp_clipping=amp_clipping)
    x, y = _inputs(p["batch"], p["size"], device)
    clip = cfg.trainer.gradient_clip_val
    precision = p.get("precision", cfg.trainer.precision)

    def step() -> None:
        with autocast_context(device, precision):
            loss = loss_fn(forward(x), y)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, model, forward


def build_infer_step(cfg: RunConfig, p: dict[str, Any], device: torch.device, *, compile_model: bool = False):
    """Inference of a fixed batch (``tiles``: whole tiles by the engine's sliding window): ``(step, model,
    forward)``."""
    model = geomamba.create_model(p["model"], **model_options(cfg, p["model"], p.get("options", {})))
    model.to(device).eval()
    if p.get("channels_last", False):
        apply_channels_last(model)
    apply_fast_norm(model, p.get("fast_norm", cfg.trainer.fast_norm))
    forward = _compiled(cfg, model, p.get("dynamic")) if compile_model else model
    predict = make_predict_fn(forward)  # type: ignore[arg-type]
    x, _ = _inputs(p["batch"], p["size"], device)
    precision = p.get("precision", cfg.trainer.precision)
    e = cfg.eval
    tiles = p.get("tiles", False)

    @torch.inference_mode()
    def step() -> None:
        with autocast_context(device, precision):
            if tiles:
                probs = sliding_window_probs(
                    predict,
                    x,
                    window=e.window or 256,
                    overlap=e.overlap,
                    pad_multiple=e.pad_multiple,
                    window_batch=p.get("window_batch", e.window_batch),
                )
            else:
                probs = predict(x)
            probs.argmax(1)

    return step, model, forward


def run_timed(cfg: RunConfig, p: dict[str, Any], device: torch.device, cap_s: float, *, compile_model=False):
    """Train or inference job: figures per step, pairs (or tiles) per second, peak memory."""
    reset_memory(device)
    build = build_train_step if p["kind"] == "train" else build_infer_step
    t = time.perf_counter()
    step, model, forward = build(cfg, p, device, compile_model=compile_model)
    timing = time_steps(step, device, warmup=p["warmup"], steps=p["steps"], cap_s=cap_s)
    out = {
        "params_m": round(sum(q.numel() for q in model.parameters()) / 1e6, 3),
        **timing,
        "per_s": round(p["batch"] / timing["median_s"], 2),
        "wall_per_s": round(p["batch"] / timing["wall_per_step_s"], 2),
        "unit": "tiles/s" if p.get("tiles") else "pairs/s",
        **peak_memory(device),
        "build_s": round(time.perf_counter() - t - timing["warmup_s"], 2),
    }
    if isinstance(forward, CompiledModel):
        out["compiled"] = forward.active
        out["compile_failure"] = forward.failure
    return out


def _count_launches(averages) -> int:
    names = ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC")
    return int(sum(e.count for e in averages if e.key in names))


def _table(averages, keys: tuple[str, ...], rows: int) -> str:
    for key in keys:
        try:
            return averages.table(sort_by=key, row_limit=rows, max_name_column_width=60)
        except (AttributeError, KeyError, ValueError):
            continue
    return averages.table(row_limit=rows)


def run_profile(cfg: RunConfig, p: dict[str, Any], device: torch.device, out_txt: Path, header: str) -> dict:
    """torch.profiler of one training step (after warm-up), written as text tables to ``out_txt``; on CUDA
    also the synchronising calls of one step (``torch.cuda.set_sync_debug_mode``)."""
    from torch.profiler import ProfilerActivity, profile

    reset_memory(device)
    step, _, _ = build_train_step(cfg, p, device)
    for _ in range(p["warmup"]):
        step()
    sync(device)
    syncs: list[str] = []
    if device.type == "cuda":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                step()
            finally:
                torch.cuda.set_sync_debug_mode(0)
        syncs = sorted(
            {
                f"{'/'.join(Path(w.filename).parts[-3:])}:{w.lineno}"
                for w in caught
                if "synchroniz" in str(w.message)
            }
        )
        sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t = time.perf_counter()
    with profile(activities=activities) as prof:
        step()
        sync(device)
    wall = time.perf_counter() - t
    avg = prof.key_averages()
    device_total = sum(getattr(e, "self_device_time_total", 0) or 0 for e in avg) / 1e6
    launches = _count_launches(avg)
    summary = (
        f"{header}\nprofiled step: wall {wall * 1e3:.1f} ms (under the profiler), GPU kernel time "
        f"{device_total * 1e3:.1f} ms ({100 * device_total / wall:.0f}% busy), {launches} kernel launches\n"
        f"synchronising calls in one step: {len(syncs)} {syncs}\n"
    )
    keys = ("self_device_time_total", "self_cuda_time_total") if device.type == "cuda" else ()
    by_device = _table(avg, (*keys, "self_cpu_time_total"), 40)
    by_cpu = _table(avg, ("cpu_time_total",), 25)
    out_txt.parent.mkdir(parents=True, exist_ok=True)
    out_txt.write_text(
        summary
        + "\n== top operators by self GPU time (CPU time on CPU) ==\n"
        + by_device
        + "\n== top operators by total CPU time (Python and launch overhead) ==\n"
        + by_cpu
    )
    return {
        "profile_file": str(out_txt),
        "profiled_wall_s": round(wall, 4),
        "gpu_kernel_s": round(device_total, 4),
        "gpu_busy_fraction": round(device_total / wall, 3) if wall else None,
        "kernel_launches": launches,
        "sync_calls": syncs,
    }


def run_engine(cfg: RunConfig, p: dict[str, Any], device: torch.device, cap_s: float) -> dict:
    """The whole engine: ``ChangeDetectionModule`` under a Lightning ``Trainer`` (the run config's precision,
    gradient clipping, optimiser, logging; no validation), fed from pinned host memory. pairs/s from the
    wall time between the ends of the first warm-up steps and the last step. ``p["compile"]``: the module
    compiles its model (``trainer.compile`` with the config's ``compile_mode``, e.g. CUDA graphs)."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, Dataset

    from geomamba.engine.config import config_to_dict, parse_config
    from geomamba.engine.module import ChangeDetectionModule

    reset_memory(device)
    raw = config_to_dict(cfg)
    raw["model"] = {"name": p["model"], "options": model_options(cfg, p["model"], p.get("options", {}))}
    raw["trainer"].update(
        {"compile": p.get("compile", False), "channels_last": p.get("channels_last", False)}
    )
    raw["scheduler"] = {"name": "none"}
    module = ChangeDetectionModule(config_to_dict(parse_config(raw)))
    x, y = _inputs(p["batch"], p["size"], torch.device("cpu"))
    if device.type == "cuda":  # as the loader's pinned batches: copied to the GPU without blocking
        x, y = x.pin_memory(), y.pin_memory()
    n_steps = p["warmup"] + p["steps"]

    class Fixed(Dataset):
        def __len__(self) -> int:
            return n_steps

        def __getitem__(self, i: int) -> dict:
            return {"image": x, "mask": y}

    loader = DataLoader(Fixed(), batch_size=None)
    stamps: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx in (p["warmup"] - 1, n_steps - 1):
                sync(device)
                stamps.append(time.perf_counter())
            # the cap counts from the end of the warm-up (a compiled model compiles in its first steps)
            if stamps and time.perf_counter() - stamps[0] > cap_s and batch_idx >= p["warmup"]:
                sync(device)
                stamps.append(time.perf_counter())
                trainer.should_stop = True

    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            default_root_dir=tmp,
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=1,
            precision=cfg.trainer.precision,
            max_steps=n_steps,
            gradient_clip_val=cfg.trainer.gradient_clip_val,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            log_every_n_steps=cfg.trainer.log_every_n_steps,
            callbacks=[Clock()],
        )
        trainer.fit(module, train_dataloaders=loader)
    done = trainer.global_step - p["warmup"]
    seconds = stamps[-1] - stamps[0] if len(stamps) >= 2 else float("nan")
    return {
        "steps": done,
        "wall_per_step_s": round(seconds / max(done, 1), 6),
        "per_s": round(p["batch"] * done / seconds, 2) if done > 0 else None,
        "unit": "pairs/s",
        **peak_memory(device),
    }


def write_tiles(root: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` synthetic PNG pairs with labels, ``root/train/{A,B,label}`` (smooth colours plus noise, so that
    PNG decoding costs about what aerial images cost)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for sub in ("A", "B", "label"):
        (root / "train" / sub).mkdir(parents=True, exist_ok=True)
    cell = max(1, size // 32)
    for i in range(n):
        for sub in ("A", "B"):
            low = rng.integers(0, 256, (size // cell + 1, size // cell + 1, 3), dtype=np.uint8)
            img = np.kron(low, np.ones((cell, cell, 1), np.uint8))[:size, :size]
            img = np.clip(img.astype(np.int16) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / "train" / sub / f"t{i:04d}.png")
        low = (rng.random((size // cell + 1, size // cell + 1)) < 0.1).astype(np.uint8) * 255
        Image.fromarray(np.kron(low, np.ones((cell, cell), np.uint8))[:size, :size]).save(
            root / "train" / "label" / f"t{i:04d}.png"
        )


def run_loader(cfg: RunConfig, p: dict[str, Any], cap_s: float) -> dict:
    """Training batches per second of the engine's ``ChangeDataModule`` (the run config's workers,
    prefetching, augmentation, crops) on synthetic PNG tiles; the first batch (worker start-up, cache
    filling) is timed separately."""
    from geomamba.engine.config import config_to_dict, parse_config
    from geomamba.engine.datamodule import ChangeDataModule

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        write_tiles(root, p["tiles"], p["tile_size"])
        write_s = time.perf_counter() - t
        raw = config_to_dict(cfg)
        raw["data"].update(
            {
                "root": str(root),
                "mean": [127.5] * 3,
                "std": [64.0] * 3,
                "crops_per_image": p["crops_per_image"],
                "cache": p["cache"],
                "validate": "off",
                "batch_size": p["batch"],
                "crop_size": p["size"],
            }
        )
        if p.get("num_workers") is not None:
            raw["data"]["num_workers"] = p["num_workers"]
        dcfg = parse_config(raw)
        t = time.perf_counter()
        loader = ChangeDataModule(dcfg).train_dataloader()  # builds the dataset (and fills the cache)
        setup_s = time.perf_counter() - t
        t = time.perf_counter()
        it = iter(loader)
        next(it)
        first_s = time.perf_counter() - t
        # The workers fill their prefetch queues while the first batch is awaited: the rate is taken over
        # the second half of the batches, once those queues have drained.
        stamps, sizes, start = [], [], time.perf_counter()
        for batch in it:
            stamps.append(time.perf_counter())
            sizes.append(batch["image"].shape[0])
            if stamps[-1] - start > cap_s:
                break
        del it, loader
        half = len(stamps) // 2
        n = sum(sizes[half + 1 :])
        seconds = stamps[-1] - stamps[half] if len(stamps) > 1 else float("nan")
        return {
            "num_workers": dcfg.data.num_workers,
            "prefetch_factor": dcfg.data.prefetch_factor,
            "tile_size": p["tile_size"],
            "tiles": p["tiles"],
            "crops_per_image": p["crops_per_image"],
            "cache": p["cache"],
            "write_s": round(write_s, 2),
            "dataset_setup_s": round(setup_s, 2),
            "first_batch_s": round(first_s, 2),
            "batches": len(stamps) + 1,
            "pairs_timed": n,
            "per_s": round(n / seconds, 1) if n else None,
            "unit": "pairs/s",
        }
