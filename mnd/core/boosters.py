"""Transfer boosters (not in the paper): what the adversarial term's model sees, so the image fools other models too.

Both act on the adversarial term of eq. (1) only; the perceptual loss of
eq. (7) and the success check read the plain 8-bit image.

- :func:`diverse_input`: input diversity (Xie et al., 2019, DI2FGSM): with
  probability ``p`` the model sees the image shrunk to a random size between
  90% and 100% of its side and zero-padded back at a random place.
- :func:`translation_invariant`: translation invariance (Dong et al., 2019,
  TI): the identity going forward; going back, the gradient is smoothed by a
  Gaussian kernel, which approximates the gradient over translated copies.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SHRINK = 0.9
"""Smallest side, as a fraction of the image's, that :func:`diverse_input` shrinks to (DI2FGSM's 0.9)."""


def diverse_input(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """With probability ``p`` (one draw for the batch), ``x`` shrunk at random and zero-padded to its size.

    Differentiable (bilinear resize and padding); ``x`` itself when the draw
    says no or ``p`` is 0.

    >>> g = torch.Generator().manual_seed(0)
    >>> y = diverse_input(torch.ones(1, 3, 20, 20), 1.0, g)
    >>> tuple(y.shape), bool((y == 0).any())
    ((1, 3, 20, 20), True)
    """
    if p <= 0 or float(torch.rand((), generator=generator)) >= p:
        return x
    h, w = x.shape[-2:]
    low_h, low_w = max(1, math.ceil(h * SHRINK)), max(1, math.ceil(w * SHRINK))
    nh = int(torch.randint(low_h, h + 1, (), generator=generator))
    nw = int(torch.randint(low_w, w + 1, (), generator=generator))
    small = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    top = int(torch.randint(0, h - nh + 1, (), generator=generator))
    left = int(torch.randint(0, w - nw + 1, (), generator=generator))
    return F.pad(small, (left, w - nw - left, top, h - nh - top))


def gaussian_kernel(size: int) -> torch.Tensor:
    """A (size, size) Gaussian of sigma ``size / 6`` summing to 1 (TI's kernel shape: 3 sigma each side).

    >>> k = gaussian_kernel(5); tuple(k.shape), round(float(k.sum()), 6), bool(k[2, 2] == k.max())
    ((5, 5), 1.0, True)
    """
    sigma = size / 6.0
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return (k / k.sum()).float()


def smooth(grad: torch.Tensor, size: int) -> torch.Tensor:
    """Each channel of ``grad`` convolved with :func:`gaussian_kernel` (zero padding, same size)."""
    c = grad.shape[1]
    k = gaussian_kernel(size).to(grad).expand(c, 1, size, size)
    return F.conv2d(grad, k, padding=size // 2, groups=c)


class _Smoothed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int) -> torch.Tensor:  # type: ignore[override]
        ctx.size = size
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return smooth(grad, ctx.size), None


def translation_invariant(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` unchanged, whose gradient is smoothed by a ``size`` Gaussian on the way back (0: ``x`` itself)."""
    return _Smoothed.apply(x, size) if size else x


def boosted(x: torch.Tensor, *, diversity: float, translation: int, generator: torch.Generator) -> torch.Tensor:
    """What the adversarial term's model sees: ``x`` through translation invariance, then input diversity."""
    return diverse_input(translation_invariant(x, translation), diversity, generator)


__all__ = ["SHRINK", "boosted", "diverse_input", "gaussian_kernel", "smooth", "translation_invariant"]
