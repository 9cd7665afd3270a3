"""``mnd attack`` with the methods and the margin beyond the paper."""

from __future__ import annotations

import csv
import math

import pytest
import skimage.data
import torch
from PIL import Image

from mnd.cli.main import main
from mnd.core import min_anchors
from mnd.data.imageio import load_rgb, to_tensor
from mnd.experiments.rows import COLUMNS


@pytest.fixture
def coffee(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(skimage.data.coffee()).save(folder / "coffee.png")
    return folder


def _rows(out):
    with (out / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def _last_error(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_margin_and_anchor_options_are_checked_first(coffee, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["attack", str(coffee), "--margin", "-1", "--out", str(out), "--quiet"]) == 2
    assert _last_error(capsys) == "mnd: error: --margin: must be a number >= 0, got -1.0"
    assert main(["attack", str(coffee), "--method", "ddn", "--max-iter", "5", "--out", str(out)]) == 2
    assert _last_error(capsys).startswith("mnd: error: --max-iter: does not apply to the anchor 'ddn'")
    assert main(["attack", str(coffee), "--method", "fgsm_min", "--out", str(out)]) == 2
    assert "unknown method 'fgsm_min'" in _last_error(capsys)
    assert not out.exists()


@pytest.mark.slow
def test_attack_with_ddn_writes_an_adversarial_png(coffee, tmp_path, effnet, capsys, monkeypatch, one_thread):
    pytest.importorskip("adv_lib", reason="adversarial-library is installed from requirements-advlib.txt")
    monkeypatch.setitem(min_anchors.BUDGETS, "ddn", {"steps": 10})  # the default 100 takes half a minute on a CPU
    out = tmp_path / "out"
    code = main(["attack", str(coffee), "--method", "ddn", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr()
    (row,) = _rows(out)
    assert list(row) == COLUMNS
    assert row["method"] == "ddn" and row["success"] == "True" and row["iterations"] == "10"
    assert row["margin"] == "0" and row["eps"] == ""
    assert 0 < float(row["ms_ssim"]) <= 1 and float(row["ciede2000"]) > 0
    png = to_tensor(load_rgb(out / "coffee.png").pixels)[None]
    with torch.no_grad():
        assert effnet(png).argmax(1).item() == int(row["adv_label"]) != int(row["clean_label"])


@pytest.mark.slow
def test_attack_with_a_margin_meets_it_on_the_saved_png(coffee, tmp_path, effnet, capsys, one_thread):
    out = tmp_path / "out"
    code = main(["attack", str(coffee), "--margin", "1", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr()
    (row,) = _rows(out)
    assert row["margin"] == "1" and row["success"] == "True"
    png = to_tensor(load_rgb(out / "coffee.png").pixels)[None]
    with torch.no_grad():
        logits = effnet(png)[0]
    true = int(row["clean_label"])
    others = torch.cat([logits[:true], logits[true + 1:]])
    assert others.max().item() - logits[true].item() >= 1.0
    assert math.isfinite(float(row["haarpsi"]))
