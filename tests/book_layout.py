"""Screenshots of a built book at 1280 px in headless Chromium, and what does not fit.

For every HTML page of a Jupyter Book build: a full-page PNG, the tables wider
than the article column (clipped or scrolled), the text smaller than 10 pt
(13.33 CSS px), and each figure's scale (shown width / its own width).

Run by hand: ``python tests/book_layout.py <html folder> <screenshot folder>``.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

WIDTH = 1280
"""The viewport width (CSS px)."""

MIN_TEXT_PX = 10 * 96 / 72
"""10 pt in CSS px."""

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
"""Where a system Chromium is looked for (Playwright's own browser download is not used)."""

_MEASURE = """
() => {
  const column = document.querySelector('article') || document.querySelector('main') || document.body;
  const limit = column.getBoundingClientRect().width;
  const tables = [];
  for (const t of column.querySelectorAll('table')) {
    const w = Math.max(t.scrollWidth, t.getBoundingClientRect().width);
    if (w > limit + 1) tables.push({width: Math.round(w), column: Math.round(limit),
                                     caption: (t.caption ? t.caption.innerText : t.innerText).slice(0, 80)});
  }
  const small = [];
  const walker = document.createTreeWalker(column, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.textContent.trim()) continue;
    const el = node.parentElement;
    const style = getComputedStyle(el);
    if (style.display === 'none' || style.visibility === 'hidden' || el.closest('.toggle-hidden, details:not([open])')) continue;
    const rect = el.getBoundingClientRect();
    if (rect.width === 0 || rect.height === 0) continue;
    const px = parseFloat(style.fontSize);
    if (px < %(min)f) small.push({px: px, text: node.textContent.trim().slice(0, 60)});
  }
  const figures = [];
  for (const img of column.querySelectorAll('img')) {
    if (img.naturalWidth) figures.push({src: img.getAttribute('src').slice(0, 60),
                                        scale: img.getBoundingClientRect().width / img.naturalWidth});
  }
  return {column: limit, tables: tables, small: small, figures: figures};
}
""" % {"min": MIN_TEXT_PX - 0.01}


@dataclass
class PageLayout:
    """What one page measured."""

    page: str
    screenshot: Path
    column: float
    wide_tables: list[dict] = field(default_factory=list)
    small_text: list[dict] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)


def chromium() -> str | None:
    """A system Chromium, or None."""
    for path in CHROMIUM:
        if Path(path).exists():
            return path
    return shutil.which("chromium")


def pages(html: Path) -> list[Path]:
    """The book's pages (not Sphinx's search and index pages)."""
    skip = {"search.html", "genindex.html", "py-modindex.html"}
    return sorted(p for p in html.rglob("*.html") if p.name not in skip and "_static" not in p.parts)


def measure(html: str | Path, shots: str | Path, executable: str | None = None) -> list[PageLayout]:
    """Open every page at :data:`WIDTH` px, screenshot it into ``shots`` and measure it."""
    from playwright.sync_api import sync_playwright  # the test extra

    html, shots = Path(html), Path(shots)
    shots.mkdir(parents=True, exist_ok=True)
    out = []
    with sync_playwright() as play:
        browser = play.chromium.launch(executable_path=executable or chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": WIDTH, "height": 900})
        for path in pages(html):
            name = path.relative_to(html).as_posix()
            page.goto(path.resolve().as_uri())
            page.wait_for_load_state("load")
            shot = shots / (name.replace("/", "__").removesuffix(".html") + ".png")
            page.screenshot(path=str(shot), full_page=True)
            got = page.evaluate(_MEASURE)
            out.append(PageLayout(name, shot, got["column"], got["tables"], got["small"], got["figures"]))
        browser.close()
    return out


if __name__ == "__main__":
    found = measure(sys.argv[1], sys.argv[2])
    print(json.dumps([{**vars(p), "screenshot": str(p.screenshot)} for p in found], indent=1))
