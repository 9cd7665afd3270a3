"""Attack strength versus image quality: sweep points, trade-off curves, the quality table, where MND's gain comes from.

A *sweep point* is a method run at one value of its strength knob, written
``<base>@<param>=<value>``: a fixed-budget anchor at an L-infinity budget
(``bim@eps=4``, eps in /255 units) or MND at a confidence margin
(``mnd@margin=2``). A plain anchor is its default budget (eps 8/255) and plain
MND is margin 0 (the paper). The minimum-norm attacks (:data:`MIN_NORM`) are not
in the paper; each is one point.

>>> parse_method("bim@eps=4"), parse_method("mnd")
(('bim', {'eps': 4.0}), ('mnd', {}))
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mnd import experiments
from mnd.experiments.methods import parse_method
from mnd.book.figures import WIDTH
from mnd.book.pages import Context, label
from mnd.book.tables import html_table, pm, signed
from mnd.core import anchors, min_anchors
from mnd.core.metrics import sample_mean, sample_std

MIN_NORM: tuple[str, ...] = tuple(min_anchors.MIN_ANCHORS)
"""The minimum-perturbation attacks (not in the paper), in table order (:data:`mnd.core.min_anchors.MIN_ANCHORS`)."""


MIN_NORM_LABELS: dict[str, str] = dict(min_anchors.LABELS)
"""Display names of :data:`MIN_NORM`: :data:`mnd.core.min_anchors.LABELS`, the one source."""


SWEEP_EPS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
"""The fixed anchors' budgets of the sweep, in /255 units."""


SWEEP_MARGINS: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0)
"""MND's confidence margins of the sweep (logit units)."""


DEFAULT_EPS = 8.0
"""The budget of a plain anchor (torchattacks' default, 8/255), in /255 units."""


DEFAULT_MARGIN = 0.0
"""The margin of a plain MND variant (the paper's)."""


PERCEPTUAL_SHARE = 0.5
"""Claim C6's rule: the perceptual loss explains MND's lead when dropping it costs more than this share of the lead."""


QUALITY_METRICS: tuple[tuple[str, str, int], ...] = (
    ("psnr", "PSNR (dB) ↑", 2), ("ssim", "SSIM ↑", 4), ("ms_ssim", "MS-SSIM ↑", 4), ("haarpsi", "HaarPSI ↑", 4),
    ("vif", "VIF ↑", 4), ("gmsd", "GMSD ↓", 4), ("fsim", "FSIM ↑", 4), ("ciede2000", "CIEDE2000 ↓", 2),
    ("lpips", "LPIPS ↓", 4), ("dists", "DISTS ↓", 4),
)
"""(row column, table header, digits) of every quality metric of :func:`quality_rows`; ↓: lower is better."""


Kind = Literal["fixed budget", "stops at success", "minimum norm", "other"]


def method_kind(base: str) -> Kind:
    """How a base method spends its budget: a fixed budget (anchor), until success (MND variant), minimum norm, other."""
    if base in anchors.ANCHORS:
        return "fixed budget"
    if base in experiments.VARIANTS:
        return "stops at success"
    if base in MIN_NORM:
        return "minimum norm"
    return "other"


def _knob(base: str) -> tuple[str, float]:
    """The strength knob of a base method and its value for the plain name."""
    return ("eps", DEFAULT_EPS) if method_kind(base) == "fixed budget" else ("margin", DEFAULT_MARGIN)


def base_label(base: str) -> str:
    """A base method's display name (the paper's, else :data:`MIN_NORM_LABELS`)."""
    shown = label(base)
    return MIN_NORM_LABELS.get(base, base) if shown == base else shown


def point_label(name: str) -> str:
    """A method or sweep point's display name.

    >>> point_label("bim@eps=4"), point_label("mnd@margin=2")
    ('BIM, eps 4/255', 'MND, margin 2')
    """
    base, params = parse_method(name)
    parts = [f"eps {_number(v)}/255" if k == "eps" else f"{k} {_number(v)}" for k, v in params.items()]
    return ", ".join([base_label(base), *parts])


def _number(value: float) -> str:
    return f"{value:g}"


def in_paper(name: str) -> bool:
    """Whether the paper has this method: a plain anchor or a plain MND variant (no sweep point, no minimum norm)."""
    base, params = parse_method(name)
    return not params and method_kind(base) in ("fixed budget", "stops at success")


