"""mnd book's checks before any work.

The checks run on small folders made here (no grid, no model).
"""

from __future__ import annotations

import os
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


def _results(folder: Path) -> Path:
    """A results folder with an mnd results.csv of one row (enough for the checks; no notebook reads it here)."""
    experiments.write_rows(folder / experiments.RESULTS_CSV, [{"dataset": "imagenet"}], experiments.GRID_COLUMNS)
    return folder


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


# --- a results.csv that mnd did not write ----------------------------------------------------


@pytest.mark.parametrize("run", [False, True])
def test_a_foreign_results_csv_is_refused_before_any_notebook(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: None, run: bool) -> None:
    results = tmp_path / "results"
    results.mkdir()
    foreign = results / experiments.RESULTS_CSV
    foreign.write_text("name,score\nalice,3\n")
    argv = ["book", "--preset", "tiny", "--results", str(results), "--out", str(tmp_path / "out"),
            "--source", str(tmp_path / "source"), "--quiet"]
    assert main(argv + ([] if run else ["--no-run"])) == 2
    line = _error_line(capsys)
    assert line.startswith(f"mnd: error: {foreign}: exists but is not an mnd results file")
    assert foreign.read_text() == "name,score\nalice,3\n" and sorted(os.listdir(results)) == ["results.csv"]
    assert sorted(os.listdir(tmp_path)) == ["results"]  # neither the book source nor the build folder made


def test_no_run_needs_result_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: None) -> None:
    results = tmp_path / "results"
    argv = ["book", "--preset", "tiny", "--no-run", "--results", str(results), "--source", str(tmp_path / "s")]
    assert main(argv) == 2
    assert _error_line(capsys).startswith(f"mnd: error: {results}: no results.csv here")
    results.mkdir()
    experiments.write_rows(results / experiments.RESULTS_CSV, [], experiments.GRID_COLUMNS)  # the header only
    assert main(argv) == 2
    assert _error_line(capsys) == (f"mnd: error: {results / 'results.csv'}: holds no result rows: run without "
                                   "--no-run first (or give --results)")
