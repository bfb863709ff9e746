"""First- and second-order derivative operators (edge features) for channels-first maps.

- ``FirstOrderDerivativeOperator``: four depthwise 3x3 convs initialised with the Scharr kernel and its
  rotations by 45, 90 and 135 degrees; output the gradient magnitude ``sqrt(sum_k (K_k * x)^2)``.
- ``SecondOrderDerivativeOperator``: one depthwise 3x3 conv initialised with a difference of Gaussians
  ``Gauss(sigma1) - Gauss(sigma2)`` (each Gaussian the outer product of a normalised 1-D Gaussian), a
  Laplace-like operator; no bias.
- ``DualOrderDerivativeModule``: ``x + first(x) + second(x)`` (either operator can be switched off).

Every conv acts per channel (depthwise) with replicate padding, so flat borders give no edges. With
``trainable=False`` the kernels are fixed buffers; otherwise they are parameters initialised as above.

Inside ``torch.compile`` the depthwise convs are written as the sum of the k*k shifted taps of the padded
map times their weights (:func:`depthwise_replicate`, ``taps=True``): inductor fuses that, the padding and
the operators' pointwise tails into its own kernels, forward and backward, where a depthwise conv is an
opaque call to PyTorch's slow native depthwise kernels (a channel multiplier of 4 has no cuDNN path: about
6 ms of a compiled training step of the flagship at batch 32 on an H100). Eager calls keep ``F.conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "DualOrderDerivativeModule",
    "FirstOrderDerivativeOperator",
    "SecondOrderDerivativeOperator",
    "depthwise_replicate",
    "difference_of_gaussians",
    "gaussian_kernel",
    "scharr_kernels",
]

# The 8 outer cells of a 3x3 kernel in clockwise order from the top-left corner.
_RING = ((0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0))
SCHARR_X = ((-3.0, 0.0, 3.0), (-10.0, 0.0, 10.0), (-3.0, 0.0, 3.0))


def rotate_45(kernel: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """Rotate a 3x3 kernel counter-clockwise by ``45 * steps`` degrees (outer ring shifted, centre kept)."""
    if kernel.shape != (3, 3):
        raise ValueError(f"rotate_45 expects a 3x3 kernel, got shape {tuple(kernel.shape)}")
    out = kernel.clone()
    n = len(_RING)
    for i, (r, c) in enumerate(_RING):
        out[r, c] = kernel[_RING[(i + steps) % n]]
    return out


def scharr_kernels() -> torch.Tensor:
    """The Scharr x-derivative kernel and its rotations by 45, 90, 135 degrees: ``(4, 3, 3)`` float32."""
    base = torch.tensor(SCHARR_X)
    return torch.stack([rotate_45(base, k) for k in range(4)])


def gaussian_kernel(sigma: float, size: int = 3) -> torch.Tensor:
    """Normalised 2-D Gaussian ``(size, size)``: outer product of a 1-D Gaussian, summing to 1."""
    if sigma <= 0 or size < 1 or size % 2 == 0:
        raise ValueError(f"gaussian_kernel needs sigma > 0 and an odd size, got sigma={sigma}, size={size}")
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    g2 = torch.outer(g, g)
    return (g2 / g2.sum()).float()


def difference_of_gaussians(sigma1: float, sigma2: float, size: int = 3) -> torch.Tensor:
    """``gaussian_kernel(sigma1) - gaussian_kernel(sigma2)``: a zero-sum, Laplace-like ``(size, size)`` kernel."""
    return gaussian_kernel(sigma1, size) - gaussian_kernel(sigma2, size)


def depthwise_replicate(x: torch.Tensor, weight: torch.Tensor, *, taps: bool | None = None) -> torch.Tensor:
    """Depthwise k x k convolution with replicate padding ('same' size), ``m`` kernels per channel.

    x ``(B, C, H, W)``, weight ``(C*m, 1, k, k)`` (grouped-conv layout: kernels of channel c at rows
    ``c*m .. c*m + m - 1``) -> ``(B, C, m, H, W)`` in x's dtype (the autocast dtype under autocast).
    ``taps``: the sum of shifted taps (accumulated in fp32, or float64) instead of ``F.conv2d``; default: inside
    ``torch.compile`` only (see the module docstring)."""
    b, c, h, w = x.shape
    k = weight.shape[-1]
    p = k // 2
    xp = F.pad(x, (p, p, p, p), mode="replicate")
    if taps is None:
        taps = torch.compiler.is_compiling()
    if not taps:
        return F.conv2d(xp, weight.to(x.dtype), groups=c).view(b, c, -1, h, w)
    dev = x.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
    with torch.autocast(dev, enabled=False):
        acc = torch.promote_types(x.dtype, torch.float32)
        wt = weight.to(acc).view(c, -1, k, k)
        xp = xp.to(acc).unsqueeze(2)  # (B, C, 1, H + 2p, W + 2p)
        out = sum(
            xp[..., i : i + h, j : j + w] * wt[:, :, i, j, None, None] for i in range(k) for j in range(k)
        )
        return out.to(dtype)


def _kernel_store(module: nn.Module, weight: torch.Tensor, trainable: bool) -> None:
    if trainable:
        module.weight = nn.Parameter(weight)
    else:
        module.register_buffer("weight", weight)


class FirstOrderDerivativeOperator(nn.Module):
    """Four-direction Scharr gradient magnitude, per channel.

    Args:
        channels: C.
        trainable: kernels are parameters (initialised with Scharr) instead of fixed buffers.
        eps: added under the square root so that the gradient stays finite on flat regions.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)`` (non-negative).
    """

    def __init__(self, channels: int, *, trainable: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.channels, self.eps = channels, eps
        weight = scharr_kernels().repeat(channels, 1, 1).unsqueeze(1)  # (4C, 1, 3, 3), 4 per channel
        _kernel_store(self, weight, trainable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c != self.channels:
            raise ValueError(f"FirstOrderDerivativeOperator built for {self.channels} channels, got {c}")
        g = depthwise_replicate(x, self.weight)  # (B, C, 4, H, W)
        return torch.sqrt(g.square().sum(dim=2) + self.eps)


class SecondOrderDerivativeOperator(nn.Module):
    """Difference-of-Gaussians (Laplace-like) depthwise conv, no bias.

    Args:
        channels: C.
        sigmas: ``(sigma1, sigma2)`` of ``Gauss(sigma1) - Gauss(sigma2)``.
        trainable: kernel is a parameter (initialised with the DoG) instead of a fixed buffer.
        kernel_size: odd kernel size (3 in the paper).

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        *,
        sigmas: tuple[float, float] = (0.5, 1.0),
        trainable: bool = True,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if len(sigmas) != 2:
            raise ValueError(f"sigmas must be a pair (sigma1, sigma2), got {sigmas!r}")
        self.channels = channels
        dog = difference_of_gaussians(float(sigmas[0]), float(sigmas[1]), kernel_size)
        _kernel_store(self, dog.expand(channels, 1, kernel_size, kernel_size).clone(), trainable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c != self.channels:
            raise ValueError(f"SecondOrderDerivativeOperator built for {self.channels} channels, got {c}")
        return depthwise_replicate(x, self.weight).squeeze(2)


class DualOrderDerivativeModule(nn.Module):
    """Edge enhancement: ``x + FirstOrder(x) + SecondOrder(x)`` (residual), each operator optional.

    Args:
        channels: C.
        first_order, second_order: include the operator.
        sigmas: DoG sigmas of the second-order operator.
        trainable: derivative kernels train after initialisation.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        *,
        first_order: bool = True,
        second_order: bool = True,
        sigmas: tuple[float, float] = (0.5, 1.0),
        trainable: bool = True,
    ) -> None:
        super().__init__()
        if not (first_order or second_order):
            raise ValueError("DualOrderDerivativeModule needs first_order and/or second_order")
        self.first = FirstOrderDerivativeOperator(channels, trainable=trainable) if first_order else None
        self.second = (
            SecondOrderDerivativeOperator(channels, sigmas=sigmas, trainable=trainable)
            if second_order
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.first is not None:
            out = out + self.first(x)
        if self.second is not None:
            out = out + self.second(x)
        return out
