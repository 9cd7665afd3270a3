"""The book's pages and the one setup call every notebook starts with."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnd import experiments
from mnd.core import anchors
from mnd.core.config import VARIANTS
from mnd.core.memory import keep_freed_memory
from mnd.data.paths import project_root
from mnd.errors import InputError


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
        seconds: about how long the page executes (the embedded preset on 2 CPU cores, measured): the
            longest pages start first, so that a short one, not a long one, runs last.
    """

    name: str
    template: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 15.0


PAGES: tuple[Page, ...] = (
    Page("01_losses", "01_losses", seconds=17),
    Page("02_imagenet", "paper_tables", {
        "dataset": "imagenet",
        "title": "Image classification: Tables I and II, Fig. 1",
        "summary": "Section IV-B of the paper attacks VGG19 on 100 ImageNet images of ten classes. This page shows "
                   "the same tables for the preset's image-classification data set and model.",
        "tables": "Tables I (non-targeted) and II (targeted)",
        "figure": "Fig. 1",
    }, seconds=14),
    Page("03_faces", "paper_tables", {
        "dataset": "faces",
        "title": "Face identification: Tables VI and VII, Fig. 2",
        "summary": "Section IV-C of the paper attacks InceptionResnetV1 (VGGFace2) on 100 face crops of ten "
                   "identities. This page shows the same tables for the preset's face data set and model.",
        "tables": "Tables VI (non-targeted) and VII (targeted)",
        "figure": "Fig. 2",
    }, seconds=12),
    Page("04_heatmaps", "04_heatmaps", seconds=32),
    Page("05_difference_maps", "05_difference_maps", seconds=17),
    Page("06_pixel_ratio", "06_pixel_ratio", seconds=13),
    Page("07_mos", "07_mos", seconds=13),
    Page("08_tradeoff", "08_tradeoff", seconds=30),
)
"""The notebook pages of the book, in book order (the chapters of ``book/_toc.yml``)."""


NOTEBOOKS: tuple[str, ...] = tuple(page.name for page in PAGES)
"""The names of :data:`PAGES`, in book order."""


STATIC_PAGES: tuple[str, ...] = (
    "intro.md", "reading-notes.md", "install.md", "guide_book.md", "guide_study.md", "_toc.yml")
"""The book's Markdown sources in ``book/`` (the user guide's static pages among them, :mod:`mnd.book.guide`)."""


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
    return project_root() / "notebooks"


def book_dir() -> Path:
    """``book/`` of the checkout: the book's source folder."""
    return project_root() / "book"


def config_file() -> Path:
    """The Jupyter Book configuration, ``_config.yml`` at the top of the checkout."""
    return project_root() / "_config.yml"


def label(method: str) -> str:
    """A method's name as the paper's tables print it (:func:`mnd.experiments.method_label`).

    >>> label("l1_ssim"), label("di2fgsm")
    ('l1-norm + SSIM', 'DI2FGSM')
    """
    return experiments.method_label(method)


def split_methods(methods: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """The MND variants, the paper's anchors and the methods not in the paper among ``methods``, each in a fixed order.

    The variants (the ablation settings of eq. 7, :data:`mnd.core.config.VARIANTS`)
    come in the order of ``VARIANTS``, the anchors (:data:`mnd.core.anchors.ANCHORS`,
    less the transfer anchors and controls, which are not in the paper) in
    alphabetical order, the order of the figures and of the rating sheet,
    and the methods not in the paper (:data:`mnd.experiments.NOT_IN_PAPER`) in
    their table order; other names are left out.

    >>> split_methods(["bim", "mnd", "pgd", "l1", "di2fgsm", "ddn", "bim_min", "noise", "tifgsm"])
    (['l1', 'mnd'], ['bim', 'di2fgsm', 'pgd'], ['bim_min', 'ddn', 'tifgsm', 'noise'])
    """
    chosen = set(methods)
    return ([m for m in VARIANTS if m in chosen],
            sorted(m for m in anchors.ANCHORS if m in chosen and m not in experiments.NOT_IN_PAPER),
            [m for m in experiments.NOT_IN_PAPER if m in chosen])


NOT_IN_PAPER_LABEL = "not in the paper"
"""How the tables label the block of methods the paper does not have."""


def figure_methods(methods: Iterable[str]) -> list[str]:
    """What the figures compare: MND, then the anchors, of ``methods`` (:func:`split_methods`).

    >>> figure_methods(["no_norm", "mnd", "pgd", "bim"])
    ['mnd', 'bim', 'pgd']
    """
    variants, anchor_names, _ = split_methods(methods)
    return [m for m in variants if m == "mnd"] + anchor_names


def mos_anchors(methods: Iterable[str]) -> list[str]:
    """The anchors of ``methods`` that the paper's subjective test compares MND with (:data:`mnd.core.anchors.MOS_ANCHORS`).

    >>> mos_anchors(["mnd", "pgd", "bim", "rfgsm"])
    ['bim', 'pgd']
    """
    chosen = set(methods)
    return [m for m in anchors.MOS_ANCHORS if m in chosen]


def figure_image(spec: experiments.DatasetSpec) -> str:
    """The image a data set's figures show: its ``figure_image``, else its first image."""
    return spec.figure_image or experiments.image_names(spec)[0]


@dataclass
class Context:
    """What a notebook of the book works from (:func:`setup`).

    Attributes:
        preset: the run's preset, with its overrides.
        results: the results folder of the grid run.
        rows: its result rows (:func:`mnd.experiments.rows.read_results`).
        figures: where the notebooks save their figures (``<results>/figures``).
    """

    preset: experiments.Preset
    results: Path
    rows: list[dict[str, Any]]
    figures: Path

    @functools.cached_property
    def summary(self) -> list[dict[str, Any]]:
        """:func:`mnd.experiments.summary.summarize` of :attr:`rows`, computed on first use."""
        return experiments.summarize(self.rows, self.preset)

    @property
    def variants(self) -> list[str]:
        """The preset's MND variants (:func:`split_methods`)."""
        return split_methods(self.preset.methods)[0]

    @property
    def anchors(self) -> list[str]:
        """The preset's anchors (:func:`split_methods`)."""
        return split_methods(self.preset.methods)[1]

    @property
    def not_in_paper(self) -> list[str]:
        """The preset's methods that the paper does not have (:func:`split_methods`)."""
        return split_methods(self.preset.methods)[2]

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

    Like the ``mnd`` command, the notebook's kernel keeps freed memory
    (:func:`mnd.core.memory.keep_freed_memory`): the attacks a page runs
    reuse their pages instead of faulting them in every iteration.
    """
    keep_freed_memory()
    folder = Path(results)
    return Context(experiments.load_preset(preset, overrides), folder, experiments.read_results(folder), folder / "figures")


def dataset_status(results: str | Path, dataset: str) -> tuple[bool, str]:
    """Whether the grid ran a data set (from run.json), and the reason when it did not."""
    info = experiments.read_run(Path(results)).get("datasets", {}).get(dataset)
    if info is None:
        return False, f"the grid has not run data set {dataset!r} (no entry in {Path(results) / experiments.RUN_JSON})"
    if info.get("status") != "ok":
        return False, str(info.get("reason", "skipped"))
    return True, ""
