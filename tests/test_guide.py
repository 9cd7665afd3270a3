"""The user guide's generated pages (mnd.book.guide), and the guide built with Jupyter Book, -W -n."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mnd import experiments
from mnd.book import build_html, guide
from mnd.book.pages import book_dir
from mnd.core import robustness
from mnd.errors import MndError
from mnd.experiments.protect import REPORT_COLUMNS

STATIC_GUIDE = ("install.md", "guide_book.md", "guide_study.md")


def _row(dataset: str, setting: str, image: str, method: str, success: bool, kept: dict[str, bool]) -> dict:
    return {"dataset": dataset, "setting": setting, "image": image, "method": method, "model": "m",
            "targeted": setting == "targeted", "success": success, "psnr": 50.0, "ssim": 0.99,
            **{c: kept.get(c, False) if success else False for c in robustness.TRANSFORMS}}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder: MND made 3 of 4 photos adversarial; JPEG 75 undid one, the resize two."""
    keep = {"jpeg95": True, "jpeg85": True, "jpeg75": True, "resize50": True}
    rows = [_row("imagenet", "non-targeted", "a", "mnd", True, keep),
            _row("imagenet", "non-targeted", "b", "mnd", True, {**keep, "jpeg75": False, "resize50": False}),
            _row("imagenet", "non-targeted", "c", "mnd", True, {**keep, "resize50": False}),
            _row("imagenet", "non-targeted", "d", "mnd", False, {}),
            _row("imagenet", "non-targeted", "a", "bim", True, {})]  # another method: not counted
    folder = tmp_path / "results"
    folder.mkdir()
    experiments.write_rows(folder / experiments.RESULTS_CSV, rows, experiments.GRID_COLUMNS)
    return folder


def test_every_column_of_every_result_file_is_on_the_columns_page() -> None:
    page = guide.columns_page()
    for name, columns in (("metrics.csv", experiments.COLUMNS), ("report.csv", REPORT_COLUMNS),
                          ("results.csv", experiments.GRID_COLUMNS)):
        section = page.split(f"## `{name}`")[1].split("\n## ")[0]
        assert re.findall(r"^\| `([a-z0-9_]+)` \|", section, re.M) == list(columns), name
    assert set(guide.SHARING) == set(robustness.TRANSFORMS)


def test_a_column_without_a_note_stops_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guide, "COLUMN_NOTES", {k: v for k, v in guide.COLUMN_NOTES.items() if k != "psnr"})
    assert guide.undocumented() == ["psnr"]
    with pytest.raises(MndError, match="psnr"):
        guide.columns_page()


def test_the_protect_page_says_what_this_run_measured(results: Path) -> None:
    preset = experiments.load_preset("tiny")
    page = guide.protect_page(preset, results)
    assert "MND protected 3 of 4 (75%) images" in page
    assert "after a JPEG at quality 95, 3 of 3 (100%)" in page and "after a JPEG at quality 75, 2 of 3 (67%)" in page
    assert "The weakest was a resize to half size and back: 2 of 3 protected images lost their protection" in page
    assert "| imagenet (non-targeted) | 3/4 | 3/3 | 3/3 | 2/3 | 1/3 |" in page
    for level in guide.load_strengths().values():  # the strength table comes from protect.toml
        assert f"| `{level.name}` |" in page and str(level.max_iter) in page
    assert "## On models it was not made on" in page and "checked no model besides" in page


def test_no_mnd_rows_is_said_not_divided_by_zero(tmp_path: Path) -> None:
    page = guide.protect_page(experiments.load_preset("tiny"), tmp_path)
    assert "measured nothing about sharing" in page


@pytest.mark.slow
def test_the_guide_builds_with_warnings_as_errors(results: Path, tmp_path: Path) -> None:
    """The guide's pages, static and generated, in a book of their own: jupyter-book -W -n, no broken link."""
    source = tmp_path / "source"
    source.mkdir()
    for name in STATIC_GUIDE:
        shutil.copy(book_dir() / name, source / name)
    for name, text in guide.guide_pages(experiments.load_preset("tiny"), results).items():
        (source / name).write_text(text)
    (source / "index.md").write_text("# The guide\n\nThe part \"Using mnd\" of the book.\n")
    chapters = "".join(f"      - file: {Path(n).stem}\n" for n in (*STATIC_GUIDE, *guide.GUIDE_PAGES))
    (source / "_toc.yml").write_text(f"format: jb-book\nroot: index\nparts:\n  - caption: Using mnd\n"
                                     f"    chapters:\n{chapters}")
    index = build_html(source, tmp_path / "out")
    built = index.parent
    assert {p.stem for p in built.glob("*.html")} >= {Path(n).stem for n in (*STATIC_GUIDE, *guide.GUIDE_PAGES)}
    assert "3 of 4 (75%)" in (built / "guide_protect.html").read_text()


def test_the_books_table_of_contents_has_the_guide() -> None:
    toc = (book_dir() / "_toc.yml").read_text()
    part = toc.split("caption: Using mnd")[1].split("caption:")[0]
    assert re.findall(r"file: (\S+)", part) == ["install", "guide_protect", "guide_book", "guide_study",
                                                "guide_columns"]
    assert all((book_dir() / name).is_file() for name in STATIC_GUIDE)


@pytest.mark.parametrize("command", ["", "attack", "protect", "book", "mos", "data", "models"])
def test_every_help_points_to_the_guide(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from mnd.cli.main import GUIDE_PAGES, main

    assert main([command, "--help"] if command else ["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert 'user guide: the part "Using mnd" of the book' in text
    if command in GUIDE_PAGES:
        page = GUIDE_PAGES[command].split()[0]
        assert f"this command: {page}" in text
        assert page.replace(".html", ".md") in (*guide.GUIDE_PAGES, *STATIC_GUIDE)  # a page of the guide
