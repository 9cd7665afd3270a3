"""The reproducibility book: run the grid, execute the notebooks, build the HTML.

:func:`build` is ``mnd book``: it runs a preset's grid (:func:`mnd.grid.run_grid`,
which skips results already on disk), executes the notebooks of
``notebooks/`` with papermill into the book's pages (:data:`PAGES`: one
template may give several pages, each with its own parameters; executed
copies, the clean sources stay untouched), writes the generated "what
reproduced" page from the results, and builds the HTML with Jupyter Book v1
with execution off and warnings as errors.

The notebooks are thin: each starts with :func:`setup`, then calls the
helpers below (HTML tables, figures with an enlarged detail, Grad-CAM
overlays, the SSIM map, the rating sheet) and the library; every number
they show comes from the results folder.

>>> pm(48.554, 1.94, 2)
'48.55 ± 1.94'
>>> verdict([True, True]), verdict([True, False]), verdict([])
('supported', 'partly supported', 'no data')
"""

from __future__ import annotations

import base64
import contextlib
import functools
import html
import io
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mnd import anchors, attack, experiments, grid, losses, metrics, mos, trace
from mnd.errors import InputError, MndError
from mnd.imageio import atomic_open, load_rgb
from mnd.imageio import to_tensor as image_tensor

# Imported where used, being heavy or optional: matplotlib (figures only), and the book extras
# (pip install mnd[book]): IPython (display), pytorch_grad_cam (Grad-CAM), nbformat and papermill (the build).


@dataclass(frozen=True)
class Page:
    """One page of the book: a notebook of ``notebooks/`` executed with its own parameters.

    Attributes:
        name: the executed copy, ``<source>/notebooks/<name>.ipynb``: a chapter
            of ``book/_toc.yml``; the preset's ``[notebooks.<name>]`` table
            adds parameters to it.
        template: the notebook of ``notebooks/`` (without ``.ipynb``) executed into it.
        parameters: the page's own papermill parameters; its markdown cells
            may show them as ``{{ name }}`` (:func:`fill_markdown`).
    """

    name: str
    template: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


PAGES: tuple[Page, ...] = (
    Page("01_losses", "01_losses"),
    Page("02_imagenet", "paper_tables", {
        "dataset": "imagenet",
        "title": "Image classification: Tables I and II, Fig. 1",
        "summary": "Section IV-B of the paper attacks VGG19 on 100 ImageNet images of ten classes. This page shows "
                   "the same tables for the preset's image-classification data set and model.",
        "tables": "Tables I (non-targeted) and II (targeted)",
        "figure": "Fig. 1",
    }),
    Page("03_faces", "paper_tables", {
        "dataset": "faces",
        "title": "Face identification: Tables VI and VII, Fig. 2",
        "summary": "Section IV-C of the paper attacks InceptionResnetV1 (VGGFace2) on 100 face crops of ten "
                   "identities. This page shows the same tables for the preset's face data set and model.",
        "tables": "Tables VI (non-targeted) and VII (targeted)",
        "figure": "Fig. 2",
    }),
    Page("04_heatmaps", "04_heatmaps"),
    Page("05_difference_maps", "05_difference_maps"),
    Page("06_pixel_ratio", "06_pixel_ratio"),
    Page("07_mos", "07_mos"),
)
"""The notebook pages of the book, in book order (the chapters of ``book/_toc.yml``)."""

NOTEBOOKS: tuple[str, ...] = tuple(page.name for page in PAGES)
"""The names of :data:`PAGES`, in book order."""

STATIC_PAGES: tuple[str, ...] = ("intro.md", "reading-notes.md", "_toc.yml")
GENERATED_PAGE = "reproduction.md"
KERNEL = "python3"
"""ipykernel's built-in kernel: the Python that runs papermill, no kernel spec to register."""


def page(name: str) -> Page:
    """The page ``name`` of :data:`PAGES`.

    >>> page("03_faces").template
    'paper_tables'

    Raises:
        InputError: no such page.
    """
    for found in PAGES:
        if found.name == name:
            return found
    raise InputError("notebook", f"no page {name!r}; the book's pages: {', '.join(NOTEBOOKS)}")


def notebook_dir() -> Path:
    """``notebooks/`` of the checkout: the clean notebook sources."""
    return grid.project_root() / "notebooks"


def book_dir() -> Path:
    """``book/`` of the checkout: the book's source folder."""
    return grid.project_root() / "book"


def config_file() -> Path:
    """The Jupyter Book configuration, ``_config.yml`` at the top of the checkout."""
    return grid.project_root() / "_config.yml"


# --- what every notebook starts from ------------------------------------------------------------


def label(method: str) -> str:
    """A method's name as the paper's tables print it (:func:`mnd.experiments.method_label`).

    >>> label("l1_ssim"), label("di2fgsm")
    ('l1-norm + SSIM', 'DI2FGSM')
    """
    return experiments.method_label(method)


def split_methods(methods: Iterable[str]) -> tuple[list[str], list[str]]:
    """The MND variants and the anchors among ``methods`` (a preset's), each in a fixed order.

    The variants (the ablation settings of eq. 7, :data:`mnd.attack.VARIANTS`)
    come in the order of ``VARIANTS``, the anchors (:data:`mnd.anchors.ANCHORS`)
    in alphabetical order, the order of the figures and of the rating sheet;
    other names are left out.

    >>> split_methods(["bim", "mnd", "pgd", "l1", "di2fgsm"])
    (['l1', 'mnd'], ['bim', 'di2fgsm', 'pgd'])
    """
    chosen = set(methods)
    return [m for m in attack.VARIANTS if m in chosen], sorted(m for m in anchors.ANCHORS if m in chosen)


def figure_methods(methods: Iterable[str]) -> list[str]:
    """What the figures compare: MND, then the anchors, of ``methods`` (:func:`split_methods`).

    >>> figure_methods(["no_norm", "mnd", "pgd", "bim"])
    ['mnd', 'bim', 'pgd']
    """
    variants, anchor_names = split_methods(methods)
    return [m for m in variants if m == "mnd"] + anchor_names


def mos_anchors(methods: Iterable[str]) -> list[str]:
    """The anchors of ``methods`` that the paper's subjective test compares MND with (:data:`mnd.anchors.MOS_ANCHORS`).

    >>> mos_anchors(["mnd", "pgd", "bim", "rfgsm"])
    ['bim', 'pgd']
    """
    chosen = set(methods)
    return [m for m in anchors.MOS_ANCHORS if m in chosen]


def figure_image(spec: grid.DatasetSpec) -> str:
    """The image a data set's figures show: its ``figure_image``, else its first image."""
    return spec.figure_image or grid.image_names(spec)[0]


@dataclass
class Context:
    """What a notebook of the book works from (:func:`setup`).

    Attributes:
        preset: the run's preset, with its overrides.
        results: the results folder of the grid run.
        rows: its result rows (:func:`mnd.grid.read_results`).
        figures: where the notebooks save their figures (``<results>/figures``).
    """

    preset: grid.Preset
    results: Path
    rows: list[dict[str, Any]]
    figures: Path

    @functools.cached_property
    def summary(self) -> list[dict[str, Any]]:
        """:func:`mnd.grid.summarize` of :attr:`rows`, computed on first use."""
        return grid.summarize(self.rows, self.preset)

    @property
    def variants(self) -> list[str]:
        """The preset's MND variants (:func:`split_methods`)."""
        return split_methods(self.preset.methods)[0]

    @property
    def anchors(self) -> list[str]:
        """The preset's anchors (:func:`split_methods`)."""
        return split_methods(self.preset.methods)[1]

    @property
    def figure_methods(self) -> list[str]:
        """MND and the preset's anchors (:func:`figure_methods`)."""
        return figure_methods(self.preset.methods)

    def datasets(self, names: Sequence[str] = ()) -> list[str]:
        """``names``, or every data set of the preset when empty."""
        return list(names) or self.preset.names

    def status(self, dataset: str) -> tuple[bool, str]:
        """Whether the grid ran ``dataset``, and why not (:func:`dataset_status`)."""
        return dataset_status(self.results, dataset)

    def figure_image(self, dataset: str, image: str = "") -> str:
        """``image``, or the image the data set's figures show (:func:`figure_image`)."""
        return image or figure_image(self.preset.dataset(dataset))


def setup(preset: str | Path, results: str | Path, overrides: Sequence[str] = ()) -> Context:
    """The first call of every notebook: load the preset and the results of its run.

    Args:
        preset: a packaged preset's name or the path of a preset file (the
            notebook's ``preset`` parameter).
        results: the results folder of the grid run (``results``).
        overrides: the run's ``--set`` options (``overrides``).
    """
    folder = Path(results)
    return Context(grid.load_preset(preset, overrides), folder, grid.read_results(folder), folder / "figures")