def _value(row: Mapping[str, Any], key: str) -> float:
    """A metric of a row as a float; NaN when absent or empty."""
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _measured(rows: Iterable[Mapping[str, Any]], key: str) -> list[float]:
    """The values of ``key`` that were measured (NaN left out, +inf kept as :mod:`mnd.experiments.summary` does)."""
    return [v for v in (_value(r, key) for r in rows) if not math.isnan(v)]


def _attacked(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if r.get("attacked", True)]


@dataclass(frozen=True)
class CurvePoint:
    """One method (or sweep point) on one data set x setting: its success rate and mean quality.

    Attributes:
        method: the name in the rows (``bim@eps=4``, ``mnd``, ``ddn``).
        family: the base method; a family's points form one curve.
        kind: :func:`method_kind` of the family.
        knob: the strength parameter (``eps`` for a fixed anchor, else ``margin``); ``value`` its value.
        attacked, succeeded: counts; ``success_rate`` their ratio.
        psnr_all, ssim_all: means over all attacked images; ``psnr_success``, ``ssim_success`` over successes.
        eps_found: the mean eps a minimal-eps search found (/255 units; NaN when none).
    """

    dataset: str
    setting: str
    method: str
    family: str
    kind: Kind
    knob: str
    value: float
    attacked: int
    succeeded: int
    success_rate: float
    psnr_all: float
    ssim_all: float
    psnr_success: float
    ssim_success: float
    eps_found: float


def _point(dataset: str, setting: str, method: str, group: Sequence[Mapping[str, Any]]) -> CurvePoint:
    base, params = parse_method(method)
    knob, default = _knob(base)
    value = params.get(knob, default)
    # a point with settings beyond its knob (MND with the transfer boosters) is a family of its own
    family = method if set(params) - {knob} else base
    attacked = _attacked(group)
    won = [r for r in attacked if r.get("success")]
    return CurvePoint(
        dataset, setting, method, family, method_kind(base), knob,
        value,
        len(attacked), len(won), len(won) / len(attacked) if attacked else math.nan,
        sample_mean(_measured(attacked, "psnr")), sample_mean(_measured(attacked, "ssim")),
        sample_mean(_measured(won, "psnr")), sample_mean(_measured(won, "ssim")),
        sample_mean(_measured(attacked, "eps")),
    )


def _order(method: str) -> tuple[int, int, float, str]:
    """Table order: fixed anchors (paper order, by eps), MND variants (by margin), minimum norm, the rest."""
    base, params = parse_method(method)
    kind = method_kind(base)
    knob, default = _knob(base)
    families = {"fixed budget": list(anchors.TABLE_ORDER), "stops at success": list(experiments.VARIANTS),
                "minimum norm": list(MIN_NORM)}.get(kind, [])
    rank = ("fixed budget", "stops at success", "minimum norm", "other").index(kind)
    return rank, families.index(base) if base in families else len(families), params.get(knob, default), method


