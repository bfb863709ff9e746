"""Lovász-softmax loss (Berman, Rannen Triki, Blaschko, CVPR 2018).

For each class c, with pixel errors ``m_i = |[y_i = c] - p_i(c)|`` sorted in decreasing order, the loss is
the Lovász extension of the Jaccard loss ``Delta_c(M) = |M| / |{y = c} ∪ M|``:
``sum_i m_(i) * (Delta_c({1..i}) - Delta_c({1..i-1}))``; the class losses are averaged.

``classes="present"`` (default) averages over the classes present in the (valid) labels, so that a class
absent from the batch neither counts nor divides; ``"all"`` averages over every class (an absent class then
costs its largest predicted probability); a list picks classes. Pixels equal to ``ignore_index`` are
removed first. ``per_image`` computes the loss per image and averages over the images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from geomamba.losses._common import check_inputs

__all__ = ["LovaszSoftmaxLoss", "lovasz_grad", "lovasz_softmax", "lovasz_softmax_flat"]


_SCAN_CHUNK = 1024


def _cumsum_last(x: torch.Tensor) -> torch.Tensor:
    """``x.cumsum(-1)``, in two levels for long rows: PyTorch's inner-dim scan gives each row to one block,
    so a few rows of millions of pixels (the Lovász rows of a batch) ran 2.8 ms per call on an H100."""
    p = x.shape[-1]
    if p <= 4 * _SCAN_CHUNK:
        return x.cumsum(dim=-1)
    blocks = nn.functional.pad(x, (0, (-p) % _SCAN_CHUNK)).unflatten(-1, (-1, _SCAN_CHUNK)).cumsum(dim=-1)
    totals = blocks[..., -1]
    offsets = totals.cumsum(dim=-1) - totals  # exclusive sums of the blocks before
    return (blocks + offsets.unsqueeze(-1)).flatten(-2)[..., :p]


def _lovasz_grad_rows(gt_sorted: torch.Tensor) -> torch.Tensor:
    """``lovasz_grad`` along the last dim of ``(..., P)`` (contiguous rows: the fast inner-dim cumsum).

    ``gt_sorted`` is 0/1, so its running sums are exact integers (below 2**24) and the running sum of
    ``1 - gt`` is the position minus that: one scan."""
    gts = gt_sorted.sum(dim=-1, keepdim=True)
    seen_fg = _cumsum_last(gt_sorted)
    position = torch.arange(1, gt_sorted.shape[-1] + 1, device=gt_sorted.device, dtype=gt_sorted.dtype)
    intersection = gts - seen_fg
    union = gts + (position - seen_fg)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss along sorted errors.

    ``gt_sorted`` ``(P, ...)``: ground-truth membership (0/1 float) of the pixels in decreasing error order,
    along dim 0 (further dims are independent classes). Returns the same shape.
    """
    rows = gt_sorted.movedim(0, -1).contiguous()
    return _lovasz_grad_rows(rows).movedim(-1, 0)


def _lovasz_rows(
    probs: torch.Tensor,
    labels: torch.Tensor,
    *,
    classes: str | Sequence[int],
    valid: torch.Tensor | None,
) -> torch.Tensor:
    """Lovász-softmax of class-major ``probs (K, P)`` and ``labels (P,)``: every sort and cumulative sum
    runs along the contiguous pixel dim (a cumsum along dim 0 of ``(P, K)`` is a serial scan per class on
    GPUs: about 0.1 s per call for 2 M pixels on an H100)."""
    k = probs.shape[0]
    if probs.shape[1] == 0:
        return probs.sum() * 0.0
    probs = probs.contiguous()
    fg = (labels.unsqueeze(0) == torch.arange(k, device=labels.device).unsqueeze(1)).float()  # (K, P)
    errors = (fg - probs).abs()
    if valid is not None:
        fg = fg * valid.unsqueeze(0)
        errors = torch.where(valid.unsqueeze(0), errors, -1.0)
    errors_sorted, perm = torch.sort(errors, dim=1, descending=True)
    if valid is not None:
        errors_sorted = errors_sorted.clamp(min=0.0)
    per_class = (errors_sorted * _lovasz_grad_rows(fg.gather(1, perm))).sum(dim=1)  # (K,)
    if classes == "present":
        present = (fg.sum(dim=1) > 0).float()
        return (per_class * present).sum() / present.sum().clamp(min=1.0)
    if classes == "all":
        return per_class.mean()
    if isinstance(classes, str):
        raise ValueError(
            f"lovasz_softmax: classes must be 'present', 'all' or a list of ids, got {classes!r}"
        )
    idx = torch.as_tensor(list(classes), dtype=torch.long, device=probs.device)
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= k:
        raise ValueError(f"lovasz_softmax: classes {list(classes)} must be non-empty ids in [0, {k})")
    return per_class[idx].mean()


def lovasz_softmax_flat(
    probs: torch.Tensor,
    labels: torch.Tensor,
    *,
    classes: str | Sequence[int] = "present",
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lovász-softmax of flat ``probs (P, K)`` and ``labels (P,)``.

    ``valid (P,)`` bool marks the pixels that count (None: all). Pixels outside it are sorted after every
    valid one with no error, so the result equals that of the valid pixels alone, without selecting them
    (a data-dependent shape, hence a host synchronisation on GPUs)."""
    return _lovasz_rows(probs.t(), labels, classes=classes, valid=valid)


def lovasz_softmax(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    classes: str | Sequence[int] = "present",
    per_image: bool = False,
    ignore_index: int = 255,
    from_logits: bool = True,
) -> torch.Tensor:
    """Lovász-softmax of ``logits (B, K, H, W)`` (softmax applied unless ``from_logits=False``) and
    ``target (B, H, W)``."""
    target = check_inputs(logits, target, "lovasz_softmax")
    probs = torch.softmax(logits.float(), dim=1) if from_logits else logits.float()

    def flat(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        p = p.movedim(1, 0).reshape(p.shape[1], -1)  # (K, B*H*W), pixel order as t.reshape(-1)
        t = t.reshape(-1)
        return _lovasz_rows(p, t, classes=classes, valid=t != ignore_index)

    if per_image:
        return torch.stack([flat(p[None], t[None]) for p, t in zip(probs, target)]).mean()
    return flat(probs, target)


class LovaszSoftmaxLoss(nn.Module):
    """Module form of ``lovasz_softmax``."""

    def __init__(
        self, *, classes: str | Sequence[int] = "present", per_image: bool = False, ignore_index: int = 255
    ) -> None:
        super().__init__()
        self.classes, self.per_image, self.ignore_index = classes, per_image, ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return lovasz_softmax(
            logits, target, classes=self.classes, per_image=self.per_image, ignore_index=self.ignore_index
        )
