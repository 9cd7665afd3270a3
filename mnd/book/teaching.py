"""The teaching figure: quality against success on the model attacked, after JPEG 75, and on an unseen model.

One figure per data set and setting, first on the trade-off chapter's page:
quality on the x-axis (PSNR in the first row, SSIM in the second), success on
the y-axis, three panels: on the model the image was made on, after JPEG
quality 75, and on a model the image was not made on (the ``unseen`` columns,
when the run checked one). Each fixed-budget anchor is a line over its budgets,
MND a line over its margins, each minimum-norm attack a point; success carries
its Wilson 95% interval; a degenerate output (:func:`mnd.experiments.stats.usable`)
counts as a failure. Plus :func:`budget_strip`: one photo at each budget of one
anchor and at MND's margins, with the amplified difference and a zoomed detail.

>>> unseen_pairs({"unseen": "a;b", "unseen_fooled": "1;0"})
[('a', True), ('b', False)]
>>> unseen_pairs({"unseen": "", "unseen_fooled": ""}) is None
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnd import experiments
from mnd.book.curves import SWEEP_EPS, SWEEP_MARGINS, base_label, curve_points, method_kind, plotted, point_label
from mnd.book import figures
from mnd.book.figures import detail_region, load_image
from mnd.experiments.methods import parse_method
from mnd.experiments.stats import truthy, usable, wilson

FONT = 11
"""Font size (pt) of the teaching figures' titles; labels use ``FONT - 1`` (10 pt)."""

WIDTH = figures.WIDTH

PANELS: tuple[tuple[str, str], ...] = (
    ("white_box", "on the model attacked"), ("jpeg75", "after JPEG 75"), ("unseen", "on an unseen model"),
)
"""The three panels: key, title."""

NO_UNSEEN = "no unseen model checked in this run"
"""What the third panel says when no row names an unseen model."""

AMPLIFY = 10
"""How much :func:`budget_strip` amplifies the difference from the clean image."""


def _split(value: Any) -> list[str]:
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()
    return [part.strip() for part in text.split(";")] if text else []


def unseen_pairs(row: Mapping[str, Any], column: str = "unseen_fooled") -> list[tuple[str, bool]] | None:
    """The (unseen model, fooled) pairs of one row, from ``unseen`` and ``column`` (``unseen_fooled`` or
    ``unseen_jpeg75``); None when the row checked no unseen model (columns absent or empty).

    Raises:
        ValueError: the two columns name different numbers of models, or a flag is not "1" or "0".
    """
    models, flags = _split(row.get("unseen")), _split(row.get(column))
    if not models:
        return None
    if len(models) != len(flags) or set(flags) - {"0", "1"}:
        raise ValueError(f"row {row.get('image')!r} {row.get('method')!r}: unseen={row.get('unseen')!r} and "
                         f"{column}={row.get(column)!r} do not pair up (one 1 or 0 per model)")
    return [(m, f == "1") for m, f in zip(models, flags)]


@dataclass(frozen=True)
class Rate:
    """Successes out of n with the Wilson 95% interval."""

    successes: int
    n: int

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.successes, self.n)


def success_rates(group: Sequence[Mapping[str, Any]]) -> dict[str, Rate | None]:
    """One method's success on its attacked rows: white box, after JPEG 75, on unseen models (None: not checked).

    A degenerate or failed output is a failure in all three; the unseen rate
    counts (image, checked model) pairs.
    """
    attacked = [r for r in group if truthy(r.get("attacked", True))]
    ok = [usable(r) for r in attacked]
    out: dict[str, Rate | None] = {
        "white_box": Rate(sum(ok), len(attacked)),
        "jpeg75": Rate(sum(good and truthy(r.get("jpeg75")) for r, good in zip(attacked, ok)), len(attacked)),
        "unseen": None,
    }
    pairs = [(good, unseen_pairs(r)) for r, good in zip(attacked, ok)]
    checked = [(good, p) for good, p in pairs if p is not None]
    if checked:
        out["unseen"] = Rate(sum(good and fooled for good, p in checked for _, fooled in p),
                             sum(len(p) for _, p in checked))
    return out


