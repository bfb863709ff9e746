"""DIA: deformable interactive attention (SPEC §3, seed 003, ADCD-Net), a drop-in spatial attention.

On ``x (B, C, H, W)``::

    avg = Conv3x3/2(mean_c(x)),  mx = Conv3x3/2(max_c(x))          (B, 1, ceil(H/2), ceil(W/2))
    distortion mode:  a = sigmoid(avg_modulator(avg))              (zero-initialised 3x3 convs whose
                      m = sigmoid(max_modulator(mx))                gradients are scaled 0.4 and 0.1)
                      z = [a * mx, m * avg]                        (cross-modulation)
    otherwise:        z = [mx, avg]
    mask = sigmoid(upsample(Conv3x3(z), to (H, W)))                (B, 1, H, W) in (0, 1)
    out  = ReLU(x * mask)

Departures from the seed's code, on purpose:

* Odd sizes: the seed up-samples by a fixed factor 2, which gives ``H + 1`` rows for an odd ``H`` and
  then fails at ``x * mask``. Here the mask is up-sampled (nearest, as the seed's ``nn.Upsample``) to
  exactly ``(H, W)``; for even sizes this is the same as the factor 2.
* Gradient scaling: the seed registers full backward hooks that rescale ``grad_input``, which in PyTorch
  is the gradient w.r.t. the conv's *input* only, so its weights' gradients were never scaled although
  the comment says "set the learning rate". Here the gradient arriving at each modulator conv's output is
  scaled (``scale_gradient``), so the conv's weight and bias gradients *and* the gradient it passes to
  its input are exactly ``avg_grad_scale`` (0.4) / ``max_grad_scale`` (0.1) times their unscaled value.
* The seed's ``stride`` argument of the modulator convs is dropped: any stride but 1 breaks the
  cross-modulation shapes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DeformableInteractiveAttention", "scale_gradient"]


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient flowing back through it by ``scale``."""
    return _ScaleGradient.apply(x, float(scale))


class DeformableInteractiveAttention(nn.Module):
    """Deformable interactive attention (DIA).

    Args:
        distortion: the seed's ``distortionmode``: cross-modulate the max and mean maps with sigmoid
            modulators from two 3x3 convs with zero-initialised weights (so each modulator starts as
            the constant ``sigmoid(bias)``).
        avg_grad_scale: gradient scale of the modulator computed from the mean map (0.4).
        max_grad_scale: gradient scale of the modulator computed from the max map (0.1).
        output: ``"features"`` (``ReLU(x * mask)``, the seed's output) or ``"mask"`` (the mask alone,
            for places that multiply a gate into another branch).

    Shapes:
        ``x (B, C, H, W)`` -> ``(B, C, H, W)`` (``output="features"``) or ``(B, 1, H, W)``
        (``output="mask"``), for any ``H, W >= 1`` and any C.
    """

    def __init__(
        self,
        *,
        distortion: bool = False,
        avg_grad_scale: float = 0.4,
        max_grad_scale: float = 0.1,
        output: str = "features",
    ) -> None:
        super().__init__()
        if output not in ("features", "mask"):
            raise ValueError(f"DIA output must be 'features' or 'mask', got {output!r}")
        self.distortion, self.output = distortion, output
        self.avg_grad_scale, self.max_grad_scale = float(avg_grad_scale), float(max_grad_scale)
        self.down_avg = nn.Conv2d(1, 1, 3, stride=2, padding=1)
        self.down_max = nn.Conv2d(1, 1, 3, stride=2, padding=1)
        if distortion:
            self.avg_modulator = nn.Conv2d(1, 1, 3, padding=1)
            self.max_modulator = nn.Conv2d(1, 1, 3, padding=1)
            nn.init.zeros_(self.avg_modulator.weight)
            nn.init.zeros_(self.max_modulator.weight)
        self.conv = nn.Conv2d(2, 1, 3, padding=1)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial attention mask ``(B, 1, H, W)`` in (0, 1) of ``x (B, C, H, W)``."""
        if x.dim() != 4:
            raise ValueError(f"DIA expects x of shape (B, C, H, W), got {tuple(x.shape)}")
        avg = self.down_avg(x.mean(dim=1, keepdim=True))
        mx = self.down_max(x.amax(dim=1, keepdim=True))
        if self.distortion:
            a = torch.sigmoid(scale_gradient(self.avg_modulator(avg), self.avg_grad_scale))
            m = torch.sigmoid(scale_gradient(self.max_modulator(mx), self.max_grad_scale))
            z = torch.cat([a * mx, m * avg], dim=1)
        else:
            z = torch.cat([mx, avg], dim=1)
        return torch.sigmoid(F.interpolate(self.conv(z), size=x.shape[-2:], mode="nearest"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask(x)
        if self.output == "mask":
            return mask
        return F.relu(x * mask)

    def extra_repr(self) -> str:
        scales = f", grad_scales=({self.avg_grad_scale}, {self.max_grad_scale})" if self.distortion else ""
        return f"distortion={self.distortion}{scales}, output={self.output!r}"
