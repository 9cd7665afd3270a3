"""The paper's losses, one small function per equation (section III).

Every function is batched over N images and returns one value per image
(shape ``(N,)``), so a batch's total is ``loss.sum()`` and each image's
gradient is independent of the others in its batch.

Norm forms. The paper writes the norms of eqs. (8), (9), (18) and (19) as
plain sums. With a literal sum over 3x224x224 values and beta = 100 the
perceptual term outweighs the adversarial term by orders of magnitude and the
perturbation cannot grow, so two explicit settings choose the form
(book/reading-notes.md):

- ``reduction``, for the l1 norms of eqs. (8) and (18): ``"mean"`` (default)
  is the mean absolute value, ``"sum"`` the literal sum of eq. (8).
- ``l2_form``, for the l2 norms of eqs. (9) and (19): ``"rms"`` (default) is
  the root mean square ``sqrt(mean(d**2))``, ``"mse"`` the mean of squares
  ``mean(d**2)`` (no square root: a much weaker term near Z = X), and
  ``"sum"`` the literal ``sqrt(sum(d**2))`` of eq. (9). The l2 norms ignore
  ``reduction``.

The literal equations are ``reduction="sum", l2_form="sum"``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import piq
import torch
import torch.nn.functional as F

Norm = Literal["l1", "l2"]
Reduction = Literal["mean", "sum"]
L2Form = Literal["rms", "mse", "sum"]
REDUCTIONS: tuple[Reduction, ...] = ("mean", "sum")
L2_FORMS: tuple[L2Form, ...] = ("rms", "mse", "sum")

SOBEL_EPS = 1e-8
"""Added under the square root of eq. (17) so its gradient exists where G = 0."""


def _check_images(name: str, x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}")


def adversarial_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, targeted: bool, r: float = 1.0
) -> torch.Tensor:
    """Adversarial loss L_adv, eq. (3) (non-targeted) and eq. (4) (targeted).

    Non-targeted, eq. (3): ``<y_gt, softmax(u) + u>``, the probability plus the
    logit of the true class, to be minimised. Targeted, eq. (4):
    ``-<y_t, softmax(u) ** r>``, computed as ``-exp(r * log_softmax(u))``: the
    same value, but with a finite gradient where the target's probability
    underflows to 0 (``p ** r`` with r < 1 has an infinite derivative there,
    which turns into NaN in backward). Eq. (6) restates both with a power
    ``r``; the non-targeted branch of eq. (6) contradicts eq. (3), and eq. (3)
    is used (``r`` is ignored when ``targeted`` is False).

    Args:
        logits: (N, C) pre-softmax outputs u.
        labels: (N,) class indices: the true class, or the target when targeted.
        targeted: which of the two equations.
        r: the power of eq. (4); the paper uses 0.0625.

    Returns:
        (N,) loss per image.

    >>> u = torch.tensor([[2.0, 0.0]])
    >>> round(adversarial_loss(u, torch.tensor([0]), targeted=False).item(), 4)
    2.8808
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    idx = labels.long().view(-1, 1)
    if targeted:
        return -logits.log_softmax(dim=1).gather(1, idx).squeeze(1).mul(r).exp()
    return (logits.softmax(dim=1) + logits).gather(1, idx).squeeze(1)


def least_likely_target(logits: torch.Tensor) -> torch.Tensor:
    """Target class of eq. (5): the class with the smallest clean output.

    >>> least_likely_target(torch.tensor([[0.5, -3.0, 1.0]])).tolist()
    [1]
    """
    return logits.argmin(dim=1)


def _reduce_norm(diff: torch.Tensor, norm: Norm, reduction: Reduction, l2_form: L2Form) -> torch.Tensor:
    """One norm per image: l1 by ``reduction``, l2 by ``l2_form`` (module docstring)."""
    flat = diff.flatten(1)
    if norm == "l1":
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        total = flat.abs().sum(1)
        return total / flat.shape[1] if reduction == "mean" else total
    if norm == "l2":
        if l2_form not in L2_FORMS:
            raise ValueError(f"l2_form must be one of {L2_FORMS}, got {l2_form!r}")
        total = flat.pow(2).sum(1)
        if l2_form != "sum":
            total = total / flat.shape[1]
        if l2_form == "mse":
            return total
        # sqrt's derivative is infinite at 0, where every attack starts (Z = X): use the
        # subgradient 0 there instead of NaN.
        return torch.where(total > 0, total.clamp_min(1e-30).sqrt(), torch.zeros_like(total))
    raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")


