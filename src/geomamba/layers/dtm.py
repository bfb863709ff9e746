"""DTM: deep temporal Mamba (SPEC §3, seed 003, ADCD-Net's auxiliary branch).

The features a network computes at several depths are read as a *time series*, shallow to deep, so that
a state-space model carries shallow detail to the deep semantics::

    for each depth i (shallow first):  t_i = flatten(Conv1x1_i(AdaptiveAvgPool(f_i, p)))   (B, p*p, dim)
    sequence = [t_1, ..., t_n, prior]                                   (B, n*p*p + T, dim)
    sequence = sequence + Mamba1d(LN(sequence))   (x depth)             1-D selective scan
    logits = head(LN(sequence)[:, -1])           (readout "last"; or the mean of all tokens)

``prior`` is the optional *semantic sequence* appended at the end: an external ``(B, T, dim)`` tensor
(ADCD-Net passes stage I's MLP semantic sequence), a learned ``(T, dim)`` parameter
(``prior_tokens=T``; the seed uses the semantic sequence "as learnable parameters of the Mamba"), or
both (the learned parameter, initialised at zero, is then a learned offset added to the external one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm

from geomamba.layers.mamba1d import Mamba1d

__all__ = ["DeepTemporalMamba"]


class DeepTemporalMamba(nn.Module):
    """Deep temporal Mamba with an auxiliary classification head.

    Args:
        in_channels: channels of each depth's feature map, shallow to deep.
        dim: token width.
        pool_size: every depth is average-pooled to ``pool_size x pool_size`` (``p*p`` tokens per depth).
        num_classes: classes of the auxiliary head (0: ``forward`` returns the ``(B, dim)`` readout).
        prior_tokens: T learned prior tokens appended to the sequence (0: none).
        depth: number of residual Mamba layers.
        d_state, expand, d_conv: ``Mamba1d`` options.
        readout: ``"last"`` (the last token, which has seen the whole causal sequence) or ``"mean"``.
        dropout: dropout before the head.
        backend: selective-scan backend.

    Shapes:
        ``feats``: list of ``(B, in_channels[i], H_i, W_i)``; ``prior``: ``(B, T, dim)`` or ``None``.
        ``encode`` -> ``(B, L, dim)`` with ``L = len(in_channels) * pool_size**2 + T``;
        ``forward`` -> logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        *,
        dim: int = 64,
        pool_size: int = 2,
        num_classes: int = 2,
        prior_tokens: int = 0,
        depth: int = 1,
        d_state: int = 16,
        expand: float = 2.0,
        d_conv: int = 4,
        readout: str = "last",
        dropout: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        in_channels = tuple(int(c) for c in in_channels)
        if not in_channels:
            raise ValueError("DeepTemporalMamba needs the channels of at least one depth")
        if pool_size < 1 or depth < 1 or prior_tokens < 0:
            raise ValueError(
                f"pool_size and depth must be >= 1 and prior_tokens >= 0, got {pool_size}, {depth}, {prior_tokens}"
            )
        if readout not in ("last", "mean"):
            raise ValueError(f"readout must be 'last' or 'mean', got {readout!r}")
        self.in_channels, self.dim, self.pool_size, self.readout = in_channels, dim, pool_size, readout
        self.prior_tokens = prior_tokens
        self.proj = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.prior = nn.Parameter(torch.zeros(prior_tokens, dim)) if prior_tokens else None
        self.norms = nn.ModuleList(LayerNorm(dim, eps=1e-5) for _ in range(depth))
        self.mixers = nn.ModuleList(
            Mamba1d(dim, d_state=d_state, expand=expand, d_conv=d_conv, backend=backend) for _ in range(depth)
        )
        self.norm = LayerNorm(dim, eps=1e-5)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(dim, num_classes) if num_classes else None

    def sequence_length(self, prior_length: int | None = None) -> int:
        """Tokens in the sequence: ``len(in_channels) * pool_size**2`` plus the prior's length."""
        t = self.prior_tokens if prior_length is None else prior_length
        return len(self.in_channels) * self.pool_size**2 + t

    def tokens(self, feats: Sequence[torch.Tensor], prior: torch.Tensor | None = None) -> torch.Tensor:
        """The token sequence ``(B, L, dim)`` before the Mamba layers."""
        if len(feats) != len(self.in_channels):
            raise ValueError(f"DTM expects {len(self.in_channels)} depth features, got {len(feats)}")
        seq = []
        for i, (f, proj) in enumerate(zip(feats, self.proj)):
            if f.dim() != 4 or f.shape[1] != self.in_channels[i]:
                raise ValueError(
                    f"DTM depth {i}: expected (B, {self.in_channels[i]}, H, W), got {tuple(f.shape)}"
                )
            t = proj(F.adaptive_avg_pool2d(f, self.pool_size))
            seq.append(t.flatten(2).transpose(1, 2))
        batch = seq[0].shape[0]
        if prior is not None:
            if prior.dim() != 3 or prior.shape[0] != batch or prior.shape[2] != self.dim:
                raise ValueError(f"DTM prior must be ({batch}, T, {self.dim}), got {tuple(prior.shape)}")
            if self.prior is not None:
                if prior.shape[1] != self.prior_tokens:
                    raise ValueError(
                        f"DTM prior has {prior.shape[1]} tokens but prior_tokens={self.prior_tokens}"
                    )
                prior = prior + self.prior
            seq.append(prior.to(seq[0].dtype))
        elif self.prior is not None:
            seq.append(self.prior.expand(batch, -1, -1))
        return torch.cat(seq, dim=1)

    def encode(self, feats: Sequence[torch.Tensor], prior: torch.Tensor | None = None) -> torch.Tensor:
        """The modelled sequence ``(B, L, dim)`` (after the Mamba layers and the final LayerNorm)."""
        x = self.tokens(feats, prior)
        for norm, mixer in zip(self.norms, self.mixers):
            x = x + mixer(norm(x))
        return self.norm(x)

    def forward(self, feats: Sequence[torch.Tensor], prior: torch.Tensor | None = None) -> torch.Tensor:
        x = self.encode(feats, prior)
        pooled = x[:, -1] if self.readout == "last" else x.mean(dim=1)
        pooled = self.dropout(pooled)
        return self.head(pooled) if self.head is not None else pooled

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, dim={self.dim}, pool_size={self.pool_size}, "
            f"prior_tokens={self.prior_tokens}, readout={self.readout!r}"
        )
