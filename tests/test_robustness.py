"""Sharing transforms (real Pillow JPEG 4:2:0 and 0.5x resize) and whether an image stays adversarial after them."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin
from torch import nn

from mnd.core import robustness
from mnd.data.imageio import to_tensor
from tests.conftest import MeanAbove


@pytest.fixture(scope="module")
def small_photos() -> torch.Tensor:
    """Two real photos (chelsea, coffee), cut to 96x128, as a batch in [0, 1]."""
    import skimage.data

    crops = [to_tensor(p[100:196, 150:278]) for p in (skimage.data.chelsea(), skimage.data.coffee())]
    return torch.stack(crops)


def _on_grid(t: torch.Tensor) -> bool:
    return bool(torch.equal(t, (t * 255).round() / 255)) and float(t.min()) >= 0 and float(t.max()) <= 1


def test_jpeg_bytes_use_4_2_0_subsampling_at_the_quality(small_photos):
    for quality in (95, 85, 75):
        data = robustness.jpeg_bytes(small_photos[0], quality)
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG" and im.size == (128, 96)
            assert JpegImagePlugin.get_sampling(im) == robustness.CHROMA_420 == 2
            assert "exif" not in im.info and "icc_profile" not in im.info


def test_jpeg_transforms_are_lossy_8_bit_and_worse_at_lower_quality(small_photos):
    errors = []
    for name in ("jpeg95", "jpeg85", "jpeg75"):
        out = robustness.TRANSFORMS[name](small_photos)
        assert out.shape == small_photos.shape and out.dtype == torch.float32 and _on_grid(out)
        errors.append(float((out - small_photos).abs().mean()))
    assert 0 < errors[0] < errors[1] < errors[2] < 0.05


def test_jpeg_equals_decoding_pillows_own_encoding(small_photos):
    """The transform is exactly what a viewer of Pillow's JPEG file sees."""
    data = robustness.jpeg_bytes(small_photos[1], 75)
    with Image.open(io.BytesIO(data)) as im:
        decoded = to_tensor(np.asarray(im.convert("RGB")))
    assert torch.equal(robustness.jpeg(small_photos[1:], 75)[0], decoded)


def test_resize_keeps_the_size_blurs_detail_and_keeps_flat_images(small_photos):
    out = robustness.TRANSFORMS["resize50"](small_photos)
    assert out.shape == small_photos.shape and _on_grid(out)
    assert 0 < float((out - small_photos).abs().mean()) < 0.1
    odd = robustness.resize(small_photos[:, :, :95, :127], 0.5)
    assert odd.shape[-2:] == (95, 127)
    flat = torch.full((1, 3, 20, 30), 100 / 255)
    assert torch.equal(robustness.resize(flat, 0.5), flat)


def test_bad_parameters_are_refused():
    x = torch.zeros(1, 3, 8, 8)
    for quality in (0, 101, 75.0, True):
        with pytest.raises(ValueError, match="quality"):
            robustness.jpeg(x, quality)  # type: ignore[arg-type]
    for scale in (0, 1, 1.5, -0.5):
        with pytest.raises(ValueError, match="scale"):
            robustness.resize(x, scale)
    with pytest.raises(ValueError, match="RGB"):
        robustness.jpeg(torch.zeros(1, 1, 8, 8), 75)


class PixelAbove(nn.Module):
    """Two classes: 0 when pixel (0, 5, 5) is above one half, else 1: fine detail that a resize removes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x[:, 0, 5, 5]
        return torch.stack([100 * (p - 0.5), torch.zeros_like(p)], dim=1)


def test_survival_follows_the_model_after_each_transform(small_photos):
    """A coarse decision (the mean) survives every transform; a one-pixel decision does not survive the resize."""
    labels = torch.tensor([1, 1])
    coarse = MeanAbove(float(small_photos.mean(dim=(1, 2, 3)).min()) - 0.02).eval()
    kept = robustness.survival(coarse, small_photos, labels, None, False)
    assert list(kept) == ["jpeg95", "jpeg85", "jpeg75", "resize50"]
    assert all(v.dtype == torch.bool and v.tolist() == [True, True] for v in kept.values())
    # the same images judged against their real class (0): no longer adversarial anywhere
    kept = robustness.survival(coarse, small_photos, torch.tensor([0, 0]), None, False)
    assert not any(v.any() for v in kept.values())
    # targeted at class 0: reached after every transform
    kept = robustness.survival(coarse, small_photos, labels, torch.tensor([0, 0]), True)
    assert all(v.all() for v in kept.values())

    spike = torch.full((1, 3, 16, 16), 0.3)
    spike[0, :, 5, 5] = 1.0
    kept = robustness.survival(PixelAbove(), spike, torch.tensor([1]), None, False)
    assert kept["resize50"].tolist() == [False]
    assert robustness.TRANSFORMS["resize50"](spike)[0, 0, 5, 5] < 0.5


def test_survival_sees_through_a_view_and_checks_its_arguments(small_photos):
    coarse = MeanAbove(0.9).eval()  # class 1 for both photos as they are (their means are below 0.9)
    assert coarse(small_photos).argmax(1).tolist() == [1, 1]
    brighter = lambda t: 0.9 + 0.1 * t  # noqa: E731 - a view that lifts the mean above the threshold
    assert (brighter(small_photos).mean(dim=(1, 2, 3)) > 0.9).all()
    kept = robustness.survival(coarse, small_photos, torch.tensor([1, 1]), None, False, view=brighter,
                               transforms={"jpeg75": robustness.TRANSFORMS["jpeg75"]})
    assert list(kept) == ["jpeg75"] and kept["jpeg75"].tolist() == [True, True]
    with pytest.raises(ValueError, match="target_label"):
        robustness.survival(coarse, small_photos, torch.tensor([1, 1]), None, True)
    with pytest.raises(ValueError, match="labels"):
        robustness.survival(coarse, small_photos, torch.tensor([1]), None, False)


def test_survival_columns_require_the_attack_to_have_succeeded():
    cols = robustness.survival_columns({"jpeg75": torch.tensor([True, False, True])}, torch.tensor([True, True, False]))
    assert cols == [{"jpeg75": True}, {"jpeg75": False}, {"jpeg75": False}]
