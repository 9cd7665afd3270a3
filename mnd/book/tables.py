"""Tables for the book: number formatting, HTML and Markdown tables, the paper-table pages.

>>> pm(48.554, 1.94, 2)
'48.55 ± 1.94'
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mnd import experiments
from mnd.book.pages import NOT_IN_PAPER_LABEL, figure_image, label
from mnd.data.paths import paper_dir


def fmt(value: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals; NaN as an en dash, inf as ∞; other values as text.

    >>> fmt(0.96512, 4), fmt(float("nan")), fmt(True)
    ('0.9651', '–', 'yes')
    """
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        text = f"{value:.{digits}f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"
    return "" if value is None else str(value)


def pm(mean: float, std: float, digits: int = 2) -> str:
    """``mean ± std`` as the paper prints it (std omitted when NaN)."""
    if isinstance(mean, float) and math.isnan(mean):
        return "–"
    if isinstance(std, float) and math.isnan(std):
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def signed(value: float, digits: int = 2) -> str:
    """A difference with its sign (``+0.12``); NaN as an en dash, infinities as ``+∞`` and ``-∞``."""
    if isinstance(value, float) and math.isnan(value):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "+∞" if value > 0 else "-∞"
    text = f"{value:+.{digits}f}"
    return "+" + text[1:] if float(text) == 0 else text  # no "-0.00"


def _cell_html(text: str) -> str:
    """Escaped cell text that may wrap only before a ``±`` (``48.55`` over ``± 1.94``), never inside a number."""
    return html.escape(text).replace(" ± ", " ±\u00a0")


def _header_html(columns: Sequence[str], grouped: bool) -> str:
    """One header row, or two when ``grouped``: ``"PSNR (dB): paper"`` puts ``paper`` under a ``PSNR (dB)`` group."""
    style = "padding:2px 6px;vertical-align:bottom"
    if not grouped or not any(": " in c for c in columns):
        return "<tr>" + "".join(f"<th style='{style}'>{html.escape(c)}</th>" for c in columns) + "</tr>"
    top, bottom = [], []
    k = 0
    while k < len(columns):
        group, sep, _ = columns[k].partition(": ")
        if not sep:
            top.append(f"<th rowspan='2' style='{style}'>{html.escape(columns[k])}</th>")
            k += 1
            continue
        span = 1
        while k + span < len(columns) and columns[k + span].partition(": ")[0] == group and ": " in columns[k + span]:
            span += 1
        top.append(f"<th colspan='{span}' style='{style};text-align:center'>{html.escape(group)}</th>")
        bottom += [f"<th style='{style}'>{html.escape(c.partition(': ')[2])}</th>" for c in columns[k : k + span]]
        k += span
    return f"<tr>{''.join(top)}</tr><tr>{''.join(bottom)}</tr>"


