"""Image-quality and attack metrics (section IV-A-3 and IV-D).

PSNR and SSIM come from piq (on [0, 1] images, data range 1); what is new
here is the pixel-change ratio and the difference maps of Fig. 4. Every
function takes batches and returns one value per image unless noted.
:func:`sample_mean` and :func:`sample_std` summarize lists of per-image
values (and of MOS scores) for the tables.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import piq
import torch


def _prepare(adv: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if adv.shape != clean.shape or adv.ndim != 4:
        raise ValueError(f"expected two (N, C, H, W) batches of one shape, got {tuple(adv.shape)} and {tuple(clean.shape)}")
    # piq rejects values outside [0, data_range]
    return adv.detach().float().clamp(0, 1), clean.detach().float().clamp(0, 1)


def psnr(adv: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image (piq, data range 1). Identical images give +inf.

    >>> x = torch.zeros(1, 3, 8, 8); y = x.clone(); y[..., 0, 0] = 1.0
    >>> round(psnr(y, x).item(), 2)
    18.06
    """
    a, c = _prepare(adv, clean)
    mse = (a - c).pow(2).flatten(1).mean(1)
    value = piq.psnr(a, c, data_range=1.0, reduction="none")
    return torch.where(mse == 0, torch.full_like(value, float("inf")), value)


def ssim(adv: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """SSIM per image (piq: 11x11 Gaussian window, sigma 1.5, channel mean)."""
    a, c = _prepare(adv, clean)
    return piq.ssim(a, c, data_range=1.0, reduction="none")


def changed_ratio(adv: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Ratio of deviation pixels, ``#non-zero / N`` (section IV-D-2).

    Counted on the 8-bit images over the absolute difference map of every
    channel, so N = C * H * W (the paper's "total number of pixels in the
    absolute difference map").

    >>> x = torch.zeros(1, 3, 2, 2); y = x.clone(); y[0, 0, 0, 0] = 1.0
    >>> changed_ratio(y, x).item()
    0.0833333358168602
    """
    a, c = _prepare(adv, clean)
    diff = (a * 255).round() != (c * 255).round()
    return diff.flatten(1).float().mean(1)


def difference_maps(adv: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Per-channel absolute difference maps normalized to 0..255 (Fig. 4).

    Each channel of each image is divided by its own maximum (a map that is
    all zeros stays black), then scaled to 0..255 and rounded.

    Returns:
        (N, C, H, W) uint8.
    """
    a, c = _prepare(adv, clean)
    diff = (a - c).abs()
    peak = diff.flatten(2).amax(2).clamp_min(1e-12)[..., None, None]
    return (diff / peak * 255).round().to(torch.uint8)


def success_rate(success: torch.Tensor, attacked: torch.Tensor) -> float:
    """Fraction of attacked images that became adversarial.

    ``attacked`` excludes images the model already got wrong: they are not
    free successes. Returns NaN when nothing was attacked.
    """
    n = int(attacked.sum())
    return float((success & attacked).sum()) / n if n else float("nan")


def sample_mean(values: Sequence[float]) -> float:
    """The mean of ``values``; NaN for none.

    >>> sample_mean([1.0, 2.0]), sample_mean([])
    (1.5, nan)
    """
    return statistics.fmean(values) if values else math.nan


def sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); NaN for fewer than two values or any non-finite one.

    >>> sample_std([1.0, 3.0]), sample_std([1.0]), sample_std([1.0, math.inf])
    (1.4142135623730951, nan, nan)
    """
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return math.nan
    return statistics.stdev(values)
