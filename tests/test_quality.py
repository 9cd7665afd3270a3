"""The quality measures beyond PSNR and SSIM, and the result rows that carry them (not in the paper)."""

from __future__ import annotations

import csv
import math

import numpy as np
import piq
import pytest
import skimage.data
import torch
from skimage import color

from mnd.core import metrics
from mnd.core.attack import AttackResult
from mnd.experiments import rows as rows_mod


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """The astronaut at 192 px (MS-SSIM's 161 px minimum passed) and a copy with a few levels of noise."""
    x = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=192, mode="area").mul(255).round().div(255)
    g = torch.Generator().manual_seed(0)
    y = (x + torch.randint(-3, 4, x.shape, generator=g) / 255).clamp(0, 1)
    return y, x


@pytest.mark.parametrize(("name", "reference"), [
    ("ms_ssim", piq.multi_scale_ssim), ("haarpsi", piq.haarpsi), ("vif", piq.vif_p), ("gmsd", piq.gmsd),
    ("fsim", piq.fsim),
])
def test_piq_measures_are_piqs(name, reference, pair):
    y, x = pair
    ours = metrics.QUALITY[name](y, x)
    assert ours.shape == (1,)
    assert torch.equal(ours, reference(y, x, data_range=1.0, reduction="none"))
    same = metrics.QUALITY[name](x, x).item()
    assert same == pytest.approx(0.0 if name == "gmsd" else 1.0, abs=1e-4)  # identical images
    assert (ours.item() > same) if name == "gmsd" else (ours.item() < same)  # the noise costs quality


def test_ciede2000_is_scikit_images_mean_on_lab(pair):
    y, x = pair
    want = color.deltaE_ciede2000(color.rgb2lab(x[0].permute(1, 2, 0).double().numpy()),
                                  color.rgb2lab(y[0].permute(1, 2, 0).double().numpy())).mean()
    assert metrics.ciede2000(y, x).item() == pytest.approx(float(want), rel=1e-9)
    assert metrics.ciede2000(x, x).item() == 0.0


@pytest.mark.parametrize("side", [150, 160])
def test_face_chips_have_no_ms_ssim_but_the_other_measures(pair, side):
    y, x = (t[..., :side, :side] for t in pair)
    assert math.isnan(metrics.ms_ssim(y, x).item())
    with pytest.raises(ValueError, match="161x161"):  # piq's own limit, which MIN_SIZE mirrors
        piq.multi_scale_ssim(y, x, data_range=1.0)
    for name in ("haarpsi", "vif", "gmsd", "fsim", "ciede2000"):
        assert math.isfinite(metrics.QUALITY[name](y, x).item())


def _result(adv: torch.Tensor, margin: float, eps) -> AttackResult:
    n = len(adv)
    zeros, yes = torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.bool)
    return AttackResult(adversarial=adv, success=yes, attacked=yes,
                        iterations=torch.ones(n, dtype=torch.long), clean_label=zeros, adv_label=zeros + 1,
                        true_label=zeros, target_label=None, seconds=1.0,
                        extras={} if eps is None else {"eps": eps}, margin=margin)


def test_every_row_carries_margin_eps_and_the_quality_measures(pair, tmp_path):
    y, x = pair
    ctx = rows_mod.RowContext("bim_min", "m", False)
    (row,) = rows_mod.result_rows(_result(y, 2.0, [3 / 255]), x, ["a"], ctx)
    assert row["margin"] == 2.0 and row["eps"] == 3 / 255
    for name, measure in metrics.QUALITY.items():
        assert row[name] == float(measure(y, x)[0])
    (mnd_row,) = rows_mod.result_rows(_result(y, 0.0, None), x, ["a"], rows_mod.RowContext("mnd", "m", False))
    assert mnd_row["eps"] is None
    rows_mod.write_rows(tmp_path / "metrics.csv", [mnd_row])
    with (tmp_path / "metrics.csv").open() as handle:
        written = next(csv.DictReader(handle))
    assert written["eps"] == "" and written["margin"] == "0"


def test_old_files_stay_readable_with_the_new_columns_empty(tmp_path):
    old = rows_mod.ORIGINAL_COLUMNS
    assert old[-1] == "note" and rows_mod.COLUMNS[: len(old)] == old
    grid_old = ["dataset", "setting", *old, "attacked", "seed", "task", "max_iter"]
    row = {"dataset": "d", "setting": "targeted", "image": "a", "method": "mnd", "model": "m", "targeted": "True",
           "success": "True", "clean_label": "1", "adv_label": "2", "target_label": "2", "psnr": "50", "ssim": "0.99",
           "changed_ratio": "0.1", "iterations": "3", "seconds": "1", "note": "", "attacked": "True", "seed": "0",
           "task": "imagenet", "max_iter": "1000"}
    rows_mod.write_rows(tmp_path / rows_mod.RESULTS_CSV, [row], grid_old)
    (read,) = rows_mod.read_results(tmp_path)
    assert read["psnr"] == 50.0 and read["attacked"] is True
    for name in ("margin", "eps", *metrics.QUALITY):
        assert math.isnan(read[name])
    rows_mod.write_rows(tmp_path / "metrics.csv", [row], old)  # a metrics.csv of the version before
    assert rows_mod.read_rows(tmp_path / "metrics.csv", rows_mod.COLUMNS)[0]["psnr"] == "50"
    rows_mod.write_rows(tmp_path / "other.csv", [row], old[:5])
    with pytest.raises(Exception, match="not an mnd results file"):
        rows_mod.read_rows(tmp_path / "other.csv", rows_mod.COLUMNS)
    assert np.isnan(rows_mod._typed({"eps": ""})["eps"])