def html_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    caption: str | None = None,
    digits: Mapping[str, int] | None = None,
    grouped: bool = False,
) -> str:
    """An HTML table of ``rows`` (values through :func:`fmt`; strings shown as given, escaped).

    The table fits the page's content column: the first column never wraps,
    the others wrap where they must (a ``mean ± std`` cell only before its
    ``±``), and the whole table sits in a horizontally scrolling box in case
    it is still too wide. With ``grouped``, columns named ``"GROUP: name"``
    get a two-row header (``GROUP`` spanning its columns, ``name`` below).

    >>> "colspan='2'" in html_table([{"m": "MND", "PSNR: ours": 1.0, "PSNR: paper": 2.0}], grouped=True)
    True
    """
    columns = list(columns or (list(rows[0]) if rows else []))
    digits = dict(digits or {})
    body = []
    for row in rows:
        cells = "".join(
            f"<td style='padding:2px 6px{';white-space:nowrap' if k == 0 else ''}'>"
            f"{_cell_html(fmt(row.get(c, ''), digits.get(c, 2)))}</td>"
            for k, c in enumerate(columns))
        body.append(f"<tr>{cells}</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f"<div style='overflow-x:auto;max-width:100%'><table class='mnd-table' style='font-size:0.85em'>{cap}"
            f"<thead>{_header_html(columns, grouped)}</thead><tbody>{''.join(body)}</tbody></table></div>")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], digits: Mapping[str, int] | None = None) -> str:
    """A pipe table (MyST) of ``rows``."""
    digits = dict(digits or {})
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for row in rows:
        cells = [fmt(row.get(c, ""), digits.get(c, 2)).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def show_html(text: str) -> None:
    """Display HTML in a notebook (text elsewhere)."""
    try:
        from IPython.display import HTML, display  # optional: present where notebooks run
    except ImportError:  # pragma: no cover - only outside Jupyter's environment
        print(text)
        return
    display(HTML(text))


def show_markdown(text: str) -> None:
    """Display Markdown in a notebook (text elsewhere)."""
    try:
        from IPython.display import Markdown, display  # optional: present where notebooks run
    except ImportError:  # pragma: no cover
        print(text)
        return
    display(Markdown(text))


MEAN_LABELS: dict[str, str] = dict(experiments.OVER)
"""Column labels of the two means of :func:`mnd.experiments.summary.summarize`: ``all attacked`` and ``successes``."""


def paper_table_rows(summary: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> list[dict[str, Any]]:
    """One data set x setting of :func:`mnd.experiments.summary.summarize`, in the layout of Tables I/II/VI/VII.

    Columns (grouped as ``"PSNR (dB): ..."`` and ``"SSIM: ..."``, see
    :func:`html_table`): the mean ± std over all attacked images, over the
    successful attacks only, and the paper's value; a difference column
    (all attacked − paper) only where the data set is the paper's model on
    the paper's test set (``same_as_paper``); then the successes and the
    mean iterations of the successful attacks. The methods not in the paper
    (:data:`mnd.experiments.NOT_IN_PAPER`) come last, under a row that says
    so (:func:`block_row`).
    """
    out = []
    for s in summary:
        if s["dataset"] != dataset or s["setting"] != setting:
            continue
        if s["method"] in experiments.NOT_IN_PAPER and not any(r.get("Method") == NOT_IN_PAPER_LABEL for r in out):
            out.append(block_row(NOT_IN_PAPER_LABEL))
        same = bool(s.get("same_as_paper", False))
        row: dict[str, Any] = {"Method": s["label"]}
        for metric, title, digits in (("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 4)):
            for over, over_label in MEAN_LABELS.items():
                row[f"{title}: {over_label}"] = pm(s[f"{metric}_{over}_mean"], s[f"{metric}_{over}_std"], digits)
            row[f"{title}: paper"] = pm(s.get(f"paper_{metric}_mean", math.nan), s.get(f"paper_{metric}_std", math.nan),
                                        digits)
            if same:
                row[f"{title}: Δ (all attacked − paper)"] = signed(s.get(f"{metric}_all_diff", math.nan), digits)
        row["successes (mean iter.)"] = f"{s['succeeded']}/{s['attacked']} ({fmt(s['iterations_success_mean'], 1)})"
        out.append(row)
    return out


def row_label(method: str) -> str:
    """A method's label in a table that mixes blocks: the paper's label, marked where the paper lacks the method.

    >>> row_label("mnd"), row_label("ddn")
    ('MND', 'DDN (not in the paper)')
    """
    return f"{label(method)} ({NOT_IN_PAPER_LABEL})" if method in experiments.NOT_IN_PAPER else label(method)


def block_row(title: str, first: str = "Method") -> dict[str, Any]:
    """A row that only names the block of rows below it (its other cells empty).

    >>> block_row("not in the paper")
    {'Method': 'not in the paper'}
    """
    return {first: title}


SOURCE_TEXT: dict[str, str] = {
    "embedded": "embedded photos", "imagenet10": "ImageNet-10 images", "vggface2_10": "VGGFace2-10 face crops",
    "folder": "images of a folder",
}
"""How captions name the images of each data set source."""


def setup_text(spec: experiments.DatasetSpec, images: int | None = None) -> str:
    """A data set's model and images in words: ``efficientnet_lite0 on 2 embedded photos``."""
    count = f"{images} " if images is not None else ""
    return f"{spec.model} on {count}{SOURCE_TEXT.get(spec.source, spec.source)}"


def comparison_text(spec: experiments.DatasetSpec, setting: str, images: int | None = None) -> str:
    """Ours against the paper's model and data for one table, and whether the two can be compared.

    >>> preset = experiments.load_preset("tiny")
    >>> comparison_text(preset.dataset("imagenet"), "targeted", 2).split(". ")[0]
    'Ours: efficientnet_lite0 on 2 embedded photos'
    """
    table = spec.paper_table(setting)
    setup = experiments.PAPER_SETUPS.get(table or "")
    ours = f"Ours: {setup_text(spec, images)}"
    if setup is None:
        return f"{ours}. The paper has no table for this setting."
    if spec.same_as_paper(setting):
        return (f"{ours}, the paper's model and test set (Table {table}: {setup.text}); "
                "Δ = ours (all attacked) − paper.")
    return (f"{ours}. The paper (Table {table}): {setup.text}. Different model and data, so the paper's values "
            "are shown for reference only, with no difference column.")


def paper_table_html(preset: experiments.Preset, summary: Sequence[Mapping[str, Any]], dataset: str, setting: str) -> str:
    """Table I/II/VI/VII of one data set x setting as HTML, its caption naming the model, the data and the means."""
    spec = preset.dataset(dataset)
    rows = paper_table_rows(summary, dataset, setting)
    images = max((int(s["images"]) for s in summary if s["dataset"] == dataset and s["setting"] == setting),
                 default=None)
    table = spec.paper_table(setting)
    same = drop_repeated(rows, [(f"{t}: {MEAN_LABELS['all']}", f"{t}: {MEAN_LABELS['success']}")
                                for t in ("PSNR (dB)", "SSIM")])
    means = ("Mean ± std over all attacked images (every attack succeeded, so the means over the successes are the "
             "same and not repeated)" if same else
             "Mean ± std over all attacked images (all attacked) and over the successful attacks only (successes)")
    caption = (f"Table {table or '–'}, {setting}. {comparison_text(spec, setting, images)} {means}; the paper's "
               f"means are over all its tested images. {ANCHOR_BUDGET} n per row: the successes column.")
    columns = max((list(r) for r in rows), key=len, default=None)  # a block row holds only the first column
    if same or not columns:
        return html_table(rows, columns, caption=caption, grouped=True)
    # Both means for both metrics do not fit the column at 1280 px: PSNR, then SSIM, each with the methods.
    rest = [c for c in columns if not c.startswith(("PSNR", "SSIM"))]
    psnr = [c for c in columns if c.startswith("PSNR")]
    ssim = [c for c in columns if c.startswith("SSIM")]
    return "\n".join([html_table(rows, rest[:1] + psnr + rest[1:], caption=caption + " PSNR.", grouped=True),
                       html_table(rows, rest[:1] + ssim, caption=f"Table {table or '–'}, {setting}, continued: SSIM.",
                                  grouped=True)])


ANCHOR_BUDGET = ("The anchors (BIM, PGD, MIFGSM, DI²FGSM) run at torchattacks' defaults: eps 8/255, step 2/255, "
                 "10 steps.")
"""The anchors' budget in words, for the captions of the tables that show them."""


def drop_repeated(rows: list[dict[str, Any]], pairs: Sequence[tuple[str, str]]) -> bool:
    """Remove the second column of each pair from ``rows`` when it equals the first in every row that has both.

    Returns whether any column was removed (rows without either column, such as block rows, do not count).

    >>> rows = [{"a": 1, "b": 1}, {"a": 2, "b": 2}, {"x": "block"}]
    >>> drop_repeated(rows, [("a", "b")]), rows
    (True, [{'a': 1}, {'a': 2}, {'x': 'block'}])
    """
    dropped = False
    for first, second in pairs:
        having = [r for r in rows if first in r and second in r]
        if having and all(r[first] == r[second] for r in having):
            for r in having:
                del r[second]
            dropped = True
    return dropped


def dataset_header(preset: experiments.Preset, dataset: str) -> str:
    """Markdown naming a data set's model and images, the preset, the iteration cap and seed, and the preset's notes."""
    spec = preset.dataset(dataset)
    return (f"**{spec.title}**: model `{spec.model}`, {len(experiments.image_names(spec))} images, preset `{preset.name}`, "
            f"MND iteration cap {preset.effective_max_iter(spec.task)} (the paper: 1000), seed {preset.seed}.\n\n"
            + " ".join(preset.notes.split()))


def image_results_html(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str, image: str,
                       methods: Sequence[str]) -> str:
    """The result rows of one image (those of ``methods``): success, PSNR, SSIM, changed pixels, iterations."""
    same = experiments.select(rows, dataset=dataset, setting=setting, image=image)
    return html_table(
        [{"method": row_label(r["method"]), "success": r["success"], "PSNR": r["psnr"], "SSIM": r["ssim"],
          "changed pixels": r["changed_ratio"], "iterations": r["iterations"]}
         for r in same if r["method"] in methods], digits={"SSIM": 4, "changed pixels": 4},
        caption=f"{image}, {setting}")


def pixel_ratio_html(summary: Iterable[Mapping[str, Any]]) -> str:
    """The changed-pixel ratio of every data set x setting x method, over all attacked images and over successes."""
    table = [{"data set": s["dataset"], "setting": s["setting"], "method": row_label(s["method"]),
              "changed pixels: all attacked": pm(s["changed_ratio_all_mean"], s["changed_ratio_all_std"], 4),
              "changed pixels: successes": pm(s["changed_ratio_success_mean"], s["changed_ratio_success_std"], 4),
              "successes": f"{s['succeeded']}/{s['attacked']}"} for s in summary]
    if drop_repeated(table, [("changed pixels: all attacked", "changed pixels: successes")]):
        over = "over all attacked images (the same over the successful attacks only, so not repeated)"
    else:
        over = "over all attacked images (all attacked) and over the successful attacks only (successes)"
    return html_table(table, grouped=True, caption=f"ratio of changed values, mean ± std {over}; n per row: the "
                      "successes column")


def paper_pixel_ratio_html(preset: experiments.Preset, rows: Iterable[Mapping[str, Any]], setting: str) -> str:
    """The changed-pixel ratio of each data set's figure image beside the paper's values for its Fig. 4 image."""
    paper = {r["method"]: float(r["changed_ratio"]) for r in experiments.read_rows(paper_dir() / "pixel_ratio.csv")}
    rows = list(rows)
    single = []
    for spec in preset.datasets:
        image = figure_image(spec)
        for r in experiments.select(rows, dataset=spec.name, setting=setting, image=image):
            name = label(r["method"])
            if name in paper:
                single.append({"data set": spec.name, "image": image, "method": name, "success": r["success"],
                               "changed pixels": r["changed_ratio"], "paper (Fig. 4 image)": paper[name]})
    return html_table(single, digits={"changed pixels": 4, "paper (Fig. 4 image)": 4},
                      caption=f"one image per data set, {setting}")
