"""Model summary: parameters, FLOPs and a per-module breakdown (``geomamba.summary``).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass in eval mode with
the FLOP formulas registered for each op: matrix products and convolutions from PyTorch, the
deformable convolution of ``torchvision`` (registered here: ``2 * N * C_out * H_out * W_out * C_in / groups
* k_h * k_w``; FADC's ``geomamba::dilated_tap_conv`` the same, in ``ops/dilated_taps.py``), and the selective scan's own formula once the scan is a registered custom op (until then
its matrix products are counted and its element-wise recurrence is not). Element-wise ops, norms and FFTs
count 0, as in every FLOP counter of this kind. ``flops`` counts a multiply-add as 2 FLOPs; ``macs`` is
half of it (papers that say "FLOPs" usually report MACs, e.g. thop / fvcore).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torchvision.ops  # noqa: F401  (loads the torchvision:: ops)
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula

__all__ = ["ModelSummary", "ModuleStats", "summary"]


def _deform_conv2d_flop(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    n = input_shape[0]
    c_out, c_in_per_group, kh, kw = weight_shape
    h_out, w_out = out_shape[-2:]
    return 2 * n * c_out * h_out * w_out * c_in_per_group * kh * kw


if torch.ops.torchvision.deform_conv2d not in flop_registry:
    register_flop_formula(torch.ops.torchvision.deform_conv2d)(_deform_conv2d_flop)


@dataclass
class ModuleStats:
    """One row of the breakdown: a submodule's qualified name, class, parameters and FLOPs."""

    name: str
    type: str
    params: int
    flops: int


@dataclass
class ModelSummary:
    """Totals and the per-module breakdown (``modules``: the children down to ``depth``)."""

    model: str
    input_size: tuple[int, ...]
    total_params: int
    trainable_params: int
    flops: int
    modules: list[ModuleStats] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return self.flops // 2

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def params_m(self) -> float:
        return self.total_params / 1e6

    def to_dict(self) -> dict:
        return {**asdict(self), "macs": self.macs, "gflops": self.gflops}

    def table(self) -> str:
        """The breakdown as a text table."""
        rows = [(m.name, m.type, f"{m.params / 1e6:.3f}", f"{m.flops / 1e9:.3f}") for m in self.modules]
        head = ("module", "type", "params (M)", "GFLOPs")
        total = ("total", self.model, f"{self.total_params / 1e6:.3f}", f"{self.gflops:.3f}")
        widths = [max(len(r[i]) for r in [head, total, *rows]) for i in range(4)]

        def fmt(r):
            return "  ".join(r[i].ljust(widths[i]) if i < 2 else r[i].rjust(widths[i]) for i in range(4))

        rule = "-" * len(fmt(head))
        lines = [
            f"{self.model}, input {tuple(self.input_size)}",
            fmt(head),
            rule,
            *map(fmt, rows),
            rule,
            fmt(total),
        ]
        lines.append(
            f"trainable params {self.trainable_params:,}; {self.gflops:.3f} GFLOPs = {self.macs / 1e9:.3f} GMACs"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def summary(
    model: nn.Module,
    input_size: Sequence[int] | None = (1, 2, 3, 256, 256),
    *,
    inputs: torch.Tensor | Sequence[torch.Tensor] | None = None,
    depth: int = 1,
    device: torch.device | str | None = None,
    print_table: bool = True,
) -> ModelSummary:
    """Count parameters and FLOPs of ``model`` on one forward pass.

    Args:
        model: any module; it is run in eval mode under ``torch.no_grad`` (its mode is restored).
        input_size: shape of one random input tensor, e.g. ``(1, 2, C, H, W)`` for change detection.
        inputs: explicit input tensor(s) instead of ``input_size`` (a sequence is passed as positional args).
        depth: breakdown depth (1 = top-level children).
        device: where to run (default: the device of the model's first parameter, else CPU).
        print_table: print ``ModelSummary.table()``.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    first = next(model.parameters(), None)
    device = torch.device(device) if device is not None else (first.device if first is not None else "cpu")
    if inputs is None:
        if input_size is None:
            raise ValueError("give input_size or inputs")
        dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        args: tuple = (torch.randn(*input_size, device=device, dtype=dtype),)
    else:
        args = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    shape = tuple(args[0].shape)

    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, depth=None) as counter:
            model(*args)
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__

    def module_flops(name: str, module: nn.Module) -> int:
        # A called module is tracked under its name; a container that is never called (ModuleList)
        # gets the sum of its children.
        key = f"{root}.{name}"
        if key in counts:
            return int(sum(counts[key].values()))
        return sum(module_flops(f"{name}.{n}", child) for n, child in module.named_children())

    rows = []
    for name, module in model.named_modules():
        if not name or name.count(".") >= depth:
            continue
        flops = module_flops(name, module)
        rows.append(
            ModuleStats(name, type(module).__name__, sum(p.numel() for p in module.parameters()), flops)
        )
    result = ModelSummary(
        model=getattr(model, "geomamba_model_name", root),
        input_size=shape,
        total_params=total,
        trainable_params=trainable,
        flops=int(counter.get_total_flops()),
        modules=rows,
    )
    if print_table:
        print(result.table())
    return result