def _groups(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if r.get("dataset") == dataset and r.get("setting") == setting:
            groups.setdefault(str(r["method"]), []).append(r)
    return {m: groups[m] for m in sorted(groups, key=_order)}


def same_images(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows of the images every method attacked, per data set x setting.

    A preset may run its trade-off methods on fewer images than the paper's
    methods (:attr:`mnd.experiments.Preset.tradeoff_images`); the curves and
    tables compare methods on the images they all attacked, so that a
    difference is not a difference in images.
    """
    rows = list(rows)
    images: dict[tuple[Any, Any], dict[str, set[str]]] = {}
    for r in rows:
        images.setdefault((r.get("dataset"), r.get("setting")), {}).setdefault(str(r["method"]), set()).add(
            str(r["image"]))
    common = {key: set.intersection(*by_method.values()) for key, by_method in images.items()}
    return [r for r in rows if str(r["image"]) in common[(r.get("dataset"), r.get("setting"))]]


def common_image_count(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> int:
    """How many images :func:`same_images` keeps for one data set x setting."""
    return len({str(r["image"]) for r in same_images(rows) if (r.get("dataset"), r.get("setting")) == (dataset, setting)})


def curve_points(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> list[CurvePoint]:
    """Every method's point on one data set x setting, in table order (:func:`_order`).

    A plain anchor is its family's eps = 8 point and plain MND its margin = 0
    point; where a run has both ``bim`` and ``bim@eps=8``, the plain name wins.
    """
    points: dict[tuple[str, float], CurvePoint] = {}
    for method, group in _groups(rows, dataset, setting).items():
        p = _point(dataset, setting, method, group)
        key = (p.family, p.value)
        if key not in points or "@" not in method:
            points[key] = p
    return sorted(points.values(), key=lambda p: _order(p.method))


PLOTTED_VARIANTS: tuple[str, ...] = ("mnd", "no_norm", "mnd_refine")
"""The methods the curves show even unswept: MND, no norm (MND's stopping without its perceptual loss) and
MND + refinement (ours, :mod:`mnd.core.refine`)."""


def plotted(points: Sequence[CurvePoint]) -> dict[str, list[CurvePoint]]:
    """The families a trade-off figure draws: the fixed anchors, MND and no norm, the minimum-norm attacks (and any swept family).

    Points whose PSNR mean is not finite (an attack that left images unchanged) are left out.
    """
    families: dict[str, list[CurvePoint]] = {}
    for p in points:
        if math.isfinite(p.psnr_all) and math.isfinite(p.success_rate):
            families.setdefault(p.family, []).append(p)
    return {f: sorted(ps, key=lambda p: p.value) for f, ps in families.items()
            if ps[0].kind in ("fixed budget", "minimum norm") or f in PLOTTED_VARIANTS or len(ps) > 1 or "@" in f}


_ANCHOR_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22")
_SINGLE_MARKERS = ("s", "D", "^", "v", "P", "X", "*", "h")


def tradeoff_figure(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> Any:
    """Success rate against mean PSNR (left) and mean SSIM (right), one data set x setting; None when nothing to draw.

    One line per family with several points (an anchor over eps, MND over
    margin), each marker labelled with its eps or margin; one marker per
    family with a single point (a minimum-norm attack, an unswept method).
    MND is the thick red line on top. Means are over all attacked images.
    """
    import matplotlib.pyplot as plt  # heavy: only figures need it

    families = plotted(curve_points(rows, dataset, setting))
    if not families:
        return None
    fig, axes = plt.subplots(2, 1, figsize=(WIDTH, 8.6))
    colours = iter(_ANCHOR_COLOURS * 4)
    markers = iter(_SINGLE_MARKERS * 4)
    for family, points in families.items():
        kind = points[0].kind
        is_mnd = family == "mnd"
        if is_mnd:
            style: dict[str, Any] = dict(color="#d62728", linewidth=3.0, marker="o", markersize=8, zorder=5)
        elif kind == "fixed budget":
            style = dict(color=next(colours), linewidth=1.4, linestyle="--", marker="o", markersize=5)
        elif family == "mnd_refine":  # ours: its own colour and marker, drawn over the others
            style = dict(color="#ff7f0e", linestyle="none", marker="p", markersize=10, zorder=6)
        else:
            style = dict(color="black" if kind == "minimum norm" else "#7f7f7f", linestyle="none",
                         marker=next(markers), markersize=7, markerfacecolor="white" if kind == "minimum norm" else None)
        swept = len(points) > 1
        text = (point_label(family) if "@" in family else base_label(family)) + (f" (over {points[0].knob})" if swept else "")
        if kind == "minimum norm":
            text += ", not in the paper"
        for ax, key in zip(axes, ("psnr_all", "ssim_all")):
            xs = [getattr(p, key) for p in points]
            ax.plot(xs, [p.success_rate for p in points], label=text, **style)
            if swept or kind == "fixed budget":
                for p, x in zip(points, xs):
                    ax.annotate(_number(p.value), (x, p.success_rate), textcoords="offset points", xytext=(4, 4),
                                fontsize=10, color=style["color"])
    for ax, what in zip(axes, ("mean PSNR (dB), all attacked images", "mean SSIM, all attacked images")):
        ax.set_xlabel(what)
        ax.grid(True, alpha=0.3)
    for ax in axes:
        ax.set_ylabel("success rate")
        ax.set_ylim(-0.05, 1.05)
    fig.suptitle(f"{dataset}, {setting}: attack strength versus quality\n(labels: eps in /255, or margin)",
                 fontsize=11)
    handles, labels = axes[0].get_legend_handles_labels()
    columns = min(2, len(labels))
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=10, frameon=False)
    rows_of_legend = math.ceil(len(labels) / columns)
    fig.tight_layout(rect=(0, (0.3 * rows_of_legend + 0.2) / fig.get_figheight(), 1, 1))
    return fig


def _stats(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[float, float]:
    values = _measured(_attacked(rows), key)
    return sample_mean(values), sample_std(values)


ROBUSTNESS_TITLES: dict[str, str] = {
    "jpeg95": "JPEG 95", "jpeg85": "JPEG 85", "jpeg75": "JPEG 75", "resize50": "resize 0.5x",
}
"""Table headers of the robustness columns (:data:`mnd.core.robustness.TRANSFORMS`)."""


def robustness_rows(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> list[dict[str, Any]]:
    """Every method of one data set x setting: its successes, and how many stay adversarial after each transform.

    Counts are over all attacked images; an en dash where the run did not measure a transform.
    """
    out = []
    for method, group in _groups(rows, dataset, setting).items():
        attacked = _attacked(group)
        row: dict[str, Any] = {"method": point_label(method), "in the paper": in_paper(method),
                               "adversarial (saved PNG)": f"{sum(1 for r in attacked if r.get('success'))}/{len(attacked)}"}
        for key, title in ROBUSTNESS_TITLES.items():
            measured = [r.get(key) for r in attacked if r.get(key) is not None]
            row[f"after {title}"] = f"{sum(map(bool, measured))}/{len(measured)}" if measured else "–"
        out.append(row)
    return out


def robustness_table_html(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> str:
    """:func:`robustness_rows` as an HTML table with its caption."""
    return html_table(robustness_rows(rows, dataset, setting),
                      caption=f"{dataset}, {setting}: images still adversarial after what sharing does to them "
                              "(Pillow's JPEG at quality 95/85/75 with 4:2:0 chroma; a 0.5x down-and-up resize)")


@dataclass(frozen=True)
class Paired:
    """A metric's difference ``method − reference`` over the images both attacked successfully.

    Attributes:
        method, reference: the two methods.
        images: how many images both made adversarial (with finite values).
        mean, std: mean and sample std of the per-image differences (NaN when too few).
    """

    method: str
    reference: str
    images: int
    mean: float
    std: float


def paired_difference(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str, method: str,
                      reference: str = "mnd", metric: str = "psnr") -> Paired:
    """``method − reference`` for ``metric``, per image, over the images both attacked successfully."""
    groups = _groups(rows, dataset, setting)

    def won(name: str) -> dict[str, float]:
        return {str(r["image"]): _value(r, metric) for r in _attacked(groups.get(name, [])) if r.get("success")}

    a, b = won(method), won(reference)
    diffs = [a[i] - b[i] for i in sorted(a.keys() & b.keys()) if math.isfinite(a[i]) and math.isfinite(b[i])]
    return Paired(method, reference, len(diffs), sample_mean(diffs), sample_std(diffs))


GAIN_GROUPS: tuple[tuple[str, Sequence[str]], ...] = (
    ("the paper's anchors (fixed budget 8/255)", tuple(anchors.TABLE_ORDER)),
    ("stops at success, no perceptual loss", ("no_norm",)),
    ("stops at success, perceptual variants", tuple(v for v in experiments.VARIANTS if v not in ("no_norm", "mnd"))),
    ("minimum norm (not in the paper)", MIN_NORM),
    ("MND + refinement (ours, not in the paper)", ("mnd_refine",)),
)
"""The rows of the "where MND's gain comes from" table, by group."""


def gain_rows(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> list[dict[str, Any]]:
    """Each method of :data:`GAIN_GROUPS` present on one data set x setting against MND (PSNR, dB).

    Columns: the group, the method, its success, its mean PSNR over all attacked
    images, and ``method − MND`` per image over the images both made adversarial
    (mean ± std, and how many images); negative: below MND.
    """
    rows = list(rows)
    groups = _groups(rows, dataset, setting)
    if "mnd" not in groups:
        return []
    out = []
    for group, methods in GAIN_GROUPS:
        for method in methods:
            if method not in groups:
                continue
            attacked = _attacked(groups[method])
            d = paired_difference(rows, dataset, setting, method)
            out.append({"group": group, "method": point_label(method),
                        "success": f"{sum(1 for r in attacked if r.get('success'))}/{len(attacked)}",
                        "PSNR (dB), all attacked": sample_mean(_measured(attacked, "psnr")),
                        "Δ PSNR vs MND (dB), both adversarial": "–" if not d.images else
                        (signed(d.mean, 2) + ("" if math.isnan(d.std) else f" ± {d.std:.2f}")),
                        "images": d.images})
    return out


def gain_table_html(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> str:
    """:func:`gain_rows` as an HTML table (a sentence when MND has no rows here)."""
    table = gain_rows(rows, dataset, setting)
    if not table:
        return f"<p>{dataset}, {setting}: no MND results, so nothing to compare.</p>"
    return html_table(table, caption=f"{dataset}, {setting}: each method's PSNR minus MND's, per image, over the "
                                     "images both made adversarial (mean ± std, images: how many); negative: below MND.")


@dataclass(frozen=True)
class PerceptualSplit:
    """Claim C6 on one data set x setting: MND's lead over the best fixed anchor, and what dropping its loss costs.

    Means over all attacked images. ``lead`` = MND − best anchor; ``loss_part`` =
    MND − no norm; ``share`` = loss_part / lead; ``holds``: lead > 0 and share > :data:`PERCEPTUAL_SHARE`.
    """

    dataset: str
    setting: str
    mnd: float
    no_norm: float
    anchor: str
    anchor_psnr: float
    lead: float
    loss_part: float
    share: float
    holds: bool


def _summary(rows: Sequence[Mapping[str, Any]]) -> tuple[int, float]:
    """(successes, mean PSNR over all attacked images) of one method's rows."""
    attacked = _attacked(rows)
    return sum(1 for r in attacked if r.get("success")), sample_mean(_measured(attacked, "psnr"))


def perceptual_split(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> PerceptualSplit | None:
    """:class:`PerceptualSplit` of one data set x setting.

    None unless MND, no norm and at least one plain anchor each made an image adversarial.
    """
    groups = _groups(rows, dataset, setting)
    stats = {m: _summary(g) for m, g in groups.items()}
    usable = {m: psnr for m, (won, psnr) in stats.items() if won > 0 and math.isfinite(psnr)}
    fixed = {m: usable[m] for m in usable if m in anchors.PAPER_ANCHORS}  # not the transfer anchors or controls
    if "mnd" not in usable or "no_norm" not in usable or not fixed:
        return None
    anchor = max(fixed, key=lambda m: fixed[m])
    lead, part = usable["mnd"] - fixed[anchor], usable["mnd"] - usable["no_norm"]
    share = part / lead if lead > 0 else math.nan
    return PerceptualSplit(dataset, setting, usable["mnd"], usable["no_norm"], anchor, fixed[anchor], lead, part,
                           share, lead > 0 and share > PERCEPTUAL_SHARE)


def min_norm_comparisons(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> list[Paired]:
    """MND − each minimum-norm attack present (PSNR, per image over the images both made adversarial)."""
    rows = list(rows)
    groups = _groups(rows, dataset, setting)
    if "mnd" not in groups:
        return []
    return [paired_difference(rows, dataset, setting, "mnd", m) for m in MIN_NORM if m in groups]


def gain_verdict(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> str:
    """Where MND's gain comes from on one data set x setting, in plain words (Markdown)."""
    rows = list(rows)
    split = perceptual_split(rows, dataset, setting)
    where = f"**{dataset}, {setting}.**"
    if split is None:
        first = ("MND, no norm and a plain anchor are not all present with a successful attack here, so the lead "
                 "cannot be split.")
    elif split.lead <= 0:
        first = (f"MND ({split.mnd:.2f} dB) has no lead over the best fixed anchor, {base_label(split.anchor)} "
                 f"({split.anchor_psnr:.2f} dB).")
    else:
        cause = ("the perceptual loss, not early stopping, explains most of it" if split.holds else
                 "stopping at success with small steps, not the perceptual loss, explains most of it")
        first = (f"MND leads the best fixed anchor, {base_label(split.anchor)}, by {split.lead:.2f} dB; dropping the "
                 f"perceptual loss (no norm) costs {split.loss_part:.2f} dB of that ({100 * split.share:.0f}%), so "
                 f"{cause}.")
    compared = [p for p in min_norm_comparisons(rows, dataset, setting) if p.images]
    if not compared:
        second = "No minimum-norm attack shares a successful image with MND here."
    else:
        above = [p for p in compared if p.mean < 0]
        listed = "; ".join(f"{base_label(p.reference)} {signed(-p.mean, 2)} dB ({p.images} images)" for p in compared)
        second = (f"Minimum-norm attacks minus MND, per image over the images both made adversarial: {listed}. "
                  + (f"{len(above)} of {len(compared)} minimum-norm attacks give a higher PSNR than MND."
                     if above else "MND gives the higher PSNR against every one."))
    return f"{where} {first} {second}"


def sweep_sections(ctx: Context) -> list[tuple[str, str]]:
    """The (data set, setting) pairs of the run that have result rows, in the preset's order."""
    have = {(r.get("dataset"), r.get("setting")) for r in ctx.rows}
    return [(d, s) for d in ctx.datasets() for s in ctx.preset.settings if (d, s) in have]


def expected_methods(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The methods and sweep points the trade-off chapter expects.

    The anchors of the run (the paper's four when it has none) at every
    :data:`SWEEP_EPS`, MND and no norm, MND at every :data:`SWEEP_MARGINS`, and
    every :data:`MIN_NORM` attack, and MND + refinement (ours); the default points by their plain names.
    """
    bases = sorted({parse_method(str(r["method"]))[0] for r in rows} & set(anchors.ANCHORS),
                   key=anchors.TABLE_ORDER.index) or list(anchors.PAPER_ANCHORS)
    names = [a if e == DEFAULT_EPS else f"{a}@eps={_number(e)}" for a in bases for e in SWEEP_EPS]
    names += ["no_norm"] + ["mnd" if m == DEFAULT_MARGIN else f"mnd@margin={_number(m)}" for m in SWEEP_MARGINS]
    return names + list(MIN_NORM) + ["mnd_refine"]


def _point_key(name: str) -> tuple[str, float]:
    """A method's family and knob value: ``bim`` and ``bim@eps=8`` are the same point."""
    base, params = parse_method(name)
    knob, default = _knob(base)
    return base, params.get(knob, default)


def missing_methods(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """:func:`expected_methods` that no result row has (``bim@eps=8`` stands for ``bim`` and back)."""
    rows = list(rows)
    have = {_point_key(str(r["method"])) for r in rows}
    return [m for m in expected_methods(rows) if _point_key(m) not in have]


def missing_text(names: Sequence[str]) -> str:
    """Method names in words, sweep points grouped: ``"BIM at eps 1, 2 (/255); MND at margin 4; DDN"``."""
    swept: dict[tuple[str, str], list[str]] = {}
    plain = []
    for name in names:
        base, params = parse_method(name)
        if not params:
            plain.append(base_label(base))
        for key, value in params.items():
            swept.setdefault((base_label(base), key), []).append(_number(value))
    parts = [f"{b} at {k} {', '.join(v)}{' (/255)' if k == 'eps' else ''}" for (b, k), v in swept.items()]
    return "; ".join(parts + ([", ".join(plain)] if plain else []))


def failed_methods(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], str]:
    """(data set, setting, method) -> why, for the methods whose every row is an attack that raised (note ``failed:``)."""
    notes: dict[tuple[str, str, str], list[str]] = {}
    for r in rows:
        notes.setdefault((str(r.get("dataset")), str(r.get("setting")), str(r["method"])), []).append(
            str(r.get("note") or ""))
    return {key: texts[0].removeprefix("failed: ") for key, texts in notes.items()
            if texts and all(t.startswith("failed:") for t in texts)}


def sweep_status_markdown(ctx: Context) -> str:
    """What this run has of the chapter's methods: the missing ones named, and data sets the grid skipped."""
    lines = []
    for dataset in ctx.datasets():
        ran, why = ctx.status(dataset)
        if not ran:
            lines.append(f"- Data set `{dataset}` was not run: {why}")
    missing = missing_methods(ctx.rows)
    if missing:
        lines.append(f"- This run has no results for {len(missing)} of the chapter's {len(expected_methods(ctx.rows))} "
                     f"methods and sweep points: {missing_text(missing)}. The figures and tables below show what it "
                     "has; a preset that lists them fills them in.")
    for (dataset, setting, method), why in failed_methods(ctx.rows).items():
        lines.append(f"- {point_label(method)} could not run on {dataset} {setting}: {why}")
    counts = []
    for dataset, setting in sweep_sections(ctx):
        total = len({str(r["image"]) for r in ctx.rows if (r.get("dataset"), r.get("setting")) == (dataset, setting)})
        shared = common_image_count(ctx.rows, dataset, setting)
        if shared < total:
            counts.append(f"{dataset} {setting}: {shared} of {total}")
    if counts:
        lines.append("- The figures and the first two tables compare every method on the images all of them "
                     f"attacked ({'; '.join(counts)} images): this preset runs the methods beyond the paper on "
                     "the first images of each data set only, to keep the book's build short. The paper's "
                     "tables use every image.")
    if not lines:
        return "This run has every method and sweep point of the chapter."
    if not missing:
        lines.insert(0, "This run has every method and sweep point of the chapter (rows for every one).")
    return "\n".join(lines)
