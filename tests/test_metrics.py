from __future__ import annotations

import math

import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from mnd.book import mos
from mnd.core import metrics
from mnd.core.metrics import sample_std


def _pair():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 3, 24, 24, generator=g) * 255).round() / 255
    y = ((x + torch.randn(2, 3, 24, 24, generator=g) * 3 / 255).clamp(0, 1) * 255).round() / 255
    return y, x


def test_psnr_matches_skimage_and_inf_for_identical():
    y, x = _pair()
    got = metrics.psnr(y, x)
    for i in range(2):
        ref = peak_signal_noise_ratio(x[i].numpy(), y[i].numpy(), data_range=1.0)
        assert got[i].item() == pytest.approx(ref, abs=1e-3)
    assert math.isinf(metrics.psnr(x, x)[0].item())


def test_ssim_is_one_for_identical_and_lower_otherwise():
    y, x = _pair()
    assert metrics.ssim(x, x).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    got = metrics.ssim(y, x)
    assert (got < 1.0 - 1e-4).all()
    from skimage.metrics import structural_similarity

    for i in range(2):
        ref = structural_similarity(
            y[i].permute(1, 2, 0).numpy(), x[i].permute(1, 2, 0).numpy(),
            channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
        )
        assert got[i].item() == pytest.approx(ref, abs=1e-5)


def test_changed_ratio_counts_8bit_changes_per_channel_value():
    x = torch.zeros(1, 3, 4, 4)
    y = x.clone()
    y[0, 1, 0, :] = 1 / 255  # four values in one channel
    y[0, 2, 3, 3] = 0.4 / 255  # below half a level: not a change in 8 bits
    assert metrics.changed_ratio(y, x).item() == pytest.approx(4 / 48)


def test_difference_maps_are_normalized_per_channel():
    y, x = _pair()
    maps = metrics.difference_maps(y, x)
    assert maps.dtype == torch.uint8 and maps.shape == x.shape
    assert (maps.flatten(2).amax(2) == 255).all()
    assert metrics.difference_maps(x, x).max().item() == 0


def test_success_rate_excludes_not_attacked():
    s = torch.tensor([True, False, True, True])
    a = torch.tensor([True, True, False, True])
    assert metrics.success_rate(s, a) == pytest.approx(2 / 3)
    assert math.isnan(metrics.success_rate(s, torch.zeros(4, dtype=torch.bool)))


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="shape"):
        metrics.psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 5, 4))


def test_sample_std_is_the_n_minus_1_deviation_and_nan_when_undefined():
    assert metrics.sample_std([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == pytest.approx(math.sqrt(32 / 7))
    assert metrics.sample_std([1.0, 3.0]) == pytest.approx(math.sqrt(2.0))
    for undefined in ([], [5.0], [1.0, math.inf], [1.0, math.nan]):
        assert math.isnan(metrics.sample_std(undefined)), undefined
    assert metrics.sample_mean([1.0, 2.0, 6.0]) == pytest.approx(3.0)
    assert math.isnan(metrics.sample_mean([])) and math.isinf(metrics.sample_mean([1.0, math.inf]))


def test_tables_and_mos_share_the_one_std():
    assert sample_std is metrics.sample_std and sample_std is metrics.sample_std
    rows = [{"dataset": "d", "setting": "targeted", "image_id": "I1", "image": "a", "versus": "bim", "score": s}
            for s in (3, 1, 2)]
    (row, average) = mos.mos_table(rows)
    assert row["mean"] == pytest.approx(2.0) and row["std"] == pytest.approx(1.0) and row["n"] == 3
    assert average["image_id"] == "Average" and math.isnan(average["std"])
