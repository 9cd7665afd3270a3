"""Differentiable stand-ins of the sharing transforms and expectation over transformation."""

from __future__ import annotations

import pytest
import skimage.data
import torch

from mnd.core import eot, robustness
from mnd.data.imageio import to_tensor


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    return to_tensor(skimage.data.chelsea())[None]


@pytest.mark.parametrize("quality", [95, 75])
def test_the_jpeg_stand_in_is_close_to_pillows_jpeg(photo: torch.Tensor, quality: int) -> None:
    real = robustness.jpeg(photo, quality)
    standin = eot.jpeg_standin(photo, quality)
    gap = float((standin - real).abs().mean())
    assert gap < 1.6 / 255  # measured 0.78 (q95) and 1.12 (q75) levels
    assert gap < 0.6 * float((photo - real).abs().mean())  # much closer to the real JPEG than the photo is


def test_the_resize_stand_in_is_close_to_pillows_resize(photo: torch.Tensor) -> None:
    real = robustness.resize(photo, 0.5)
    gap = float((eot.resize_standin(photo, 0.5) - real).abs().mean())
    assert gap < 0.8 / 255 and gap < 0.2 * float((photo - real).abs().mean())  # measured 0.37 levels


def test_stand_ins_pass_gradients_to_every_pixel_region() -> None:
    x = torch.rand(1, 3, 32, 48, requires_grad=True)
    (eot.jpeg_standin(x, 75).sum() + eot.resize_standin(x, 0.5).sum()).backward()
    assert x.grad is not None and float(x.grad.abs().mean()) > 0.1


def test_draws_stay_around_the_target_and_repeat_with_the_seed() -> None:
    g = torch.Generator().manual_seed(3)
    qualities = [eot.StandIn("jpeg", 75).draw(g) for _ in range(200)]
    scales = [eot.StandIn("resize", 0.5).draw(g) for _ in range(200)]
    assert 65 <= min(qualities) < 68 and 82 < max(qualities) <= 85
    assert 0.45 <= min(scales) < 0.46 and 0.54 < max(scales) <= 0.55
    again = torch.Generator().manual_seed(3)
    assert eot.StandIn("jpeg", 75).draw(again) == qualities[0]


def test_expectation_averages_logits_over_the_image_and_the_draws() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))
    standins = [eot.StandIn("jpeg", 75), eot.StandIn("resize", 0.5)]
    expectation = eot.Expectation(model, standins, samples=2, seed=5)
    z = torch.rand(2, 3, 16, 16, requires_grad=True)
    logits = expectation(z)
    g = torch.Generator().manual_seed(5)
    expected = model(z)
    for s in standins:
        for _ in range(2):
            expected = expected + model(s.apply(z, s.draw(g)))
    torch.testing.assert_close(logits, expected / 5)
    logits.sum().backward()
    assert z.grad is not None
    with torch.no_grad():  # a success check sees the image itself, never a stand-in
        torch.testing.assert_close(expectation(z), model(z))
    with pytest.raises(ValueError, match="samples"):
        eot.Expectation(model, standins, samples=0)
