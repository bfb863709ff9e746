"""Difference capture of one level: derivative edges per date, difference block, frequency-adaptive Mamba.

``FAM(DifferenceBlock(A + edges(A), B + edges(B)))`` where ``edges`` is the dual-order derivative
module (shared by both dates) and FAM the frequency-adaptive Mamba block. Ablations switch off the
first-order operator, the second-order operator (both: no edges) or the Mamba block.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from geomamba.layers.derivative import DualOrderDerivativeModule
from geomamba.layers.frequency_mamba import FrequencyAdaptiveMambaBlock
from geomamba.layers.fusion import DifferenceBlock

__all__ = ["EdgeAwareDifferenceModule"]


class EdgeAwareDifferenceModule(nn.Module):
    """Edge-focused bitemporal difference of one level.

    Args:
        dim: channels C.
        first_order, second_order: keep the first/second-order derivative operator.
        mamba: keep the frequency-adaptive Mamba block after the difference block.
        dog_sigmas: DoG sigmas of the second-order operator.
        edge_trainable: derivative kernels train after initialisation.
        difference_mode: ``DifferenceBlock`` mode (``"abs_concat"``, ``"abs"``, ``"concat"``).
        **mamba_kwargs: options of ``FrequencyAdaptiveMambaBlock`` (``ssm_ratio``, ``d_state``,
            ``dt_rank``, ``scan_backend``, ``adakern``, ``freq_select``, ``max_dilation``, ``fadc_sampler``,
            ``drop_path``).

    Shapes: ``a, b (B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        first_order: bool = True,
        second_order: bool = True,
        mamba: bool = True,
        dog_sigmas: tuple[float, float] = (0.5, 1.0),
        edge_trainable: bool = True,
        difference_mode: str = "abs_concat",
        **mamba_kwargs,
    ) -> None:
        super().__init__()
        self.edges = (
            DualOrderDerivativeModule(
                dim,
                first_order=first_order,
                second_order=second_order,
                sigmas=dog_sigmas,
                trainable=edge_trainable,
            )
            if first_order or second_order
            else None
        )
        self.difference = DifferenceBlock(dim, mode=difference_mode)
        self.mamba = FrequencyAdaptiveMambaBlock(dim, **mamba_kwargs) if mamba else None

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.edges is not None:
            a, b = self.edges(torch.cat([a, b], dim=0)).chunk(2, dim=0)
        d = self.difference(a, b)
        return self.mamba(d) if self.mamba is not None else d