# --- formatting ------------------------------------------------------------------------


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
    return (f"<div style='overflow-x:auto;max-width:100%'><table class='mnd-table' style='font-size:0.75em'>{cap}"
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


MEAN_LABELS: dict[str, str] = dict(grid.OVER)
"""Column labels of the two means of :func:`mnd.grid.summarize`: ``all attacked`` and ``successes``."""


def paper_table_rows(summary: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> list[dict[str, Any]]:
    """One data set x setting of :func:`mnd.grid.summarize`, in the layout of Tables I/II/VI/VII.

    Columns (grouped as ``"PSNR (dB): ..."`` and ``"SSIM: ..."``, see
    :func:`html_table`): the mean ± std over all attacked images, over the
    successful attacks only, and the paper's value; a difference column
    (all attacked − paper) only where the data set is the paper's model on
    the paper's test set (``same_as_paper``); then the successes and the
    mean iterations of the successful attacks.
    """
    out = []
    for s in summary:
        if s["dataset"] != dataset or s["setting"] != setting:
            continue
        same = bool(s.get("same_as_paper", False))
        row: dict[str, Any] = {"Method": s["label"]}
        for metric, title, digits in (("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 4)):
            for over, label in MEAN_LABELS.items():
                row[f"{title}: {label}"] = pm(s[f"{metric}_{over}_mean"], s[f"{metric}_{over}_std"], digits)
            row[f"{title}: paper"] = pm(s.get(f"paper_{metric}_mean", math.nan), s.get(f"paper_{metric}_std", math.nan),
                                        digits)
            if same:
                row[f"{title}: Δ (all attacked − paper)"] = signed(s.get(f"{metric}_all_diff", math.nan), digits)
        row["successes (mean iter.)"] = f"{s['succeeded']}/{s['attacked']} ({fmt(s['iterations_success_mean'], 1)})"
        out.append(row)
    return out


SOURCE_TEXT: dict[str, str] = {
    "embedded": "embedded photos", "imagenet10": "ImageNet-10 images", "vggface2_10": "VGGFace2-10 face crops",
    "folder": "images of a folder",
}
"""How captions name the images of each data set source."""


def setup_text(spec: grid.DatasetSpec, images: int | None = None) -> str:
    """A data set's model and images in words: ``efficientnet_lite0 on 2 embedded photos``."""
    count = f"{images} " if images is not None else ""
    return f"{spec.model} on {count}{SOURCE_TEXT.get(spec.source, spec.source)}"


def comparison_text(spec: grid.DatasetSpec, setting: str, images: int | None = None) -> str:
    """Ours against the paper's model and data for one table, and whether the two can be compared.

    >>> preset = grid.load_preset("tiny")
    >>> comparison_text(preset.dataset("imagenet"), "targeted", 2).split(". ")[0]
    'Ours: efficientnet_lite0 on 2 embedded photos'
    """
    table = spec.paper_table(setting)
    setup = grid.PAPER_SETUPS.get(table or "")
    ours = f"Ours: {setup_text(spec, images)}"
    if setup is None:
        return f"{ours}. The paper has no table for this setting."
    if spec.same_as_paper(setting):
        return (f"{ours}, the paper's model and test set (Table {table}: {setup.text}); "
                "Δ = ours (all attacked) − paper.")
    return (f"{ours}. The paper (Table {table}): {setup.text}. Different model and data, so the paper's values "
            "are shown for reference only, with no difference column.")


def paper_table_html(preset: grid.Preset, summary: Sequence[Mapping[str, Any]], dataset: str, setting: str) -> str:
    """Table I/II/VI/VII of one data set x setting as HTML, its caption naming the model, the data and the means."""
    spec = preset.dataset(dataset)
    rows = paper_table_rows(summary, dataset, setting)
    images = max((int(s["images"]) for s in summary if s["dataset"] == dataset and s["setting"] == setting),
                 default=None)
    table = spec.paper_table(setting)
    caption = (f"Table {table or '–'}, {setting}. {comparison_text(spec, setting, images)} "
               f"Mean ± std over all attacked images (all attacked) and over the successful attacks only "
               f"(successes); the paper's means are over all its tested images.")
    return html_table(rows, caption=caption, grouped=True)


def dataset_status(results: str | Path, dataset: str) -> tuple[bool, str]:
    """Whether the grid ran a data set (from run.json), and the reason when it did not."""
    info = grid.read_run(Path(results)).get("datasets", {}).get(dataset)
    if info is None:
        return False, f"the grid has not run data set {dataset!r} (no entry in {Path(results) / grid.RUN_JSON})"
    if info.get("status") != "ok":
        return False, str(info.get("reason", "skipped"))
    return True, ""


def dataset_header(preset: grid.Preset, dataset: str) -> str:
    """Markdown naming a data set's model and images, the preset, the iteration cap and seed, and the preset's notes."""
    spec = preset.dataset(dataset)
    return (f"**{spec.title}**: model `{spec.model}`, {len(grid.image_names(spec))} images, preset `{preset.name}`, "
            f"MND iteration cap {preset.effective_max_iter(spec.task)} (the paper: 1000), seed {preset.seed}.\n\n"
            + " ".join(preset.notes.split()))


def image_results_html(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str, image: str,
                       methods: Sequence[str]) -> str:
    """The result rows of one image (those of ``methods``): success, PSNR, SSIM, changed pixels, iterations."""
    same = grid.select(rows, dataset=dataset, setting=setting, image=image)
    return html_table(
        [{"method": label(r["method"]), "success": r["success"], "PSNR": r["psnr"], "SSIM": r["ssim"],
          "changed pixels": r["changed_ratio"], "iterations": r["iterations"]}
         for r in same if r["method"] in methods], digits={"SSIM": 4, "changed pixels": 4},
        caption=f"{image}, {setting}")


def pixel_ratio_html(summary: Iterable[Mapping[str, Any]]) -> str:
    """The changed-pixel ratio of every data set x setting x method, over all attacked images and over successes."""
    table = [{"data set": s["dataset"], "setting": s["setting"], "method": s["label"],
              "changed pixels: all attacked": pm(s["changed_ratio_all_mean"], s["changed_ratio_all_std"], 4),
              "changed pixels: successes": pm(s["changed_ratio_success_mean"], s["changed_ratio_success_std"], 4),
              "successes": f"{s['succeeded']}/{s['attacked']}"} for s in summary]
    return html_table(table, grouped=True, caption="ratio of changed values, mean ± std over all attacked "
                      "images (all attacked) and over the successful attacks only (successes)")


def paper_pixel_ratio_html(preset: grid.Preset, rows: Iterable[Mapping[str, Any]], setting: str) -> str:
    """The changed-pixel ratio of each data set's figure image beside the paper's values for its Fig. 4 image."""
    paper = {r["method"]: float(r["changed_ratio"]) for r in experiments.read_rows(grid.paper_dir() / "pixel_ratio.csv")}
    rows = list(rows)
    single = []
    for spec in preset.datasets:
        image = figure_image(spec)
        for r in grid.select(rows, dataset=spec.name, setting=setting, image=image):
            name = label(r["method"])
            if name in paper:
                single.append({"data set": spec.name, "image": image, "method": name, "success": r["success"],
                               "changed pixels": r["changed_ratio"], "paper (Fig. 4 image)": paper[name]})
    return html_table(single, digits={"changed pixels": 4, "paper (Fig. 4 image)": 4},
                      caption=f"one image per data set, {setting}")


# --- figures --------------------------------------------------------------------------------


def load_image(path: str | Path) -> np.ndarray:
    """An 8-bit RGB PNG as an (H, W, 3) uint8 array."""
    return load_rgb(path).pixels


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1]."""
    return image_tensor(image)[None]


def detail_region(clean: np.ndarray, others: Sequence[np.ndarray], size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` x ``size`` window where the images differ most from ``clean``.

    The window (on a grid of ``size // 2`` steps) maximises the summed
    absolute difference over all ``others``, so the enlarged detail shows
    the perturbations rather than a flat patch.
    """
    h, w = clean.shape[:2]
    size = min(size, h, w)
    total = np.zeros((h, w))
    for img in others:
        total += np.abs(img.astype(np.int32) - clean.astype(np.int32)).sum(axis=2)
    step = max(1, size // 2)
    best, where = -1.0, (0, 0)
    for top in range(0, h - size + 1, step):
        for left in range(0, w - size + 1, step):
            value = float(total[top : top + size, left : left + size].sum())
            if value > best:
                best, where = value, (top, left)
    return where


def _rectangle(img: np.ndarray, top: int, left: int, height: int, width: int, color: tuple[int, int, int],
               thickness: int) -> None:
    c = np.array(color, dtype=np.uint8)
    img[top : top + thickness, left : left + width] = c
    img[top + height - thickness : top + height, left : left + width] = c
    img[top : top + height, left : left + thickness] = c
    img[top : top + height, left + width - thickness : left + width] = c


def with_detail(image: np.ndarray, region: tuple[int, int], size: int, *, scale: int = 2,
                color: tuple[int, int, int] = (255, 0, 0), thickness: int = 2) -> np.ndarray:
    """The paper's Figs. 1 and 2 style: a red box on ``region`` and its enlargement in the bottom-right corner.

    The ``size`` x ``size`` window at ``region`` (top, left) is enlarged
    ``scale`` times with nearest-neighbour sampling (every pixel stays
    visible) and pasted, framed in red, over the bottom-right corner.
    """
    out = image.copy()
    top, left = region
    crop = image[top : top + size, left : left + size]
    big = np.kron(crop, np.ones((scale, scale, 1), dtype=np.uint8))
    bh, bw = big.shape[:2]
    h, w = out.shape[:2]
    bh, bw = min(bh, h), min(bw, w)
    out[h - bh :, w - bw :] = big[:bh, :bw]
    _rectangle(out, h - bh, w - bw, bh, bw, color, thickness)
    _rectangle(out, top, left, crop.shape[0], crop.shape[1], color, thickness)
    return out


def image_grid(panels: Sequence[tuple[str, np.ndarray]], *, columns: int, size: float = 2.6,
               cmap: str | None = None) -> Any:
    """A matplotlib figure of titled images, ``columns`` per row."""
    import matplotlib.pyplot as plt  # heavy: only figures need it

    rows = max(1, math.ceil(len(panels) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, img) in zip(axes.flat, panels):
        ax.imshow(img, cmap=cmap, vmin=0 if cmap else None, vmax=255 if cmap and img.dtype == np.uint8 else None,
                  interpolation="nearest")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def method_images(results: str | Path, dataset: str, setting: str, image: str,
                  methods: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """The clean image and each method's adversarial image (those on disk), with display titles."""
    out = [("Clean", load_image(grid.clean_path(Path(results), dataset, image)))]
    for method in methods:
        path = grid.png_path(Path(results), dataset, setting, method, image)
        if path.exists():
            out.append((label(method), load_image(path)))
    return out


def comparison_figure(results: str | Path, dataset: str, setting: str, image: str, methods: Sequence[str], *,
                      detail: int = 48, scale: int = 2, columns: int = 3) -> Any:
    """Figs. 1 and 2: the clean image, MND and the anchors, each with an enlarged detail in a red box.

    One detail window, the same for every panel (:func:`detail_region`).
    """
    panels = method_images(results, dataset, setting, image, methods)
    clean = panels[0][1]
    region = detail_region(clean, [img for _, img in panels[1:]], detail)
    return image_grid([(t, with_detail(img, region, detail, scale=scale)) for t, img in panels], columns=columns)


def common_scale_maps(adversarial: Sequence[np.ndarray], clean: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Absolute difference maps of several images on ONE scale: the largest difference of all -> 255.

    Unlike :func:`mnd.metrics.difference_maps`, which stretches every map to
    its own maximum, a common scale keeps the magnitudes comparable across
    methods (the paper's "for a fair comparison ... normalized to 0~255").

    Returns:
        (the (H, W, 3) uint8 maps, the largest difference in 8-bit levels).
    """
    diffs = [np.abs(a.astype(np.int32) - clean.astype(np.int32)) for a in adversarial]
    peak = max(1, max(int(d.max()) for d in diffs))
    return [np.round(d * (255.0 / peak)).astype(np.uint8) for d in diffs], peak


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a figure as PNG, atomically, with no timestamp (and no software tag) in its metadata."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path


def show_figure(fig: Any, path: str | Path) -> Path:
    """Save a figure (:func:`save_figure`), close it and display exactly the saved PNG."""
    import matplotlib.pyplot as plt  # heavy: only figures need it

    saved = save_figure(fig, path)
    plt.close(fig)
    try:
        from IPython.display import Image, display  # optional: present where notebooks run
    except ImportError:  # pragma: no cover
        return saved
    display(Image(data=saved.read_bytes(), format="png"))
    return saved


def png_data_uri(path: str | Path) -> str:
    """A PNG file as a ``data:`` URI (for HTML built in a notebook)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


DifferenceView = Literal["common scale", "per map"]
DIFFERENCE_VIEWS: tuple[DifferenceView, ...] = ("common scale", "per map")
"""The two normalisations of Fig. 4's difference maps (:func:`difference_figure`)."""


def difference_figure(results: str | Path, dataset: str, setting: str, image: str, methods: Sequence[str],
                      view: DifferenceView) -> Any:
    """Fig. 4: each method's absolute difference from the clean image, per colour channel (one row per channel).

    ``view`` ``"common scale"`` puts every map on one scale
    (:func:`common_scale_maps`, the largest difference is white); ``"per map"``
    stretches each map to its own maximum (:func:`mnd.metrics.difference_maps`).
    """
    panels = method_images(results, dataset, setting, image, methods)
    (_, clean), shown = panels[0], panels[1:]
    if view == "common scale":
        common, peak = common_scale_maps([img for _, img in shown], clean)
        stack = [m.transpose(2, 0, 1) for m in common]
        title = f"{dataset}, {image}, {setting}: {view} (white = {peak} levels)"
    else:
        stack = list(metrics.difference_maps(torch.cat([to_tensor(img) for _, img in shown]),
                                             to_tensor(clean).expand(len(shown), -1, -1, -1)).numpy())
        title = f"{dataset}, {image}, {setting}: {view}"
    tiles = [(f"{name}, {channel}", maps[c]) for c, channel in enumerate(("red", "green", "blue"))
             for (name, _), maps in zip(shown, stack)]
    fig = image_grid(tiles, columns=len(shown), size=2.0, cmap="gray")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def loss_maps_figure(clean: np.ndarray, adversarial: np.ndarray) -> Any:
    """What each term of eq. (7) compares: X, Z, |Z - X|, the Sobel maps g(X), g(Z), their difference, local SSIM."""
    import matplotlib.pyplot as plt  # heavy: only figures need it

    x, z = to_tensor(clean), to_tensor(adversarial)
    gx, gz = losses.sobel_magnitude(x)[0].mean(0), losses.sobel_magnitude(z)[0].mean(0)
    maps = [
        ("X (clean)", clean, None), ("Z (MND)", adversarial, None),
        ("|Z - X|", (z - x).abs()[0].sum(0).numpy(), "magma"),
        ("g(X)", gx.numpy(), "gray"), ("g(Z)", gz.numpy(), "gray"),
        ("|g(Z) - g(X)|", (gz - gx).abs().numpy(), "magma"),
        ("local SSIM(Z, X)", ssim_map(z, x), "gray"),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(12, 6.4))
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, img, cmap) in zip(axes.flat, maps):
        ax.imshow(img, cmap=cmap, interpolation="nearest")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def loss_terms_html(results: str | Path, dataset: str, setting: str, image: str, methods: Sequence[str]) -> str:
    """Every term of eq. (7) between the clean image and each method's adversarial image (:func:`mnd.trace.terms`)."""
    panels = method_images(results, dataset, setting, image, methods)
    x = to_tensor(panels[0][1])
    table = []
    for title, img in panels[1:]:
        t = trace.terms(to_tensor(img), x)
        table.append({"method": title, "l1 (eq. 8)": t["l1"], "l2 (eq. 9)": t["l2"], "SSIM (eq. 10)": t["ssim"],
                      "gradient l1 (eq. 18)": t["gradient_l1"], "PSNR": t["psnr"]})
    digits = {"l1 (eq. 8)": 5, "l2 (eq. 9)": 5, "SSIM (eq. 10)": 5, "gradient l1 (eq. 18)": 5, "PSNR": 2}
    return html_table(table, digits=digits, caption=f"{image}, {setting}")


def trace_figure(steps: Sequence[Mapping[str, Any]], setting: str) -> Any:
    """The traces of :func:`mnd.trace.load_or_run`: the goal class's probability and the PSNR, step by step."""
    import matplotlib.pyplot as plt  # heavy: only figures need it

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for variant in dict.fromkeys(r["variant"] for r in steps):
        mine = [r for r in steps if r["variant"] == variant]
        name = label(variant)
        left.plot([r["iteration"] for r in mine], [r["goal_prob"] for r in mine], label=name)
        right.plot([r["iteration"] for r in mine[1:]], [r["psnr"] for r in mine[1:]], label=name)
    left.set(xlabel="iteration", ylabel="probability of the " + ("target" if setting == "targeted" else "true") + " class")
    right.set(xlabel="iteration", ylabel="PSNR of the 8-bit image (dB)")
    left.legend(fontsize=8)
    fig.tight_layout()
    return fig


def trace_ends_html(steps: Sequence[Mapping[str, Any]]) -> str:
    """Where each trace of :func:`mnd.trace.load_or_run` ended: iterations, success and the final terms."""
    variants = list(dict.fromkeys(r["variant"] for r in steps))
    last = [[r for r in steps if r["variant"] == v][-1] for v in variants]
    return html_table(
        [{"setting": label(r["variant"]), "iterations": r["iteration"], "succeeded": r["adversarial"],
          "PSNR": r["psnr"], "SSIM": r["ssim"], "l1": r["l1"], "gradient l1": r["gradient_l1"],
          "error": r["error"]} for r in last],
        digits={"PSNR": 2, "SSIM": 5, "l1": 5, "gradient l1": 5}, caption="where each trace ended")


def pixel_ratio_figure(preset: grid.Preset, summary: Sequence[Mapping[str, Any]]) -> Any | None:
    """One bar chart per data set x setting of the mean changed-pixel ratio of each method (None: no results)."""
    import matplotlib.pyplot as plt  # heavy: only figures need it

    panels = [(d, st) for d in preset.names for st in preset.settings if grid.select(summary, dataset=d, setting=st)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (d, st) in zip(axes[0], panels):
        mine = grid.select(summary, dataset=d, setting=st)
        ax.barh([s["label"] for s in mine], [s["changed_ratio_all_mean"] for s in mine],
                color=["tab:red" if s["method"] == "mnd" else "tab:gray" for s in mine])
        ax.set(title=f"{d}, {st}", xlim=(0, 1), xlabel="changed pixels (mean over all attacked images)")
        ax.invert_yaxis()
    fig.tight_layout()
    return fig


# --- SSIM map and Grad-CAM ----------------------------------------------------------------------


def ssim_map(z: torch.Tensor, x: torch.Tensor) -> np.ndarray:
    """The local SSIM of eq. (10) at every position (channel mean), as the attack computes it.

    The statistics of :class:`mnd.losses.CleanReference` (piq's 11x11
    Gaussian window, sigma 1.5, two 1-D passes), before its mean over the
    positions: that mean is the SSIM term of eq. (7).

    Args:
        z, x: (1, C, H, W) images in [0, 1].

    Returns:
        (H - 10, W - 10) float array.
    """
    return losses.CleanReference(x.float()).ssim_map(z.float()).mean(1)[0].numpy()


def cam_layer(model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
    """Grad-CAM's target layer: the last module to produce a spatial feature map.

    With an ``example`` input, the model is run once and the last module (in
    execution order) whose output is (N, C, H, W) with H, W > 1 is taken: the
    final block or activation before global pooling (EfficientNet's ``bn2``,
    the last residual block of dlib's ResNet, VGG's last pooling). Without an
    example, the last ``nn.Conv2d``.
    """
    if example is not None:
        seen: list[nn.Module] = []

        def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4 and min(output.shape[-2:]) > 1:
                seen.append(module)

        handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
        try:
            with torch.no_grad():
                model(example)
        finally:
            for h in handles:
                h.remove()
        if seen:
            return seen[-1]
    last = None
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            last = module
    if last is None:
        raise InputError("grad-cam", f"{type(model).__name__} has no convolution layer")
    return last


def gradcam(model: nn.Module, images: torch.Tensor, classes: Sequence[int], layer: nn.Module | None = None) -> np.ndarray:
    """Grad-CAM heatmaps (pytorch-grad-cam) of ``classes`` for a batch of [0, 1] images.

    Returns:
        (N, H, W) maps in [0, 1].
    """
    from pytorch_grad_cam import GradCAM  # optional: the book extra
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    device = next(model.parameters()).device
    x = images.detach().float().to(device).requires_grad_(True)
    with GradCAM(model=model, target_layers=[layer or cam_layer(model, x[:1].detach())]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    return np.asarray(maps)


def overlay(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """A heatmap in [0, 1] over an (H, W, 3) uint8 image (pytorch-grad-cam's JET overlay)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image  # optional: the book extra

    return show_cam_on_image(image.astype(np.float32) / 255.0, heatmap, use_rgb=True)


def heatmap_figure(preset: grid.Preset, results: str | Path, dataset: str, setting: str, image: str,
                   methods: Sequence[str]) -> Any:
    """Fig. 3: Grad-CAM on the clean image and each method's image, each for the class the model predicts for it.

    Loads the data set's model (:func:`mnd.grid.open_dataset`) on the
    preset's device, with the preset's threads; the panel titles name the
    predicted classes.
    """
    panels = method_images(results, dataset, setting, image, methods)
    batch = torch.cat([to_tensor(img) for _, img in panels])
    with grid.threads(preset):
        opened = grid.open_dataset(preset, preset.dataset(dataset))
        with torch.no_grad():
            predicted = opened.model(batch.to(preset.device)).argmax(1).tolist()
        maps = gradcam(opened.model, batch, predicted)
    names = opened.classes
    shown = [(f"{title}: {names[c] if c < len(names) else c}", overlay(img, m))
             for (title, img), c, m in zip(panels, predicted, maps)]
    return image_grid(shown, columns=3)


# --- the subjective test (MOS) -------------------------------------------------------------------


def scale_html() -> str:
    """TABLE V, the 7-point rating scale."""
    return html_table([{"rule": k, "score": v} for k, v in mos.SCALE.items()], caption="TABLE V: the rating scale")


@dataclass(frozen=True)
class RatingSheet:
    """A run's rating sheet (:func:`write_rating_sheet`).

    Attributes:
        images: data set -> the images of the test, in order.
        pairs: the pairs of the sheet (:func:`mnd.mos.make_sheet`).
        files: what :func:`mnd.mos.write_sheet` wrote (``html``, ``key``, ``ratings``, ...).
    """

    images: dict[str, list[str]]
    pairs: list[mos.Pair]
    files: dict[str, Path]


def write_rating_sheet(preset: grid.Preset, results: str | Path, rows: Sequence[Mapping[str, Any]], *,
                       images_per_dataset: int, seed: int) -> RatingSheet:
    """Draw the test's images and pairs for a run and write its sheet into ``<results>/mos/``.

    Per data set the grid ran, ``images_per_dataset`` images drawn with
    ``seed`` among those MND and every compared anchor made adversarial in
    every setting (:func:`mnd.mos.choose_images`); MND is compared with the
    preset's anchors of the paper's test (:func:`mos_anchors`). Collected
    ratings already in the folder are kept.
    """
    results = Path(results)
    compared = mos_anchors(preset.methods)
    chosen = {}
    for spec in preset.datasets:
        if dataset_status(results, spec.name)[0]:
            chosen[spec.name] = mos.choose_images(rows, spec.name, images_per_dataset, settings=preset.settings,
                                                  anchors=compared, seed=seed)
    pairs = mos.make_sheet(chosen, settings=preset.settings, anchors=compared, seed=seed,
                           path_of=lambda d, s, m, i: str(grid.png_path(Path("."), d, s, m, i)))
    files = mos.write_sheet(pairs, results / "mos", image_root=results)
    return RatingSheet(images=chosen, pairs=pairs, files=files)


def rating_sheet_markdown(sheet: RatingSheet) -> str:
    """What the sheet holds and where its files are."""
    files = sheet.files
    return (f"{len(sheet.pairs)} pairs over {sum(map(len, sheet.images.values()))} images; "
            f"sheet: `{files['html'].name}`, key: `{files['key'].name}`, ratings: `{files['ratings'].name}` "
            f"in the results folder's `mos/`.")


def rated_images_html(pairs: Iterable[mos.Pair]) -> str:
    """The images of the test with their IDs (I1, I2, ...)."""
    tested = sorted({(int(p.image_id[1:]), p.image_id, p.dataset, p.image) for p in pairs})
    return html_table([{"image ID": i, "data set": d, "image": n} for _, i, d, n in tested],
                      caption="the images of the test")


def pairs_figure(results: str | Path, pairs: Sequence[mos.Pair]) -> Any:
    """The two sides of each of ``pairs`` as raters see them."""
    import matplotlib.pyplot as plt  # heavy: only figures need it

    fig, axes = plt.subplots(len(pairs), 2, figsize=(6, 3 * len(pairs)), squeeze=False)
    for (left, right), p in zip(axes, pairs):
        for ax, side, path in ((left, "left", p.left), (right, "right", p.right)):
            ax.imshow(load_image(Path(results) / path))
            ax.set_title(f"{p.pair_id} {side}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    return fig


def collected_ratings(sheet: RatingSheet, ratings: str | Path = "") -> tuple[Path, list[mos.Rating]]:
    """The ratings file (``ratings``, else the sheet's ``ratings.csv``) and its ratings ([] when it does not exist)."""
    source = Path(ratings) if ratings else sheet.files["ratings"]
    return source, (mos.read_ratings(source, sheet.pairs) if source.exists() else [])


def mos_tables_html(ratings: Sequence[mos.Rating], pairs: Sequence[mos.Pair]) -> list[str]:
    """This run's MOS tables, one per data set x setting, in the layout of Tables III, IV, VIII and IX."""
    table = mos.mos_table(mos.mnd_scores(ratings, pairs))
    raters = len({r.rater for r in ratings})
    out = []
    for (d, st) in dict.fromkeys((r["dataset"], r["setting"]) for r in table):
        block = [r for r in table if r["dataset"] == d and r["setting"] == st]
        out.append(html_table(mos.wide(block), caption=f"MOS of MND versus each anchor: {d}, {st} ({raters} raters)"))
    return out


def paper_mos_html() -> list[str]:
    """The paper's MOS tables (III, IV, VIII, IX) with their printed Average rows, then printed versus recomputed."""
    paper = mos.paper_tables()
    printed = {(r["table"], r["versus"]): r["mean"] for r in mos.paper_averages()}
    out = []
    for name in dict.fromkeys(str(r["table"]) for r in paper):
        block = [dict(r) for r in paper if r["table"] == name]
        lines = mos.wide(block + [{"image_id": "Average (printed)", "versus": v, "mean": m, "std": float("nan")}
                                  for (t, v), m in printed.items() if t == name])
        first = block[0]
        out.append(html_table(lines, caption=f"TABLE {name}: {first['dataset']}, {first['setting']}"))
    check = mos.check_averages(paper, mos.paper_averages())
    out.append(html_table(check, ["table", "versus", "printed", "recomputed", "difference", "matches"],
                          digits={"recomputed": 4, "difference": 4}, caption="printed versus recomputed averages"))
    return out


def paper_mos_markdown() -> str:
    """The printed averages that are not the mean of their rows, and what section IV-C-5's text gets wrong."""
    wrong = [c for c in mos.check_averages(mos.paper_tables(), mos.paper_averages()) if not c["matches"]]
    return ("**Averages that do not match:** " + ("; ".join(
        f"TABLE {c['table']} vs. {c['versus']}: printed {c['printed']:.2f}, mean of its rows {c['recomputed']:.4f}"
        for c in wrong) if wrong else "none.") + "\n\nThe text of section IV-C-5 disagrees with the tables too:\n\n"
        + "\n".join(f"- **{i.title}.** {i.text}" for i in paper_inconsistencies()
                    if i.title.startswith("Section IV-C-5")))


# --- claims: what reproduced -------------------------------------------------------------------


def verdict(checks: Sequence[bool]) -> str:
    """``supported`` (all true), ``not supported`` (none), ``partly supported``, or ``no data``."""
    if not checks:
        return "no data"
    if all(checks):
        return "supported"
    if not any(checks):
        return "not supported"
    return "partly supported"


@dataclass
class Claim:
    """One claim of the paper, checked against a run.

    Attributes:
        title: the claim, short.
        paper: where and how the paper states it.
        verdict: from :func:`verdict` over ``checks``.
        rows: the evidence, one row per table (or pair compared).
        columns: which keys of ``rows`` to show.
        checks: one boolean per row that decides the verdict.
        note: caveats.
    """

    title: str
    paper: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    checks: list[bool] = field(default_factory=list)
    note: str = ""

    @property
    def verdict(self) -> str:
        return verdict(self.checks)


def _index(summary: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    return {(s["dataset"], s["setting"], s["method"]): s for s in summary}


def _paper_index() -> dict[tuple[str, str], dict[str, float]]:
    return grid.paper_psnr_ssim()


def _where(spec: grid.DatasetSpec, setting: str) -> str:
    table = spec.paper_table(setting)
    return f"{spec.name}, {setting}" + (f" (Table {table})" if table else "")


def _ok(entry: Mapping[str, Any] | None) -> bool:
    """At least one successful attack."""
    return entry is not None and entry["succeeded"] > 0


def _measured(entry: Mapping[str, Any] | None) -> bool:
    """At least one attacked image with measured metrics (so the all-attacked means exist)."""
    return entry is not None and entry.get("measured", 0) > 0


def _higher(a: float, b: float) -> bool:
    """``a > b`` for two finite means (an infinite mean, from an unchanged image, decides nothing)."""
    return math.isfinite(a) and math.isfinite(b) and a > b


ALL_MEANS_NOTE = ("PSNR, SSIM, changed-pixel ratios and iterations here are means over all attacked images, "
                  "successful or not (a failed attack counts with its final image and its iteration cap), as the "
                  "paper's tables average over all their tested images; the pages of Tables I, II, VI and VII also "
                  "show the means over the successful attacks only.")
"""What every claim built on :func:`mnd.grid.summarize` averages over."""


def claim_best(preset: grid.Preset, summary: Sequence[Mapping[str, Any]]) -> Claim:
    """"MND has the best PSNR and SSIM of all methods", per table, on the means over all attacked images."""
    idx = _index(summary)
    claim = Claim(
        "MND gives the best PSNR and the best SSIM of all methods",
        "Sections IV-B-3 and IV-C-3: in each of Tables I, II, VI and VII, MND has the highest mean PSNR and SSIM "
        "of the four anchors and the six other ablation settings.",
        columns=["table", "MND PSNR (all attacked)", "best other PSNR (all attacked)", "MND SSIM (all attacked)",
                 "best other SSIM (all attacked)", "MND success", "holds"],
        note=ALL_MEANS_NOTE + " Only methods that made at least one image adversarial are compared. A table "
             "holds when MND's two means are higher than every other method's and MND made at least one image "
             "adversarial; an infinite mean (an image an attack left unchanged) decides nothing.",
    )
    for spec in preset.datasets:
        for setting in preset.settings:
            mnd = idx.get((spec.name, setting, "mnd"))
            others = [s for (d, st, m), s in idx.items()
                      if d == spec.name and st == setting and m != "mnd" and _ok(s) and _measured(s)]
            if not _measured(mnd) or not others:
                continue
            best_psnr = max(others, key=lambda s: s["psnr_all_mean"])
            best_ssim = max(others, key=lambda s: s["ssim_all_mean"])
            holds = (_ok(mnd) and _higher(mnd["psnr_all_mean"], best_psnr["psnr_all_mean"])  # type: ignore[index]
                     and _higher(mnd["ssim_all_mean"], best_ssim["ssim_all_mean"]))  # type: ignore[index]
            claim.rows.append({
                "table": _where(spec, setting),
                "MND PSNR (all attacked)": fmt(mnd["psnr_all_mean"], 2),  # type: ignore[index]
                "best other PSNR (all attacked)": f"{best_psnr['label']} {fmt(best_psnr['psnr_all_mean'], 2)}",
                "MND SSIM (all attacked)": fmt(mnd["ssim_all_mean"], 4),  # type: ignore[index]
                "best other SSIM (all attacked)": f"{best_ssim['label']} {fmt(best_ssim['ssim_all_mean'], 4)}",
                "MND success": f"{mnd['succeeded']}/{mnd['attacked']}",  # type: ignore[index]
                "holds": holds,
            })
            claim.checks.append(holds)
    return claim


ABLATION_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("l1", "l2", "the l1 deviation term beats l2"),
    ("l1", "no_norm", "the l1 deviation term beats no perceptual term"),
    ("l1_ssim", "l1", "adding SSIM to l1 helps"),
    ("l2_ssim", "l2", "adding SSIM to l2 helps"),
    ("mnd", "l1_ssim", "adding the Sobel gradient term helps"),
)
"""(better, worse, what it says): the ablation ordering of section IV-B-3."""


def _kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-a of two equally long sequences (NaN for fewer than two)."""
    n = len(a)
    if n < 2:
        return math.nan
    s = 0
    for i in range(n):
        for j in range(i + 1, n):
            s += int(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]))
    return s / (n * (n - 1) / 2)


def claim_ablation(preset: grid.Preset, summary: Sequence[Mapping[str, Any]]) -> Claim:
    """The ablation ordering: l1 > l2, no norm; + SSIM helps; + gradient helps (PSNR and SSIM)."""
    idx = _index(summary)
    paper = _paper_index()
    variants = split_methods(preset.methods)[0]
    claim = Claim(
        "The ablation ordering: l1 beats l2 and no norm, SSIM helps, the gradient term helps",
        "Section IV-B-3 (and IV-C-3): the l1 deviation loss is more effective than l2 and no norm; adding SSIM "
        "improves PSNR and SSIM; the Sobel gradient similarity improves them further, so the full MND is best.",
        columns=["table", "comparison", "ours PSNR (all attacked)", "ours SSIM (all attacked)", "paper PSNR",
                 "paper SSIM", "holds"],
        note=ALL_MEANS_NOTE + " Two settings are compared when both made at least one image adversarial. A "
             "comparison holds for this run when the better setting has both the higher mean "
             "PSNR and the higher mean SSIM; the columns give the differences (better − worse). The paper's own "
             "tables are checked the same way. Kendall's tau compares the order of the seven settings by mean PSNR "
             "with the paper's order (1: same order).",
    )
    for spec in preset.datasets:
        for setting in preset.settings:
            table = spec.paper_table(setting)
            for better, worse, text in ABLATION_CHECKS:
                if better not in variants or worse not in variants:
                    continue
                a, b = idx.get((spec.name, setting, better)), idx.get((spec.name, setting, worse))
                if not (_ok(a) and _ok(b) and _measured(a) and _measured(b)):
                    continue
                dp = a["psnr_all_mean"] - b["psnr_all_mean"]  # type: ignore[index]
                ds = a["ssim_all_mean"] - b["ssim_all_mean"]  # type: ignore[index]
                pa, pb = paper.get((table or "", label(better))), paper.get((table or "", label(worse)))
                holds = _higher(dp, 0.0) and _higher(ds, 0.0)
                claim.rows.append({
                    "table": _where(spec, setting),
                    "comparison": f"{label(better)} vs {label(worse)}: {text}",
                    "ours PSNR (all attacked)": signed(dp, 2),
                    "ours SSIM (all attacked)": signed(ds, 5),
                    "paper PSNR": signed(pa["psnr_mean"] - pb["psnr_mean"], 2) if pa and pb else "–",
                    "paper SSIM": signed(pa["ssim_mean"] - pb["ssim_mean"], 5) if pa and pb else "–",
                    "holds": holds,
                })
                claim.checks.append(holds)
            ranked = [m for m in variants
                      if _ok(idx.get((spec.name, setting, m))) and _measured(idx.get((spec.name, setting, m)))
                      and paper.get((table or "", label(m)))
                      and math.isfinite(idx[(spec.name, setting, m)]["psnr_all_mean"])]
            if len(ranked) >= 2:
                ours = [idx[(spec.name, setting, m)]["psnr_all_mean"] for m in ranked]
                theirs = [paper[(table or "", label(m))]["psnr_mean"] for m in ranked]
                claim.rows.append({
                    "table": _where(spec, setting),
                    "comparison": f"order of {len(ranked)} settings by PSNR: Kendall tau {fmt(_kendall(ours, theirs), 2)}",
                    "ours PSNR (all attacked)": "", "ours SSIM (all attacked)": "", "paper PSNR": "", "paper SSIM": "",
                    "holds": "",
                })
    return claim


def claim_targeted(preset: grid.Preset, summary: Sequence[Mapping[str, Any]]) -> Claim:
    """Non-targeted attacks are easier than targeted ones."""
    idx = _index(summary)
    claim = Claim(
        "Non-targeted attacks are easier than targeted ones",
        "Sections III-C-2 and IV-B-3: non-targeted attacks are easier; MND's PSNR and SSIM are higher "
        "non-targeted (Table I: 48.55 dB) than targeted (Table II: 46.56 dB).",
        columns=["data set", "method", "success (non-t. / t.)", "iterations, all attacked (non-t. / t.)",
                 "PSNR, all attacked (non-t. / t.)", "holds"],
        note=ALL_MEANS_NOTE + " A method is compared when it made at least one image adversarial in both settings. "
             "Holds when the non-targeted attack needs fewer iterations on average and gives the "
             "higher mean PSNR (its success rate is shown too). The paper's two settings also differ in their "
             "hyper-parameters "
             "(betas 100/100/100 non-targeted; 2/0.1/2 for ImageNet and 1/0.1/1 for faces targeted, with r = "
             "0.0625), so the comparison measures setting and hyper-parameters together, as the paper's does.",
    )
    if not {"non-targeted", "targeted"} <= set(preset.settings):
        return claim
    for spec in preset.datasets:
        for method in split_methods(preset.methods)[0]:
            a, b = idx.get((spec.name, "non-targeted", method)), idx.get((spec.name, "targeted", method))
            if not (_ok(a) and _ok(b) and _measured(a) and _measured(b)):
                continue
            holds = (_higher(b["iterations_all_mean"], a["iterations_all_mean"])  # type: ignore[index]
                     and _higher(a["psnr_all_mean"], b["psnr_all_mean"]))  # type: ignore[index]
            claim.rows.append({
                "data set": spec.name,
                "method": label(method),
                "success (non-t. / t.)": f"{a['succeeded']}/{a['attacked']} / {b['succeeded']}/{b['attacked']}",  # type: ignore[index]
                "iterations, all attacked (non-t. / t.)":
                    f"{fmt(a['iterations_all_mean'], 1)} / {fmt(b['iterations_all_mean'], 1)}",  # type: ignore[index]
                "PSNR, all attacked (non-t. / t.)":
                    f"{fmt(a['psnr_all_mean'], 2)} / {fmt(b['psnr_all_mean'], 2)}",  # type: ignore[index]
                "holds": holds,
            })
            claim.checks.append(holds)
    return claim


def claim_pixels(preset: grid.Preset, summary: Sequence[Mapping[str, Any]]) -> Claim:
    """MND changes fewer pixels than every anchor."""
    idx = _index(summary)
    anchor_names = split_methods(preset.methods)[1]
    claim = Claim(
        "MND changes the fewest pixels",
        "Section IV-D-2: on the image of Fig. 4 (targeted) the ratio of changed pixels is BIM 0.8240, MIFGSM "
        "0.9491, DI2FGSM 0.8240, PGD 0.9122 and MND 0.6345.",
        columns=["table", "MND (all attacked)", "anchors (all attacked)", "holds"],
        note="Mean ratio of changed values (over the three colour channels) over all attacked images, for the "
             "anchors that made at least one image adversarial. A table holds when MND's is lower than every "
             "anchor's and MND made at least one image adversarial.",
    )
    for spec in preset.datasets:
        for setting in preset.settings:
            mnd = idx.get((spec.name, setting, "mnd"))
            anchors = [s for (d, st, m), s in idx.items()
                       if d == spec.name and st == setting and m in anchor_names
                       and _ok(s) and _measured(s)]
            if not _measured(mnd) or not anchors:
                continue
            ratio = mnd["changed_ratio_all_mean"]  # type: ignore[index]
            holds = _ok(mnd) and all(_higher(s["changed_ratio_all_mean"], ratio) for s in anchors)
            claim.rows.append({
                "table": _where(spec, setting),
                "MND (all attacked)": fmt(mnd["changed_ratio_all_mean"], 4),  # type: ignore[index]
                "anchors (all attacked)": ", ".join(f"{s['label']} {fmt(s['changed_ratio_all_mean'], 4)}"
                                                    for s in anchors),
                "holds": holds,
            })
            claim.checks.append(holds)
    return claim


def claim_success(preset: grid.Preset, summary: Sequence[Mapping[str, Any]]) -> Claim:
    """MND images still fool the model."""
    idx = _index(summary)
    claim = Claim(
        "MND images fool the model",
        "Abstract and section V: the MND images attack the classifiers successfully while keeping the quality.",
        columns=["table", "MND success", "mean iterations (successes)", "holds"],
        note="Success is decided on the saved 8-bit image; an attack still failing after the iteration cap counts "
             "as a failure (reading notes, section 3).",
    )
    for spec in preset.datasets:
        for setting in preset.settings:
            mnd = idx.get((spec.name, setting, "mnd"))
            if mnd is None or not mnd["attacked"]:
                continue
            holds = mnd["succeeded"] == mnd["attacked"]
            claim.rows.append({"table": _where(spec, setting), "MND success": f"{mnd['succeeded']}/{mnd['attacked']}",
                               "mean iterations (successes)": fmt(mnd["iterations_success_mean"], 1),
                               "holds": holds})
            claim.checks.append(holds)
    return claim


def claim_mos(results: str | Path | None) -> Claim:
    """Raters prefer MND to every anchor (needs collected ratings in ``<results>/mos/``)."""
    claim = Claim(
        "Raters prefer MND to every anchor",
        "Sections IV-B-5 and IV-C-5: every average MOS of MND versus an anchor is positive (Tables III, IV, VIII, "
        "IX; e.g. 1.64 to 2.09 targeted on ImageNet).",
        columns=["data set", "setting", "versus", "average MOS", "holds"],
        note="The average over the test's images of the mean score of MND against the anchor (positive: MND "
             "preferred), from the ratings collected with the sheet of the MOS page.",
    )
    folder = Path(results) / "mos" if results is not None else None
    if folder is None or not (folder / "key.csv").exists() or not (folder / "ratings.csv").exists():
        claim.note = "No rating sheet was written for this run."
        return claim
    pairs = mos.read_key(folder / "key.csv")
    ratings = mos.read_ratings(folder / "ratings.csv", pairs)
    if not ratings:
        claim.note = ("No ratings have been collected for this run (mos/ratings.csv is empty), so this claim is not "
                      "checked; the MOS page has the sheet.")
        return claim
    for row in mos.mos_table(mos.mnd_scores(ratings, pairs)):
        if row["image_id"] == "Average":
            holds = row["mean"] > 0
            claim.rows.append({"data set": row["dataset"], "setting": row["setting"],
                               "versus": mos.LABELS.get(row["versus"], row["versus"]),
                               "average MOS": fmt(row["mean"], 2), "holds": holds})
            claim.checks.append(holds)
    return claim


def claims(preset: grid.Preset, rows: Sequence[Mapping[str, Any]], results: str | Path | None = None) -> list[Claim]:
    """Every checked claim of the paper, for one run's result rows (and its MOS ratings, if any)."""
    summary = grid.summarize(rows, preset)
    found = [f(preset, summary) for f in (claim_best, claim_ablation, claim_targeted, claim_pixels, claim_success)]
    return found + [claim_mos(results)]


# --- the paper's own inconsistencies ---------------------------------------------------------

TEXT_QUOTES: dict[str, Any] = {
    "intro_psnr": (30.0, 35.0),  # introduction: "around 30~35dB/0.78~0.89 ... of the anchor methods on ImageNet"
    "intro_ssim": (0.78, 0.89),
    "viii_bim": 1.84,  # section IV-C-5, first paragraph: "... MND VS. BIM are ... 1.84"
    "ix_rfgsm": 0.29,  # section IV-C-5, second paragraph: "... MND VS. RFGSM are ... 0.29"
}
"""Numbers the paper's text states (not its tables): what :func:`paper_inconsistencies` checks them against."""

ANCHOR_LABELS: tuple[str, ...] = tuple(label(m) for m in anchors.PAPER_ANCHORS)
"""The anchors' row labels in the paper's Tables I, II, VI and VII (:data:`mnd.anchors.PAPER_ANCHORS`)."""


@dataclass(frozen=True)
class Inconsistency:
    """A place where the paper disagrees with itself; ``text`` gives the numbers (computed from data/paper/)."""

    title: str
    text: str


def _range(values: Iterable[float], digits: int) -> str:
    values = list(values)
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def paper_inconsistencies() -> list[Inconsistency]:
    """The paper's own inconsistencies, each with its numbers computed from the table values in ``data/paper/``.

    Only the numbers the paper's text states are constants (:data:`TEXT_QUOTES`); every table value, mean,
    range and comparison is read or computed from the CSV files.
    """
    found: list[Inconsistency] = []
    per_image, printed = mos.paper_tables(), mos.paper_averages()
    for c in mos.check_averages(per_image, printed):
        if not c["matches"]:
            found.append(Inconsistency(
                f"TABLE {c['table']}: the average against {c['versus']}",
                f"The table prints {c['printed']:.2f}; the mean of its {c['images']} image rows is "
                f"{c['recomputed']:.4f}, which rounds to {c['recomputed']:.2f}."))
    average = {(r["table"], r["versus"]): float(r["mean"]) for r in printed}
    viii = average.get(("VIII", "BIM"), math.nan)
    if abs(viii - TEXT_QUOTES["viii_bim"]) > 0.005:
        order = sorted((v, k[1]) for k, v in average.items() if k[0] == "VIII")
        found.append(Inconsistency(
            "Section IV-C-5 against TABLE VIII",
            f"The text quotes the average of MND against BIM as {TEXT_QUOTES['viii_bim']:.2f}; TABLE VIII prints "
            f"{viii:.2f}. The text's own ranking (BIM closest to MND, then DI2FGSM, PGD and MIFGSM) fits the "
            f"table's averages ({', '.join(f'{n} {v:.2f}' for v, n in order)}), not {TEXT_QUOTES['viii_bim']:.2f}."))
    anchors_mos = sorted({str(r["versus"]) for r in per_image})
    if "RFGSM" not in anchors_mos:
        ix = ", ".join(f"{v} {average[('IX', v)]:.2f}" for v in anchors_mos if ("IX", v) in average)
        found.append(Inconsistency(
            "Section IV-C-5 against TABLE IX",
            f"The second paragraph quotes an average against RFGSM ({TEXT_QUOTES['ix_rfgsm']:.2f}), but no MOS "
            f"table has an RFGSM column (they compare with {', '.join(anchors_mos)} only); its other four values "
            f"are TABLE IX's ({ix}). The same paragraph calls the setting targeted; TABLE IX's caption says "
            "non-targeted."))
    tables = grid.paper_psnr_ssim()
    imagenet = [(t, m, v) for (t, m), v in tables.items() if t in ("I", "II") and m in ANCHOR_LABELS]
    psnr = [v["psnr_mean"] for _, _, v in imagenet]
    ssim = [v["ssim_mean"] for _, _, v in imagenet]
    (lo_p, hi_p), (lo_s, hi_s) = TEXT_QUOTES["intro_psnr"], TEXT_QUOTES["intro_ssim"]
    if min(psnr) < lo_p or max(psnr) > hi_p or min(ssim) < lo_s or max(ssim) > hi_s:
        outside = [f"{m} (Table {t}) {v['psnr_mean']:.2f} dB / {v['ssim_mean']:.4f}" for t, m, v in imagenet
                   if not (lo_p <= v["psnr_mean"] <= hi_p and lo_s <= v["ssim_mean"] <= hi_s)]
        found.append(Inconsistency(
            "The introduction against Tables I and II",
            f"The introduction puts the anchors' average PSNR/SSIM on ImageNet at \"around {lo_p:.0f}~{hi_p:.0f}dB/"
            f"{lo_s:.2f}~{hi_s:.2f}\"; Tables I and II show {_range(psnr, 2)} dB and {_range(ssim, 4)}, with "
            f"{len(outside)} of the {len(imagenet)} anchor rows outside that range: {'; '.join(outside)}."))
    ratios: dict[str, list[str]] = {}
    pixel_rows = experiments.read_rows(grid.paper_dir() / "pixel_ratio.csv")
    for r in pixel_rows:
        ratios.setdefault(r["changed_ratio"], []).append(r["method"])
    for value, methods in sorted(ratios.items()):
        if len(methods) > 1:
            others = ", ".join(f"{r['method']} {r['changed_ratio']}" for r in pixel_rows if r["method"] not in methods)
            found.append(Inconsistency(
                "The changed-pixel ratios of section IV-D-2",
                f"{' and '.join(methods)} have exactly the same ratio, {value}, on the image of Fig. 4, to four "
                f"digits, while the other methods differ ({others}): two different attacks are unlikely to change "
                "exactly as many values, which suggests that one number was copied from the other."))
    for table in ("I", "II", "VI", "VII"):
        stds = {m: tables[(table, m)]["psnr_std"] for m in ANCHOR_LABELS if (table, m) in tables}
        if len(stds) < 2:
            continue
        low = min(stds, key=lambda m: stds[m])
        rest = [v for m, v in stds.items() if m != low]
        if stds[low] * 5 < min(rest):
            every = [v["psnr_std"] for (t, m), v in tables.items() if m in ANCHOR_LABELS and (t, m) != (table, low)]
            found.append(Inconsistency(
                f"TABLE {table}: the PSNR standard deviation of {low}",
                f"{stds[low]:.2f} dB, against {_range(rest, 2)} dB for the other anchors of the same table "
                f"({_range(every, 2)} dB over the other {len(every)} anchor rows of Tables I, II, VI and VII), "
                f"while its SSIM std, {tables[(table, low)]['ssim_std']:.4f}, is like theirs: possibly a misprint."))
    for plain, aimed in (("I", "II"), ("VI", "VII")):
        both = [m for m in ANCHOR_LABELS if (plain, m) in tables and (aimed, m) in tables]
        higher = [(m, tables[(aimed, m)]["psnr_mean"], tables[(plain, m)]["psnr_mean"]) for m in both
                  if tables[(aimed, m)]["psnr_mean"] > tables[(plain, m)]["psnr_mean"]]
        if higher:
            mnd = (tables[(plain, "MND")]["psnr_mean"], tables[(aimed, "MND")]["psnr_mean"])
            found.append(Inconsistency(
                f"Targeted against non-targeted anchors (Tables {plain} and {aimed})",
                "Section IV-B-3 reads the lower targeted PSNR as \"non-targeted attack is easier than targeted "
                f"attack\" (MND: {mnd[0]:.2f} dB in Table {plain}, {mnd[1]:.2f} dB in Table {aimed}), but "
                f"{len(higher)} of the {len(both)} anchors score a higher PSNR targeted than "
                "non-targeted: " + ", ".join(f"{m} {t:.2f} vs {n:.2f} dB" for m, t, n in higher) + "."))
    return found


# --- the generated page -------------------------------------------------------------------------


def public_paths(preset: grid.Preset, *folders: str | Path) -> list[tuple[str, str]]:
    """(machine path, what a published page shows instead), longest first, for :func:`scrub`.

    Covers the given folders (results, book source), the checkout, this
    Python's prefix, the home folder and the preset's data folders and files.
    """
    pairs: list[tuple[str, str]] = []
    for folder, shown in [(f, f"<{Path(f).name}>") for f in folders] + [
        (grid.project_root(), "<checkout>"), (sys.prefix, "<python>"), (Path.home(), "~"),
    ]:
        pairs.append((str(Path(folder).resolve()), shown))
        pairs.append((str(Path(folder)), shown))
    for spec in preset.datasets:
        for value, what in ((spec.root, "root"), (spec.manifest, "manifest"), (spec.gallery, "gallery")):
            if value and value != "embedded":
                pairs.append((str(Path(value).resolve()), f"<{spec.name} {what}>"))
                pairs.append((value, f"<{spec.name} {what}>"))
    for value, shown in ((preset.hparams, "<hparams>"), (preset.path, Path(preset.path).name)):
        if value and os.sep in value:
            pairs.append((str(Path(value).resolve()), shown))
            pairs.append((value, shown))
    unique = {p: shown for p, shown in pairs if p not in ("", ".", os.sep)}
    return sorted(unique.items(), key=lambda kv: -len(kv[0]))


def scrub(text: str, paths: Sequence[tuple[str, str]]) -> str:
    """``text`` with every machine path of :func:`public_paths` replaced by its public name.

    A path is replaced only where it stands alone (not inside a longer word or
    a base64 string such as an embedded image).

    >>> scrub("saved in /home/me/results/tiny/x.png", [("/home/me/results/tiny", "<tiny>"), ("/home/me", "~")])
    'saved in <tiny>/x.png'
    """
    for path, shown in paths:
        if path in text:
            text = re.sub(rf"(?<![\w/+.-]){re.escape(path)}(?![\w.+-])", lambda _: shown, text)
    return text


def setup_lines(preset: grid.Preset, summary: Sequence[Mapping[str, Any]]) -> list[str]:
    """One Markdown bullet per data set: its model and images, and whether they are the paper's."""
    lines = []
    for spec in preset.datasets:
        images = max((int(s["images"]) for s in summary if s["dataset"] == spec.name), default=None)
        tables = [t for _, t in spec.paper_tables]
        setups = {grid.PAPER_SETUPS[t].text for t in tables if t in grid.PAPER_SETUPS}
        paper = f"the paper's Tables {' and '.join(tables)}: {'; '.join(sorted(setups))}" if setups else \
            "no table of the paper"
        if tables and all(spec.same_as_paper(st) for st, _ in spec.paper_tables):
            verdict = "the paper's model and test set, so differences from the paper's values are given"
        else:
            verdict = ("**not the paper's model and data**: the paper's values are shown for reference only, with "
                       "no differences; the claims test whether its findings carry over")
        lines.append(f"- `{spec.name}`: {setup_text(spec, images)} ({paper}); {verdict}.")
    return lines


def reproduction_page(preset: grid.Preset, results: str | Path) -> str:
    """The generated "what reproduced and what did not" page (MyST Markdown, no timestamps, no machine paths)."""
    results = Path(results)
    rows = grid.read_results(results)
    run = grid.read_run(results)
    summary = grid.summarize(rows, preset)
    out = ["# What reproduced and what did not", ""]
    out += [f"Generated by `mnd book` from the results of preset `{preset.name}` ({len(rows)} result rows). "
            "Each claim is checked on this run's numbers; the verdict is *supported* when every table agrees, "
            "*partly supported* when some do, *not supported* when none does, *no data* when nothing could be "
            "compared.", ""]
    out += ["Models and data of this run:", "", *setup_lines(preset, summary), "", ALL_MEANS_NOTE, ""]
    skipped = {k: v for k, v in run.get("datasets", {}).items() if v.get("status") != "ok"}
    for name, info in skipped.items():
        out += [f"```{{warning}}\nData set `{name}` was not run: {info.get('reason', 'skipped')}\n```", ""]
    failed = [r for r in rows if str(r.get("note", "")).startswith("failed:")]
    if failed:
        kinds = sorted({(r["dataset"], r["setting"], r["method"], str(r["note"])[:160]) for r in failed})
        text = "\n".join(f"- {d} {s} {m}: {n}" for d, s, m, n in kinds)
        out += [f"```{{warning}}\n{len(failed)} attacks raised an error and are left out of every mean:\n\n{text}\n```", ""]
    out += ["| claim | verdict |", "| --- | --- |"]
    found = claims(preset, rows, results)
    for k, c in enumerate(found, start=1):
        out.append(f"| {k}. {c.title} | **{c.verdict}** |")
    out.append("")
    for k, c in enumerate(found, start=1):
        out += [f"## {k}. {c.title}", "", f"*The paper:* {c.paper}", "", f"*This run:* **{c.verdict}**.", ""]
        if c.rows:
            out += [markdown_table(c.rows, c.columns), ""]
        if c.note:
            out += [c.note, ""]
    out += ["## The paper's own inconsistencies", "",
            "Places where the paper disagrees with itself. Every table value below is read from the paper's tables "
            "as transcribed in `data/paper/`, and every mean and range is computed from them.", ""]
    out += [f"- **{item.title}.** {item.text}" for item in paper_inconsistencies()]
    out += ["", "## This run", "", f"- preset: `{preset.name}` ({Path(preset.path).name})"]
    if preset.overrides:
        out.append(f"- overrides: {', '.join(f'`{o}`' for o in preset.overrides)}")
    out += [f"- MND iteration cap: {preset.effective_max_iter()} (the paper: 1000)",
            f"- seed: {preset.seed}; device: {preset.device}"]
    for spec in preset.datasets:
        out.append(f"- {spec.name}: {spec.title}; model `{spec.model}`")
    if preset.description:
        out += ["", " ".join(preset.description.split())]
    if preset.notes:
        out += ["", " ".join(preset.notes.split())]
    versions = run.get("versions", {})
    if versions:
        out += ["", "Package versions of the last grid run:", "",
                markdown_table([{"package": k, "version": v} for k, v in sorted(versions.items())], ["package", "version"])]
    return scrub("\n".join(out) + "\n", public_paths(preset, results))


# --- running the notebooks and building the book ----------------------------------------------


@contextlib.contextmanager
def _kernel_environment() -> Iterator[None]:
    """Make the notebook kernels run this Python with this very ``mnd``.

    ``PYTHONPATH`` gets the checkout (a source checkout need not be installed);
    ``JUPYTER_PATH`` puts this environment's kernel specs first, so a
    ``python3`` kernel spec in the user's home cannot send the notebooks to
    another Python; ``PYTHONWARNINGS`` silences tqdm's "IProgress not found"
    (a kernel without ipywidgets keeps plain progress bars), which
    ``tqdm.auto`` warns when ``mnd`` is first imported, before any cell
    could filter it.
    """
    first = {"PYTHONPATH": str(grid.project_root()), "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter")}
    last = {"PYTHONWARNINGS": "ignore:IProgress not found"}  # the last filter given wins
    old = {k: os.environ.get(k) for k in (*first, *last)}
    for key, value in first.items():
        os.environ[key] = os.pathsep.join([value, old[key]] if old[key] else [value])
    for key, value in last.items():
        os.environ[key] = ",".join([old[key], value] if old[key] else [value])
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def preset_argument(preset: grid.Preset) -> str:
    """How notebooks find the preset: its packaged name, or the absolute path of its file."""
    if preset.path == f"{preset.name}.toml" and preset.name in grid.preset_names() and not Path(preset.path).exists():
        return preset.name
    return str(Path(preset.path).resolve())


def parameters(preset: grid.Preset, results: Path, notebook: str) -> dict[str, Any]:
    """The papermill parameters of one page: results, preset, overrides, the page's own, then the preset's own.

    Args:
        preset: the run's preset; its ``[notebooks.<notebook>]`` table comes last.
        results: the results folder.
        notebook: a page of :data:`PAGES`.
    """
    params: dict[str, Any] = {"results": str(Path(results).resolve()), "preset": preset_argument(preset),
                              "overrides": list(preset.overrides)}
    params.update(page(notebook).parameters)
    params.update(preset.notebooks.get(notebook, {}))
    return params


PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
"""``{{ name }}`` in a template's markdown: the page's parameter ``name`` (:func:`fill_markdown`)."""


def fill_markdown(nb: Any, values: Mapping[str, Any], where: str) -> None:
    """Replace every ``{{ name }}`` of the markdown cells of ``nb`` by ``values[name]``, in place.

    A template notebook gives several pages (:data:`PAGES`); what differs in
    their text (title, headings) is a parameter, shown where the markdown
    says ``{{ name }}``.

    Raises:
        MndError: a placeholder without a value (``where`` names the page).
    """
    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise MndError(f"{where}: the markdown shows {{{{ {key} }}}} but the page has no parameter {key!r}")
        return str(values[key])

    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = PLACEHOLDER.sub(value, cell.source)


def stage(source: Path) -> None:
    """Make ``source`` a book source folder: copy the static pages there unless it is ``book/`` itself."""
    source.mkdir(parents=True, exist_ok=True)
    if source.resolve() == book_dir().resolve():
        return
    for name in STATIC_PAGES:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(book_dir() / name, source / name)


HIDDEN_TAGS: dict[str, str] = {"injected-parameters": "remove-cell", "parameters": "hide-input"}
"""Tag added to a cell of an executed notebook -> the Jupyter Book tag that hides it in the book.

Papermill's injected cell holds this machine's paths and is removed from the page; the notebook's own
defaults (not the values of this run) are folded away.
"""

_BINARY_OUTPUTS = ("image/png", "image/jpeg", "image/gif", "application/pdf")


def _scrub_tree(node: Any, paths: Sequence[tuple[str, str]]) -> Any:
    if isinstance(node, str):
        return scrub(node, paths)
    if isinstance(node, list):
        return [_scrub_tree(v, paths) for v in node]
    if isinstance(node, dict):
        return {k: v if k in _BINARY_OUTPUTS else _scrub_tree(v, paths) for k, v in node.items()}
    return node


def publish_notebook(path: str | Path, paths: Sequence[tuple[str, str]]) -> None:
    """Make an executed notebook fit for the book: fill in its text, hide the parameter cells, remove machine paths.

    Fills the markdown's ``{{ name }}`` with the parameters papermill
    passed (:func:`fill_markdown`), adds the Jupyter Book tags of
    :data:`HIDDEN_TAGS` and replaces every
    machine path of ``paths`` (:func:`public_paths`) in cell sources,
    text outputs and metadata (papermill records its input and output paths
    there), so neither the HTML page nor its downloadable ``.ipynb`` shows
    them. Image outputs are left as they are.
    """
    import nbformat  # optional: the book extra

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    fill_markdown(nb, nb.metadata.get("papermill", {}).get("parameters", {}), path.name)
    for cell in nb.cells:
        tags = list(cell.metadata.get("tags", []))
        for tag, hide in HIDDEN_TAGS.items():
            if tag in tags and hide not in tags:
                tags.append(hide)
        if tags:
            cell.metadata["tags"] = tags
    clean = nbformat.from_dict(_scrub_tree(nb, paths))
    with atomic_open(path, "w", encoding="utf-8") as handle:
        nbformat.write(clean, handle)


def execute_notebooks(
    preset: grid.Preset,
    results: Path,
    source: Path,
    *,
    names: Sequence[str] = NOTEBOOKS,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Execute the pages' notebooks with papermill into ``source/notebooks/<page>.ipynb`` (executed copies).

    Args:
        preset: the run's preset.
        results: its results folder.
        source: the book's source folder.
        names: pages of :data:`PAGES`, each executed from its template with its parameters.
        log: where progress lines go.

    Raises:
        InputError: an unknown page.
        MndError: a notebook failed; the executed copy (with the error) is kept.
    """
    import papermill  # optional: the book extra

    pages = [page(name) for name in names]
    out_dir = source / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with _kernel_environment():
        for item in pages:
            name = item.name
            start = time.perf_counter()
            target = out_dir / f"{name}.ipynb"
            try:
                papermill.execute_notebook(
                    str(notebook_dir() / f"{item.template}.ipynb"), str(target),
                    parameters=parameters(preset, results, name),
                    kernel_name=KERNEL, cwd=str(out_dir), progress_bar=False, log_output=False,
                    extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no kernel start-up chatter
                )
            except papermill.PapermillExecutionError as exc:
                raise MndError(f"notebook {name} failed ({exc.ename}: {exc.evalue}); see {target}") from None
            publish_notebook(target, public_paths(preset, results, source))
            written.append(target)
            log(f"executed {name} in {time.perf_counter() - start:.0f} s")
    return written


def build_html(source: Path, out: Path, *, quiet: bool = True) -> Path:
    """Build the book in ``source`` with Jupyter Book v1: execution off, ``-W -n --keep-going``.

    Returns:
        the built ``index.html``.

    Raises:
        MndError: the build failed or warned (the output says why).
    """
    command = [
        sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(source),
        "--config", str(config_file()), "--toc", str(source / "_toc.yml"), "--path-output", str(out),
        "-W", "-n", "--keep-going", "--all",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    log = out / "jupyter-book.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(done.stdout + done.stderr)
    index = out / "_build" / "html" / "index.html"
    if done.returncode != 0 or not index.exists():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise MndError(f"jupyter-book build failed (exit {done.returncode}); full log in {log}:\n{tail}")
    return index


@dataclass
class BookReport:
    """What :func:`build` did and how long each step took."""

    index: Path
    results: Path
    grid: grid.GridReport | None
    seconds: dict[str, float]


def build(
    preset: grid.Preset,
    *,
    results: str | Path | None = None,
    out: str | Path | None = None,
    source: str | Path | None = None,
    run: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> BookReport:
    """``mnd book``: grid, notebooks, generated page, HTML.

    Args:
        preset: from :func:`mnd.grid.load_preset`.
        results: results folder (default ``results/<preset name>`` in the checkout).
        out: build folder (default ``book/_build/<preset name>``); the HTML is
            in ``<out>/_build/html``.
        source: the book's source folder receiving the executed notebooks and
            the generated page (default ``book/``; another folder gets a copy
            of the static pages).
        run: run the grid first (False: use the results as they are).
        progress: progress bars.
        log: where progress lines go.
    """
    root = grid.project_root()
    if not notebook_dir().is_dir() or not book_dir().is_dir():
        raise InputError(root, "mnd book needs a source checkout (notebooks/ and book/ beside mnd/)")
    results = Path(results) if results is not None else root / "results" / preset.name
    out = Path(out) if out is not None else book_dir() / "_build" / preset.name
    source = Path(source) if source is not None else book_dir()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    report = grid.run_grid(preset, results, progress=progress) if run else None
    seconds["grid"] = time.perf_counter() - start
    if report is not None:
        log(f"grid: {report.computed} computed, {report.reused} reused, {report.failed} failed -> {report.csv}")
    stage(source)
    start = time.perf_counter()
    execute_notebooks(preset, results, source, log=log)
    seconds["notebooks"] = time.perf_counter() - start
    with atomic_open(source / GENERATED_PAGE, "w") as handle:
        handle.write(reproduction_page(preset, results))
    start = time.perf_counter()
    index = build_html(source, out)
    seconds["html"] = time.perf_counter() - start
    return BookReport(index=index, results=results, grid=report, seconds=seconds)
