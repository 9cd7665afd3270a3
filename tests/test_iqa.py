"""LPIPS and DISTS: the offline rule (never a download in tests) and their way into result rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mnd import experiments
from mnd.errors import InputError, ModelUnavailableError
from mnd.models import iqa
from mnd import models
from tests.test_grid import TEST_MODEL, tiny_spec, write_preset

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_model(monkeypatch: pytest.MonkeyPatch) -> str:
    """The grid tests' tiny CNN, registered for this test."""
    monkeypatch.setitem(models.REGISTRY, TEST_MODEL, tiny_spec())
    return TEST_MODEL


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, MND_OFFLINE set, and any download attempt an error."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setenv("MND_OFFLINE", "1")

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test tried to download weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return hub


class StubDistance(torch.nn.Module):
    """Stands in for piq's LPIPS (whose VGG16 weights are not on a test machine): mean absolute difference."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        assert reduction == "none"

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - y).abs().mean(dim=(1, 2, 3))


def test_missing_weights_offline_name_the_file_and_never_download(empty_hub: Path) -> None:
    assert not iqa.cached("lpips") and not iqa.cached("dists")
    with pytest.raises(ModelUnavailableError, match=r"vgg16-397923af\.pth is not cached and MND_OFFLINE is set"):
        iqa.load_weighted_metric("lpips")
    with pytest.raises(InputError, match="unknown weighted metric"):
        iqa.load_weighted_metric("lpipps")


def test_cached_weights_are_used_without_a_download(empty_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import piq

    (empty_hub / "checkpoints").mkdir(parents=True)
    for url in iqa.FILES["lpips"]:
        torch.save({}, empty_hub / "checkpoints" / Path(url).name)
    assert iqa.cached("lpips") and not iqa.cached("dists")
    monkeypatch.setattr(piq, "LPIPS", StubDistance)
    measure = iqa.load_weighted_metric("lpips")
    x = torch.rand(2, 3, 8, 8)
    y = x.clone()
    y[1] = 1 - y[1]
    distances = measure(y, x)
    assert distances.shape == (2,) and float(distances[0]) == 0.0 and float(distances[1]) > 0.1


def test_a_preset_asks_for_them_and_the_grid_says_when_they_are_missing(tmp_path: Path, tiny_model: str,
                                                                          empty_hub: Path) -> None:
    preset = experiments.load_preset(write_preset(tmp_path, methods='["bim"]', extra='weighted_metrics = ["lpips"]'),
                                     ['settings=["non-targeted"]'])
    assert preset.weighted_metrics == ("lpips",)
    report = experiments.run_grid(preset, tmp_path / "r", progress=False)
    assert report.metrics["lpips"].startswith("not measured: vgg16-397923af.pth is not cached")
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["metrics"]["lpips"] == report.metrics["lpips"]
    rows = experiments.read_results(tmp_path / "r")
    assert rows and all(r["lpips"] != r["lpips"] for r in rows)  # NaN: not measured, never made up
    with pytest.raises(InputError, match="unknown weighted metric"):
        experiments.load_preset(write_preset(tmp_path, extra='weighted_metrics = ["psnr"]'))


def test_measured_distances_reach_the_rows(tmp_path: Path, tiny_model: str, empty_hub: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import piq

    (empty_hub / "checkpoints").mkdir(parents=True)
    for url in iqa.FILES["lpips"]:
        torch.save({}, empty_hub / "checkpoints" / Path(url).name)
    monkeypatch.setattr(piq, "LPIPS", StubDistance)
    preset = experiments.load_preset(write_preset(tmp_path, methods='["bim"]', extra='weighted_metrics = ["lpips"]'),
                                     ['settings=["non-targeted"]'])
    experiments.run_grid(preset, tmp_path / "r", progress=False)
    rows = experiments.read_results(tmp_path / "r")
    assert rows and all(0 < r["lpips"] <= 8 / 255 + 1e-6 for r in rows)  # BIM moves each value by at most 8/255
