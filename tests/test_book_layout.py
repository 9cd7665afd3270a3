"""Every built page at 1280 px in headless Chromium: no table wider than its column, no text under 10 pt.

Builds the tiny book (or measures the build that ``MND_BOOK_HTML`` names, such
as a full ``make book``), screenshots every page (:mod:`tests.book_layout`) and
fails on what does not fit. Skips, saying why, without Chromium or Playwright.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import book_layout

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(request: pytest.FixtureRequest) -> tuple[Path, Path]:
    """(the HTML folder, the results folder) of the tiny book, or of the build ``MND_BOOK_HTML`` names (its results
    folder in ``MND_BOOK_RESULTS``)."""
    html = os.environ.get("MND_BOOK_HTML")
    if html:
        return Path(html), Path(os.environ.get("MND_BOOK_RESULTS", html))
    tiny = request.getfixturevalue("tiny_book")  # built once for this file and tests/test_notebooks.py
    return tiny["report"].index.parent, tiny["root"] / "results"


@pytest.fixture(scope="module")
def layout(built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> list[book_layout.PageLayout]:
    pytest.importorskip("playwright", reason="Playwright for Python is not installed (pip install -e '.[test]')")
    if book_layout.chromium() is None:
        pytest.skip(f"no Chromium found (looked at {', '.join(book_layout.CHROMIUM)} and PATH)")
    return book_layout.measure(built[0], tmp_path_factory.mktemp("layout") / "shots")


def test_no_figure_text_is_under_10_pt(built: tuple[Path, Path]) -> None:
    from PIL import Image

    from mnd.book import figures

    found = sorted(built[1].rglob("figures/*.png"))
    assert len(found) >= 5
    sizes = {p.name: float(Image.open(p).text[figures.SMALLEST_TEXT]) for p in found}
    small = {name: size for name, size in sizes.items() if size < 10.0}
    assert not small, small


def test_every_page_was_screenshot(layout: list[book_layout.PageLayout]) -> None:
    assert len(layout) >= 5
    assert all(p.screenshot.stat().st_size > 10_000 for p in layout)


def test_no_table_is_wider_than_its_column(layout: list[book_layout.PageLayout]) -> None:
    wide = [(p.page, t["width"], t["column"], t["caption"]) for p in layout for t in p.wide_tables]
    assert not wide, wide


def test_no_text_is_under_10_pt(layout: list[book_layout.PageLayout]) -> None:
    small = [(p.page, t["px"], t["text"]) for p in layout for t in p.small_text]
    assert not small, small[:20]


def test_the_measure_sees_a_wide_table_and_small_text(tmp_path: Path) -> None:
    pytest.importorskip("playwright", reason="Playwright for Python is not installed (pip install -e '.[test]')")
    if book_layout.chromium() is None:
        pytest.skip(f"no Chromium found (looked at {', '.join(book_layout.CHROMIUM)} and PATH)")
    html = tmp_path / "html"
    html.mkdir()
    cells = "".join(f"<td>column {k} with a long header</td>" for k in range(30))
    (html / "page.html").write_text(
        "<html><body><main><article style='width:600px'><p>fine</p><p style='font-size:11px'>tiny</p>"
        f"<div style='overflow-x:auto'><table><caption>too wide</caption><tr>{cells}</tr></table></div>"
        "</article></main></body></html>")
    (found,) = book_layout.measure(html, tmp_path / "shots")
    assert [t["caption"] for t in found.wide_tables] == ["too wide"] and found.wide_tables[0]["column"] == 600
    assert [t["text"] for t in found.small_text] == ["tiny"]
