from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # started as a background job, which ignores SIGINT (and so would every child): the Ctrl-C tests need it
    signal.signal(signal.SIGINT, signal.default_int_handler)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures" / "dlib_face"
needs_fixtures = pytest.mark.skipif(
    not (FIXTURES / "fixtures.json").exists(),
    reason=f"dlib reference fixtures not found at {FIXTURES} (the checkout's sibling folder shared/)",
)


def shared_path(*parts: str) -> Path:
    """A path in the shared material beside the checkout, or skip the test."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared material not found at {path} (it lives beside the checkout, never in it)")
    return path


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op torch thread: the small models here gain nothing from more, and
    on a busy 2-core machine torch's thread pool spins (a 15 ms forward pass took 1 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class MeanAbove(nn.Module):
    """Two classes: 0 when the mean pixel is above ``threshold`` (logit 100 x distance), else 1."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = nn.Parameter(torch.tensor(threshold), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([100 * (m - self.threshold), torch.zeros_like(m)], dim=1)


class Linear(nn.Module):
    """An analytic classifier: logits = W . flatten(x) + b."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


@pytest.fixture
def linear_model() -> Linear:
    """Three classes over 3x16x16 images with a known geometry; seeded."""
    g = torch.Generator().manual_seed(0)
    d = 3 * 16 * 16
    weight = torch.randn(3, d, generator=g)
    return Linear(weight, torch.zeros(3)).eval()


@pytest.fixture
def images() -> torch.Tensor:
    """Four smooth 8-bit 3x16x16 images in [0, 1]."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=16, mode="bilinear", align_corners=False)
    return (x.clamp(0.05, 0.95) * 255).round() / 255


@pytest.fixture(scope="session")
def effnet():
    from mnd import models

    return models.load("efficientnet_lite0")


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    import skimage.data

    return {"chelsea": skimage.data.chelsea(), "coffee": skimage.data.coffee()}


@pytest.fixture(scope="session")
def tiny_book(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny preset's book, built once for every test that reads it (a build takes minutes):
    ``root`` (results/, source/, out/ under it), ``preset`` and the build's ``report``. Read it, never change it."""
    from mnd import book, experiments

    root = tmp_path_factory.mktemp("book")
    preset = experiments.load_preset("tiny")
    report = book.build(preset, results=root / "results", out=root / "out", source=root / "source",
                        progress=False, log=lambda line: None)
    return {"root": root, "preset": preset, "report": report}
