"""mnd book's checks before any work.

The checks run on small folders made here (no grid, no model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mnd import experiments
from mnd.cli.main import main


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Running the grid or a notebook fails the test: everything here must be refused before."""
    import papermill

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("work started before the input was refused")

    monkeypatch.setattr(experiments, "run_grid", forbidden)
    monkeypatch.setattr(papermill, "execute_notebook", forbidden)


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnd: error: "), captured.err
    return lines[0]


# --- the device ------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["tpu", "cuda:99"])
def test_a_device_this_machine_lacks_is_one_line_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: None, device: str) -> None:
    results = tmp_path / "results"
    code = main(["book", "--preset", "tiny", "--set", f"device={device}", "--results", str(results),
                 "--out", str(tmp_path / "out"), "--source", str(tmp_path / "source"), "--quiet"])
    assert code == 2
    line = _error_line(capsys)
    assert line.startswith("mnd: error: --set device: ") and device.split(":")[0] in line
    assert not list(tmp_path.iterdir())  # no folder made
    # a shard is checked the same way
    assert main(["book", "--preset", "tiny", "--set", f"device={device}", "--results", str(results),
                 "--shard", "1/2", "--quiet"]) == 2
    assert _error_line(capsys).startswith("mnd: error: --set device: ")


def test_a_device_in_the_preset_file_names_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: None) -> None:
    preset = tmp_path / "mine.toml"
    text = (Path(experiments.__file__).parents[1] / "presets" / "book" / "tiny.toml").read_text()
    preset.write_text(text.replace('device = "cpu"', 'device = "tpu"'))
    assert main(["book", "--preset", str(preset), "--results", str(tmp_path / "r"), "--quiet"]) == 2
    assert _error_line(capsys) == (f"mnd: error: {preset}: device: not a device: 'tpu' "
                                   "(use cpu, cuda, cuda:N or mps)")
