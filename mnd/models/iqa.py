"""Quality metrics that need downloaded weights: LPIPS and DISTS (piq), behind the offline rule.

The weight-free metrics live in :mod:`mnd.core.metrics`. LPIPS and DISTS
compare deep VGG16 features, so they need torchvision's VGG16 ImageNet weights
and piq's learned layer weights: three files in torch hub's cache
(:data:`FILES`). :func:`load_weighted_metric` fetches a missing file with
:func:`mnd.models.weights.hub_checkpoint` (never when ``MND_OFFLINE`` is set;
the error says where to put the file), so piq, which looks in the same cache,
never downloads anything itself. The packaged paper preset asks for them
(``weighted_metrics``); the offline book and the tests never do.

>>> sorted(FILES)
['dists', 'lpips']
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from mnd.errors import InputError, ModelUnavailableError
from mnd.models.weights import hub_checkpoint, hub_file

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
"""torchvision's VGG16 ImageNet weights (the features both metrics compare)."""

LPIPS_URL = "https://github.com/photosynthesis-team/photosynthesis.metrics/releases/download/v0.4.0/lpips_weights.pt"
"""piq 0.8's LPIPS layer weights (piq.LPIPS._weights_url)."""

DISTS_URL = "https://github.com/photosynthesis-team/piq/releases/download/v0.4.1/dists_weights.pt"
"""piq 0.8's DISTS alpha/beta weights (piq.DISTS._weights_url)."""

FILES: dict[str, tuple[str, ...]] = {"lpips": (VGG16_URL, LPIPS_URL), "dists": (VGG16_URL, DISTS_URL)}
"""The weight files each metric needs, by URL; each is cached under its file name."""

WEIGHTED_METRICS: tuple[str, ...] = tuple(FILES)
"""The metrics a preset's ``weighted_metrics`` may name; both are distances (lower is better)."""

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_names(names: list[str] | tuple[str, ...], where: str) -> tuple[str, ...]:
    """The names, checked against :data:`WEIGHTED_METRICS`."""
    unknown = [n for n in names if n not in WEIGHTED_METRICS]
    if unknown:
        raise InputError(where, f"unknown weighted metric(s) {unknown}; known: {', '.join(WEIGHTED_METRICS)}")
    return tuple(names)


def cached(name: str) -> bool:
    """Whether every file metric ``name`` needs is in torch hub's cache (nothing to download)."""
    return all(hub_file(Path(url).name).exists() for url in FILES[name])


def fetch(name: str) -> None:
    """Make sure the files of metric ``name`` are cached: download each missing one (hash-checked where its name
    carries one), or raise :class:`ModelUnavailableError` naming the file and where it goes."""
    for url in FILES[name]:
        hub_checkpoint(url, Path(url).name)


def load_weighted_metric(name: str, device: str | torch.device = "cpu") -> Metric:
    """``name`` (``"lpips"`` or ``"dists"``) as a function of two (N, 3, H, W) batches in [0, 1] -> (N,) distances.

    Raises:
        InputError: an unknown name.
        ModelUnavailableError: a weight file is missing and cannot be downloaded (or ``MND_OFFLINE`` is set).
    """
    check_names([name], "weighted_metrics")
    fetch(name)
    import piq  # imported here: the module is small, but its perceptual classes build VGG16 at construction

    try:
        module = (piq.LPIPS(reduction="none") if name == "lpips" else piq.DISTS(reduction="none")).to(device).eval()
    except Exception as exc:  # a cached file that does not load
        raise ModelUnavailableError(f"{name}: could not build the metric from the cached weights ({exc})") from exc

    @torch.no_grad()
    def measure(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return module(x.to(device).float().clamp(0, 1), y.to(device).float().clamp(0, 1)).flatten().cpu()

    return measure
