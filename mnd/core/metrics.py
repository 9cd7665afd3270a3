"""Image-quality and attack metrics (section IV-A-3 and IV-D).

PSNR and SSIM come from piq (on [0, 1] images, data range 1); what is new
here is the pixel-change ratio and the difference maps of Fig. 4. Beyond the
paper, weight-free quality measures: MS-SSIM, HaarPSI, VIF, GMSD and FSIM
from piq, and the mean CIEDE2000 colour difference from scikit-image. Every
function takes batches and returns one value per image unless noted.

Size limits (piq's): MS-SSIM needs both sides at least 161 px (its 11 px
window at the fifth scale, 10 * 2**4 + 1), so the 150 px dlib face chips and
the 160 px FaceNet crops get NaN; VIF needs 41 px and HaarPSI 16 px. Images
below a limit get NaN for that measure, never an error. LPIPS and DISTS are
not here: they need downloaded network weights.
:func:`sample_mean` and :func:`sample_std` summarize lists of per-image
values (and of MOS scores) for the tables.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

import numpy as np
import piq
import torch
from skimage import color


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


MIN_SIZE: dict[str, int] = {"ms_ssim": 161, "haarpsi": 16, "vif": 41, "gmsd": 1, "fsim": 1}
"""The smallest side, in pixels, each piq measure accepts (below it the measure is NaN)."""


def _piq_per_image(name: str, measure: Callable[..., torch.Tensor], adv: torch.Tensor,
                   clean: torch.Tensor) -> torch.Tensor:
    """``measure(adv, clean)`` per image (data range 1), NaN for images smaller than :data:`MIN_SIZE`."""
    a, c = _prepare(adv, clean)
    if min(a.shape[-2:]) < MIN_SIZE[name]:
        return torch.full((a.shape[0],), math.nan)
    return measure(a, c, data_range=1.0, reduction="none")


def ms_ssim(adv: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Multi-scale SSIM per image (piq, five scales); NaN below 161 px a side."""
    return _piq_per_image("ms_ssim", piq.multi_scale_ssim, adv, clean)


def haarpsi(adv: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """HaarPSI per image (piq; 1 for identical images); NaN below 16 px a side."""
    return _piq_per_image("haarpsi", piq.haarpsi, adv, clean)


def vif(adv: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Pixel-domain visual information fidelity per image (piq's ``vif_p``); NaN below 41 px a side."""
    return _piq_per_image("vif", piq.vif_p, adv, clean)


def gmsd(adv: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude similarity deviation per image (piq; 0 for identical images, lower is better)."""
    return _piq_per_image("gmsd", piq.gmsd, adv, clean)


def fsim(adv: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Feature similarity index with colour (FSIMc) per image (piq; 1 for identical images)."""
    return _piq_per_image("fsim", piq.fsim, adv, clean)


def ciede2000(adv: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Mean CIEDE2000 colour difference per image (scikit-image, on CIELAB of the sRGB values; 0: identical).

    >>> x = torch.zeros(1, 3, 2, 2); y = x.clone(); y[0, 0] = 1.0  # black against pure red
    >>> round(ciede2000(y, x).item(), 1)
    50.4
    """
    a, c = _prepare(adv, clean)
    out = []
    for one, ref in zip(a, c):
        lab_a = color.rgb2lab(one.permute(1, 2, 0).double().numpy())
        lab_c = color.rgb2lab(ref.permute(1, 2, 0).double().numpy())
        out.append(float(np.mean(color.deltaE_ciede2000(lab_c, lab_a))))
    return torch.tensor(out, dtype=torch.float64)


QUALITY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ms_ssim": ms_ssim, "haarpsi": haarpsi, "vif": vif, "gmsd": gmsd, "fsim": fsim, "ciede2000": ciede2000,
}
"""The quality measures beyond the paper's PSNR and SSIM that every result row carries (name -> function)."""


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