def _mean(values: Iterable[Any]) -> float:
    finite = [float(v) for v in values if v not in (None, "") and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else math.nan


def teaching_figure(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> Any:
    """The teaching figure of one data set x setting (see the module docstring); None when nothing to draw."""
    import matplotlib.pyplot as plt  # heavy: only figures need it
    from matplotlib.colors import to_hex

    rows = [r for r in rows if r.get("dataset") == dataset and r.get("setting") == setting]
    families = plotted(curve_points(rows, dataset, setting))
    if not families:
        return None
    by_method: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_method.setdefault(str(r["method"]), []).append(r)
    images = sorted({str(r["image"]) for r in rows})
    any_unseen = any(unseen_pairs(r) is not None for r in rows)
    with plt.rc_context({"font.size": FONT}):
        fig, axes = plt.subplots(2, 3, figsize=(WIDTH, 8.6), sharey=True)
        shapes = iter("DsP^vX<>*h" * 2)  # one marker shape per single-point method
        palette = [c for c in plt.rcParams["axes.prop_cycle"].by_key()["color"]
                   if to_hex(c) != "#d62728"]  # red is MND's
        colours = iter(palette * 3)
        for family, points in families.items():
            kind = method_kind(family)
            colour = "#d62728" if family == "mnd" else ("black" if kind == "minimum norm" else next(colours))
            swept = len(points) > 1
            marker = "o" if swept else next(shapes)
            rates = [success_rates(by_method[p.method]) for p in points]
            for row_index, key in enumerate(("psnr", "ssim")):
                xs = [_mean(r.get(key) for r in by_method[p.method]) for p in points]
                for col, (panel, _) in enumerate(PANELS):
                    ax = axes[row_index][col]
                    got = [(x, rate[panel]) for x, rate in zip(xs, rates) if rate[panel] is not None]
                    if not got:
                        continue
                    ys = [r.rate for _, r in got]
                    err = np.maximum(0.0, np.array([[r.rate - r.interval[0] for _, r in got],
                                                    [r.interval[1] - r.rate for _, r in got]]))
                    ax.errorbar([x for x, _ in got], ys, yerr=err, color=colour, capsize=2,
                                linestyle="-" if swept else "none", marker=marker,
                                markersize=4 if swept else 6, linewidth=2.4 if family == "mnd" else 1.2,
                                label=(point_label(family) if "@" in family else base_label(family))
                                + (f" (over {points[0].knob})" if swept else ""))
                    if swept and family in ("pgd", "mnd") and panel == "white_box" and key == "psnr":
                        ends = (got[0], got[-1]) if family == "mnd" else got  # MND's margins sit close: ends only
                        for (x, r), p in zip(got, points):
                            if (x, r) not in ends:
                                continue
                            ax.annotate(f"{p.value:g}", (x, r.rate), textcoords="offset points",
                                        xytext=(0, 17 if family == "mnd" else 6),  # two rows: MND's above PGD's
                                        ha="center", fontsize=FONT - 1, color=colour)
        for row_index, what in enumerate(("mean PSNR (dB)", "mean SSIM")):
            for col, (panel, title) in enumerate(PANELS):
                ax = axes[row_index][col]
                ax.set_ylim(-0.05, 1.24)  # room above 100% for the budget labels, inside the frame
                ax.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
                ax.grid(True, alpha=0.3)
                ax.set_xlabel(what)
                if row_index == 0:
                    ax.set_title(title, fontsize=FONT)
                if panel == "unseen" and not any_unseen:
                    ax.text(0.5, 0.5, NO_UNSEEN.replace(" in ", "\nin "), transform=ax.transAxes, ha="center",
                            va="center", fontsize=FONT - 1)
                    ax.set_xticks([])
            axes[row_index][0].set_ylabel("success (Wilson 95%)")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False, fontsize=FONT - 1)
        fig.suptitle(f"{dataset}, {setting}: n = {len(images)} images ({', '.join(images)}); "
                     "labels: PGD's eps (/255) and, higher, MND's first and last margin", fontsize=FONT, wrap=True)
        legend_rows = math.ceil(len(labels) / 2)
        height = fig.get_figheight()  # the legend's rows, in inches (tight_layout makes room for the title)
        fig.tight_layout(rect=(0, (0.25 * legend_rows + 0.15) / height, 1, 1))
    return fig


def strip_methods(anchor: str = "pgd") -> list[str]:
    """The methods of :func:`budget_strip`: one anchor at each budget, then MND at each margin."""
    return ([anchor if e == 8 else f"{anchor}@eps={e:g}" for e in SWEEP_EPS]
            + ["mnd" if m == 0 else f"mnd@margin={m:g}" for m in SWEEP_MARGINS])


def budget_strip(results: str | Path, rows: Iterable[Mapping[str, Any]], dataset: str, setting: str, image: str,
                 methods: Sequence[str], *, detail: int = 40) -> Any:
    """One photo at each method of ``methods`` (those on disk): the image with its PSNR, the difference from
    the clean image times :data:`AMPLIFY` (mid-grey is no change), and a zoomed detail; None when none is there."""
    import matplotlib.pyplot as plt  # heavy: only figures need it

    rows = {str(r["method"]): r for r in rows
            if (r.get("dataset"), r.get("setting"), str(r.get("image"))) == (dataset, setting, image)}
    clean_file = experiments.clean_path(Path(results), dataset, image)
    if not clean_file.exists():  # a results folder without the grid's clean copies: no strip to draw
        return None
    clean = load_image(clean_file)
    found = [(m, load_image(experiments.png_path(Path(results), dataset, setting, m, image))) for m in methods
             if m in rows and experiments.png_path(Path(results), dataset, setting, m, image).exists()]
    if not found:
        return None
    top, left = detail_region(clean, [img for _, img in found], detail)
    with plt.rc_context({"font.size": FONT}):
        fig, axes = plt.subplots(len(found), 3, figsize=(WIDTH, 2.3 * len(found)), squeeze=False)
        for (method, img), ax_row in zip(found, axes):
            base, params = parse_method(method)
            knob = f"eps {params.get('eps', 8):g}/255" if base != "mnd" else f"margin {params.get('margin', 0):g}"
            row = rows[method]
            psnr = float(row.get("psnr") or math.nan)
            verdict = "fools the model" if usable(row) else "does not fool it"
            diff = np.clip(128 + AMPLIFY * (img.astype(np.int32) - clean.astype(np.int32)), 0, 255).astype(np.uint8)
            crop = img[top: top + detail, left: left + detail]
            for ax, picture, title in zip(ax_row, (img, diff, crop), (
                    f"{base_label(base)}, {knob}: {psnr:.1f} dB", f"difference x{AMPLIFY}", "detail (zoomed)")):
                ax.imshow(picture, interpolation="nearest")
                ax.set_title(title, fontsize=FONT - 1)
                ax.axis("off")
            ax_row[0].text(0.0, -0.06, verdict, transform=ax_row[0].transAxes, va="top", fontsize=FONT - 1)
        fig.suptitle(f"{image} ({dataset}, {setting})", fontsize=FONT)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (2.3 * len(found))))
    return fig
