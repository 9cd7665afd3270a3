"""The trade-off chapter's quality tables: every method, its success with an interval, every metric, in two halves.

The metrics are split over three tables (:data:`METRIC_GROUPS`) so that each fits
the book's column at 1280 px; a degenerate output (PSNR below 20 dB or SSIM
below 0.5, :func:`mnd.experiments.stats.usable`) is a failure and is counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mnd.book.curves import QUALITY_METRICS, _attacked, _groups, _measured, _stats, in_paper, point_label
from mnd.book.tables import html_table, pm
from mnd.experiments import stats

METRIC_GROUPS: tuple[tuple[str, ...], ...] = (("psnr", "ssim"), ("ms_ssim", "haarpsi", "vif"),
                                              ("gmsd", "fsim", "ciede2000", "lpips", "dists"))
"""Which metrics each of the quality tables shows (three, so that each fits the column at 1280 px)."""


def quality_rows(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str,
                 metrics: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every method of one data set x setting with its success (Wilson 95%), its degenerate outputs, and the
    quality metrics ``metrics`` (default all of :data:`mnd.book.curves.QUALITY_METRICS`).

    Metrics are mean ± std over all attacked images (an en dash where the run
    did not measure one). LPIPS and DISTS, which need downloaded weights, are
    left out where no method has them. ``full success`` is kept for callers;
    the HTML table leaves it out (the success column says it).
    """
    out = []
    groups = _groups(rows, dataset, setting)
    measured = {key for key in ("lpips", "dists") if any(_measured(g, key) for g in groups.values())}
    shown = [m for m in QUALITY_METRICS if (m[0] not in ("lpips", "dists") or m[0] in measured)
             and (metrics is None or m[0] in metrics)]
    for method, group in groups.items():
        attacked = _attacked(group)
        won = sum(1 for r in attacked if stats.usable(r))
        degenerate = sum(1 for r in attacked if r.get("success") and stats.is_degenerate(r.get("psnr"), r.get("ssim")))
        row: dict[str, Any] = {"method": point_label(method), "in the paper": in_paper(method),
                               "success (Wilson 95%)": stats.rate_text(won, len(attacked)),
                               "degenerate": degenerate or "", "full success": bool(attacked) and won == len(attacked)}
        for key, title, digits in shown:
            row[title] = pm(*_stats(group, key), digits)
        out.append(row)
    return out


def quality_table_html(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> str:
    """:func:`quality_rows` as one HTML table per group of :data:`METRIC_GROUPS`, each with its caption."""
    rows = list(rows)
    images = sorted({str(r["image"]) for r in rows if (r.get("dataset"), r.get("setting")) == (dataset, setting)})
    html = []
    for k, group in enumerate(METRIC_GROUPS, start=1):
        table = quality_rows(rows, dataset, setting, group)
        any_degenerate = any(r["degenerate"] for r in table)
        for row in table:
            row.pop("full success")
            if k > 1:
                row.pop("success (Wilson 95%)")
            if k != 2:  # the second table says which methods are the paper's, the first has no room for it
                row.pop("in the paper")
            if not any_degenerate or k > 1:
                row.pop("degenerate")
        caption = (f"{dataset}, {setting} ({k} of {len(METRIC_GROUPS)}): n = {len(images)} images ({', '.join(images)}); "
                   "mean ± std over all attacked images; ↑ higher is better, ↓ lower is better. "
                   + ("Success counts an output below 20 dB PSNR or 0.5 SSIM (degenerate) as a failure."
                      if k == 1 else ""))
        html.append(html_table(table, caption=caption))
    return "\n".join(html)