def deviation_loss(
    z: torch.Tensor,
    x: torch.Tensor,
    *,
    norm: Norm = "l1",
    reduction: Reduction = "mean",
    l2_form: L2Form = "rms",
) -> torch.Tensor:
    """Deviation loss ``||Z - X||``: l1 is eq. (8), l2 is eq. (9).

    ``reduction`` applies to l1, ``l2_form`` to l2 (module docstring).

    >>> z, x = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    >>> deviation_loss(z, x, reduction="sum").item(), deviation_loss(z, x, norm="l2", l2_form="sum").item()
    (4.0, 2.0)
    >>> half = torch.full((1, 1, 2, 2), 0.5)  # four squared differences of 0.25
    >>> [deviation_loss(half, x, norm="l2", l2_form=f).item() for f in ("rms", "mse", "sum")]
    [0.5, 0.25, 1.0]
    """
    _check_images("z", z)
    return _reduce_norm(z - x, norm, reduction, l2_form)


def ssim_similarity(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """SSIM(Z, X) of eqs. (10)-(14), per image, through piq (differentiable).

    Gaussian 11x11 window, sigma 1.5, data range 1, averaged over channels and
    positions (piq's defaults; Wang et al. 2004). Inputs must lie in [0, 1].
    """
    _check_images("z", z)
    return piq.ssim(z, x, data_range=1.0, reduction="none", downsample=False)


def ssim_global(z: torch.Tensor, x: torch.Tensor, *, covariance_factor: float = 1.0) -> torch.Tensor:
    """SSIM(Z, X) exactly as eqs. (10)-(14) print it, per image.

    ``((2 mu_z mu_x + C1) (sigma_zx + C2)) / ((mu_z^2 + mu_x^2 + C1) (sigma_z^2 + sigma_x^2 + C2))``
    with global statistics over all C x H x W values of each image (no
    window), N - 1 in the variances and the covariance (eqs. 12-14), and,
    as printed, no factor 2 on the covariance; C1 = 0.01**2 and C2 = 0.03**2
    (Wang et al. 2004 with data range 1; the paper does not give them).

    As printed the formula is not a similarity index: without the factor 2
    an image compared with itself scores about 0.5, not 1. Wang et al.'s
    SSIM has ``2 sigma_zx``, and is computed in local windows and averaged,
    because image statistics vary across an image; that is what the paper
    cites and what its reported values (0.77-0.99) fit. So ``mnd``'s
    attack and metrics use the local Gaussian SSIM of piq
    (:func:`ssim_similarity`, :func:`mnd.core.metrics.ssim`); this function is
    here to measure what the printed form would give
    (``covariance_factor=2`` gives the global SSIM with the factor 2).

    Args:
        z, x: (N, C, H, W) images in [0, 1], at least two values each.
        covariance_factor: the factor on sigma_zx in the numerator (1 as printed).

    Returns:
        (N,) values.

    >>> x = torch.tensor([0.0, 1.0, 0.0, 1.0]).view(1, 1, 2, 2)
    >>> round(ssim_global(x, x).item(), 4), round(ssim_global(x, x, covariance_factor=2).item(), 4)
    (0.5007, 1.0)
    """
    _check_images("z", z)
    if z.shape != x.shape:
        raise ValueError(f"z and x must have one shape, got {tuple(z.shape)} and {tuple(x.shape)}")
    zf, xf = z.flatten(1), x.flatten(1)
    n = zf.shape[1]
    if n < 2:
        raise ValueError("ssim_global needs at least two values per image (N - 1 in eqs. 12-14)")
    mu_z, mu_x = zf.mean(1), xf.mean(1)  # eq. (11)
    dz, dx = zf - mu_z[:, None], xf - mu_x[:, None]
    var_z = dz.pow(2).sum(1) / (n - 1)  # eq. (12), squared
    var_x = dx.pow(2).sum(1) / (n - 1)  # eq. (13), squared
    cov = (dz * dx).sum(1) / (n - 1)  # eq. (14)
    c1, c2 = CleanReference.K1**2, CleanReference.K2**2
    numerator = (2 * mu_z * mu_x + c1) * (covariance_factor * cov + c2)
    return numerator / ((mu_z**2 + mu_x**2 + c1) * (var_z + var_x + c2))  # eq. (10)


def _sobel_x(padded: torch.Tensor) -> torch.Tensor:
    """Valid correlation with eq. (15)'s kernel: [1, 2, 1] down the rows, then [1, 0, -1] along them."""
    smooth = (padded[..., :-2, :] + padded[..., 2:, :]).add_(padded[..., 1:-1, :], alpha=2)
    return smooth[..., :-2] - smooth[..., 2:]


def _sobel_y(padded: torch.Tensor) -> torch.Tensor:
    """Valid correlation with eq. (16)'s kernel: [1, 2, 1] along the rows, then [1, 0, -1] down them."""
    smooth = (padded[..., :-2] + padded[..., 2:]).add_(padded[..., 1:-1], alpha=2)
    return smooth[..., :-2, :] - smooth[..., 2:, :]


class _SobelMagnitude(torch.autograd.Function):
    """Eq. (17) on a padded image, with its gradient written out.

    The kernels of eqs. (15) and (16) are separable, so each is two shifted
    sums (a few element-wise passes, no convolution), and the adjoint of a
    valid correlation is the full correlation with the flipped kernel, which
    for both Sobel kernels is the kernel negated. This is 2x faster on a CPU
    than a grouped convolution and autograd, and equal to it in value and
    gradient (tests/test_losses.py, gradcheck in float64).
    """

    @staticmethod
    def forward(ctx: Any, padded: torch.Tensor) -> torch.Tensor:
        gx, gy = _sobel_x(padded), _sobel_y(padded)
        g = torch.addcmul(gx * gx, gy, gy).add_(SOBEL_EPS).sqrt_()
        ctx.save_for_backward(gx, gy, g)
        return g

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        gx, gy, g = ctx.saved_tensors
        w = grad / g
        border = (2, 2, 2, 2)
        return -(_sobel_x(F.pad(gx * w, border)) + _sobel_y(F.pad(gy * w, border)))


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude g(X), eqs. (15)-(17), per channel.

    ``G_x`` (eq. 15) and ``G_y`` (eq. 16) are the kernels as printed (a
    correlation, as deep-learning convolution is), with replicated borders;
    eq. (17) is ``sqrt(G_x**2 + G_y**2 + SOBEL_EPS)``.

    Returns:
        (N, C, H, W) magnitudes.

    >>> ramp = torch.arange(4.0).repeat(4, 1).view(1, 1, 4, 4)
    >>> sobel_magnitude(ramp)[0, 0, 1, 1].round().item()
    8.0
    """
    _check_images("x", x)
    return _SobelMagnitude.apply(F.pad(x, (1, 1, 1, 1), mode="replicate"))


def gradient_loss(
    z: torch.Tensor,
    x: torch.Tensor,
    *,
    norm: Norm = "l1",
    reduction: Reduction = "mean",
    l2_form: L2Form = "rms",
    x_gradient: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gradient similarity loss ``||g(Z) - g(X)||``: l1 is eq. (18), l2 is eq. (19).

    Args:
        reduction: the form of the l1 norm; l2_form: the form of the l2 norm
            (module docstring).
        x_gradient: ``sobel_magnitude(x)`` when the caller already has it (the
            attack computes it once per image, not once per iteration).
    """
    gx = sobel_magnitude(x) if x_gradient is None else x_gradient
    return _reduce_norm(sobel_magnitude(z) - gx, norm, reduction, l2_form)


def _gaussian_1d(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


CHANNELS_LAST = torch.channels_last


def _depthwise(t: torch.Tensor, kernel: torch.Tensor, *, adjoint: bool = False) -> torch.Tensor:
    """The separable Gaussian window over every channel of ``t``: valid filtering, or its adjoint.

    The adjoint of a valid correlation is the full correlation with the
    flipped kernel; the Gaussian is symmetric, so that is the same kernel with
    ``k - 1`` zeros of padding. The convolutions run in channels-last memory
    order, which a CPU computes about 2x faster for depthwise kernels, and the
    result stays in that order: the SSIM statistics are used there, and
    converting them back would cost twice what the convolutions cost.
    """
    c, k = t.shape[1], kernel.numel()
    horizontal = kernel.view(1, 1, 1, k).expand(c, 1, 1, k).contiguous()
    vertical = kernel.view(1, 1, k, 1).expand(c, 1, k, 1).contiguous()
    pad_h, pad_v = ((0, k - 1), (k - 1, 0)) if adjoint else ((0, 0), (0, 0))
    t = t.contiguous(memory_format=CHANNELS_LAST)
    t = F.conv2d(t, horizontal, padding=pad_h, groups=c)
    return F.conv2d(t, vertical, padding=pad_v, groups=c).contiguous(memory_format=CHANNELS_LAST)


def _stacked_windows(parts: list[torch.Tensor], kernel: torch.Tensor, *, adjoint: bool = False) -> tuple[
        torch.Tensor, ...]:
    """:func:`_depthwise` of same-shaped batches in one call, stacked along the batch axis.

    Stacked along the batch rather than the channel axis, so that each result is a
    compact channels-last tensor (a channel slice of a channels-last tensor is
    strided: reading it touches the memory of every slice).
    """
    out = _depthwise(torch.cat(parts), kernel, adjoint=adjoint)
    return out.unflatten(0, (len(parts), parts[0].shape[0])).unbind(0)


class _Window:
    """Eq. (10) at every window position, from the local statistics of eqs. (11)-(14).

    ``lum`` is the luminance factor ``(2 mu_z mu_x + C1) / (mu_z^2 + mu_x^2 + C1)``
    and ``cs`` the contrast-structure factor ``(2 sigma_zx + C2) / (sigma_z^2 + sigma_x^2 + C2)``,
    with X's terms cached in the :class:`CleanReference`. At Z = X both are
    exactly 1 (the terms are grouped so that both sides round alike).
    """

    def __init__(self, z: torch.Tensor, ref: CleanReference) -> None:
        self.z = z = z.contiguous(memory_format=CHANNELS_LAST)  # every statistic in channels-last order
        mu_z, second_z, cross = _stacked_windows([z, z * z, z * ref.x_cl], ref.kernel)
        # Grouped as written so that at Z = X both factors are exactly 1: 2a + c and (a + a) + c round alike.
        mu_zx = mu_z * ref.mu_x
        self.mu_z = mu_z
        self.lum_den = (mu_z * mu_z + ref.mu_x_sq).add_(ref.K1**2)  # mu_z^2 + mu_x^2 + C1
        self.cs_den = (second_z - mu_z * mu_z).add_(ref.var_x).add_(ref.K2**2)  # sigma_z^2 + sigma_x^2 + C2
        self.lum = mu_zx.mul(2).add_(ref.K1**2).div_(self.lum_den)
        self.cs = (cross - mu_zx).mul_(2).add_(ref.K2**2).div_(self.cs_den)

    def ssim(self) -> torch.Tensor:
        """Eq. (10) at every window position."""
        return self.lum * self.cs


class _MeanSSIM(torch.autograd.Function):
    """Mean local SSIM per image (eqs. 10-14) with its gradient written out.

    SSIM depends on Z only through the windowed mean ``mu_z``, second moment
    ``E[z^2]`` and cross moment ``E[z x]``; the backward pass forms those three
    partial derivatives element-wise and takes them back through the window's
    adjoint in one pass (about 15 element-wise passes instead of autograd's 40).
    With ``lum = A1 / B1`` and ``cs = A2 / B2`` (:class:`_Window`):
    ``d/dE[zx] = 2 lum / B2``, ``d/dE[z^2] = -lum cs / B2`` and
    ``d/dmu_z = 2 cs (mu_x - mu_z lum) / B1 + (mu_z cs - mu_x) d/dE[zx]``.
    Runs in the input's precision even under autocast.
    """

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, ref: CleanReference) -> torch.Tensor:  # type: ignore[override]
        with torch.autocast(z.device.type, enabled=False):
            w = _Window(z, ref)
            ctx.ref, ctx.n = ref, math.prod(w.mu_z.shape[1:])  # window positions x channels (also for 0 images)
            ctx.channels_last = z.is_contiguous(memory_format=CHANNELS_LAST)  # the order the gradient goes back in
            ctx.save_for_backward(w.z, w.mu_z, w.lum, w.cs, w.lum_den, w.cs_den)
            return w.ssim().mean(dim=(1, 2, 3))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        z_cl, mu_z, lum, cs, lum_den, cs_den = ctx.saved_tensors
        ref: CleanReference = ctx.ref
        with torch.autocast(z_cl.device.type, enabled=False):
            weight = (grad * (2 / ctx.n)).view(-1, 1, 1, 1)  # 2 / n: the factor 2 of A1 and A2, the mean's 1 / n
            d_cross = (lum * weight).div_(cs_den)
            d_second = (d_cross * cs).mul_(-0.5)
            d_mu = torch.addcmul(ref.mu_x, mu_z, lum, value=-1).mul_(cs).mul_(weight).div_(lum_den)
            d_mu.addcmul_(torch.mul(mu_z, cs).sub_(ref.mu_x), d_cross)
            back_mu, back_second, back_cross = _stacked_windows([d_mu, d_second, d_cross], ref.kernel, adjoint=True)
            d_z = torch.addcmul(back_mu, z_cl, back_second, value=2).addcmul_(ref.x_cl, back_cross)
            return (d_z if ctx.channels_last else d_z.contiguous()), None  # in z's memory order


class CleanReference:
    """What the perceptual loss needs of the clean batch X, computed once.

    The clean image never changes during an attack, so its Sobel map (eq. 17)
    and its SSIM statistics (mu_x and sigma_x^2 of eqs. 11 and 13) are
    computed here once instead of every iteration. :meth:`ssim` is SSIM with
    the same 11x11 Gaussian window as piq, applied as two 1-D passes, with its
    gradient written out; it equals ``piq.ssim(z, x, downsample=False)`` in
    value and gradient (tests/test_losses.py checks both to 1e-6).
    """

    K1, K2 = 0.01, 0.03

    def __init__(self, x: torch.Tensor, *, kernel_size: int = 11, sigma: float = 1.5) -> None:
        _check_images("x", x)
        self.x = x.detach()
        self.kernel = _gaussian_1d(kernel_size, sigma, self.x)
        self._sobel: torch.Tensor | None = None
        # the stack Z's statistics use, at Z = X, so that X's come out of the same lanes of the same kernel
        self.x_cl = self.x.contiguous(memory_format=CHANNELS_LAST)
        square = self.x_cl * self.x_cl
        mu, second, _ = _stacked_windows([self.x_cl, square, square], self.kernel)
        self.mu_x = mu
        self.mu_x_sq = mu * mu
        self.var_x = second - self.mu_x_sq

    def subset(self, rows: torch.Tensor) -> CleanReference:
        """The reference of some images of the batch (rows: index or mask)."""
        ref = CleanReference.__new__(CleanReference)
        ref.x, ref.kernel = self.x[rows], self.kernel
        ref._sobel = self._sobel[rows] if self._sobel is not None else None
        ref.x_cl, ref.mu_x, ref.mu_x_sq, ref.var_x = (
            t[rows].contiguous(memory_format=CHANNELS_LAST) for t in (self.x_cl, self.mu_x, self.mu_x_sq, self.var_x))
        return ref

    @property
    def sobel(self) -> torch.Tensor:
        """``sobel_magnitude(x)``, computed on first use."""
        if self._sobel is None:
            self._sobel = sobel_magnitude(self.x)
        return self._sobel

    def ssim_map(self, z: torch.Tensor) -> torch.Tensor:
        """Local SSIM of eq. (10) at every valid window position: (N, C, H - k + 1, W - k + 1)."""
        return _Window(z, self).ssim()

    def ssim(self, z: torch.Tensor) -> torch.Tensor:
        """SSIM(Z, X), eqs. (10)-(14), per image: the mean of :meth:`ssim_map`, differentiable in Z."""
        _check_images("z", z)
        return _MeanSSIM.apply(z, self)


def perceptual_loss(
    z: torch.Tensor,
    x: torch.Tensor,
    *,
    betas: tuple[float, float, float] = (100.0, 100.0, 100.0),
    deviation: Norm = "l1",
    gradient: Norm = "l1",
    reduction: Reduction = "mean",
    l2_form: L2Form = "rms",
    reference: CleanReference | None = None,
) -> torch.Tensor:
    """Perceptual quality-preserving loss L_pqp, eq. (7).

    ``b1 * ||Z - X|| - b2 * SSIM(Z, X) + b3 * ||g(Z) - g(X)||`` with the
    deviation norm of eq. (8)/(9) and the gradient norm of eq. (18)/(19), in
    the forms ``reduction`` (l1) and ``l2_form`` (l2). Terms whose beta is zero are not computed. With a ``reference`` (the
    clean batch's cached statistics) SSIM and g(X) are not recomputed from X.

    Returns:
        (N,) loss per image.
    """
    _check_images("z", z)
    b1, b2, b3 = betas
    total = z.new_zeros(z.shape[0])
    if b1:
        total = total + b1 * deviation_loss(z, x, norm=deviation, reduction=reduction, l2_form=l2_form)
    if b2:
        total = total - b2 * (reference.ssim(z) if reference is not None else ssim_similarity(z, x))
    if b3:
        cached = reference.sobel if reference is not None else None
        total = total + b3 * gradient_loss(
            z, x, norm=gradient, reduction=reduction, l2_form=l2_form, x_gradient=cached
        )
    return total
