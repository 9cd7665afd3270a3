"""The user guide's generated pages: protecting your photos, and the result files' columns.

The book's part "Using mnd" has five pages. Three are plain Markdown in
``book/`` (among :data:`mnd.book.pages.STATIC_PAGES`: installing, running the
book on your data and GPU, running a rating study); two are written here at build time
(:data:`GUIDE_PAGES`), so what they say cannot drift from the code or the run:

- :func:`protect_page`: what ``mnd protect`` does, its strength levels (read
  from ``mnd/presets/protect.toml``), and what protection does and does not
  promise, in sentences filled from this run's sharing columns
  (``jpeg95``, ``jpeg85``, ``jpeg75``, ``resize50`` of ``results.csv``).
  :func:`unseen_section` is the place for "on models it was not made on"
  (marked ``HOOK(unseen)``).
- :func:`columns_page`: every column of ``metrics.csv``, ``report.csv`` and
  ``results.csv``, generated from the column lists in code
  (:data:`mnd.experiments.rows.COLUMNS`, :data:`~mnd.experiments.rows.GRID_COLUMNS`,
  :data:`mnd.experiments.protect.REPORT_COLUMNS`) and :data:`COLUMN_NOTES`; a
  column without a note stops the build (:func:`undocumented`).

>>> undocumented()
[]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mnd import experiments
from mnd.book.tables import markdown_table
from mnd.book.transfer import transfer_columns, transfer_rows
from mnd.errors import MndError
from mnd.protect.photo import REPORT_COLUMNS, load_strengths

PROTECT_PAGE = "guide_protect.md"
COLUMNS_PAGE = "guide_columns.md"
GUIDE_PAGES: tuple[str, ...] = (PROTECT_PAGE, COLUMNS_PAGE)
"""The guide's pages :func:`guide_pages` writes into the book's source folder at build time."""

SHARING = {
    "jpeg95": "a JPEG at quality 95",
    "jpeg85": "a JPEG at quality 85",
    "jpeg75": "a JPEG at quality 75",
    "resize50": "a resize to half size and back",
}
"""The sharing columns (:data:`mnd.core.robustness.TRANSFORMS`) as a sentence names them."""

COLUMN_NOTES: dict[str, str] = {
    "image": "the photo's name (its file name without the suffix)",
    "method": "the attack: MND, an ablation setting of the paper (`no_norm`, `l1`, ..., `mnd`) or an anchor "
              "(`bim`, `pgd`, ...); `mnd attack --help` lists them",
    "model": "the attacked model, a name from `mnd models`",
    "targeted": "True: aimed at the least-likely class (eq. 5); False: any wrong answer",
    "success": "the saved 8-bit file, read back, fools the model (with `margin`, by that many logits)",
    "clean_label": "the model's answer on the original (class index, or gallery identity for faces)",
    "adv_label": "the model's answer on the saved file",
    "target_label": "the class aimed at (targeted only; empty otherwise)",
    "psnr": "PSNR of the saved file against the original, in dB (higher: closer)",
    "ssim": "SSIM of the saved file against the original (1: identical)",
    "changed_ratio": "the share of the difference map's values that are not zero (section IV-D-2)",
    "iterations": "gradient steps taken (0 where the image was not attacked)",
    "seconds": "wall time spent on this image (a batch's time shared by iterations)",
    "note": "why an image is not a success (not attacked and why, budget spent, ...); the photo's "
            "conversion note",
    "margin": "the logit lead success required (0: the paper's argmax rule; not in the paper)",
    "eps": "the anchor's L-infinity budget (8/255 for the paper's anchors; the smallest that worked for "
           "`bim_min`, `pgd_min`); empty for the other methods",
    "ms_ssim": "MS-SSIM (piq); empty for images under 161 px a side, such as face chips",
    "haarpsi": "HaarPSI (piq; 1: identical)",
    "vif": "VIF (piq; 1: identical)",
    "gmsd": "GMSD (piq; 0: identical)",
    "fsim": "FSIM (piq; 1: identical)",
    "ciede2000": "mean CIEDE2000 colour difference (scikit-image; 0: identical)",
    "lpips": "LPIPS (piq; needs downloaded VGG16 weights: empty unless the run asked for it)",
    "dists": "DISTS (piq; needs downloaded VGG16 weights: empty unless the run asked for it)",
    "jpeg95": "still fools the model after a Pillow JPEG at quality 95 (4:2:0); False where not a success",
    "jpeg85": "the same after a JPEG at quality 85",
    "jpeg75": "the same after a JPEG at quality 75",
    "resize50": "the same after a 0.5x down-and-up resize",
    "file": "the file the row describes (its name in the output folder; in results.csv its path under the "
            "results folder)",
    "sha256": "the SHA-256 of that file's bytes: check that the file on disk is the one the row describes",
    "dataset": "the preset's data set (a folder of the results and of the book's tables)",
    "setting": "`non-targeted` or `targeted`",
    "attacked": "False for an image that cannot be attacked (the note says why)",
    "seed": "the run's seed",
    "task": "which preset of betas MND used (`imagenet` or `faces`)",
    "max_iter": "the iteration budget the row was made with",
    "format": "how the photo was saved: `png` or `jpeg:Q`",
    "survive": "the `--survive` transforms the photo had to stay protected after",
    "survived": "still protected after every `--survive` transform too (empty without one)",
    "faces": "faces found on the original photo (face models)",
    "faces_protected": "faces meeting the criterion on the saved file (face models)",
    "criterion": "`verify` or `identify` (face models)",
    "distances": "per face, the recogniser's distance to the original identity, space-separated (face models)",
    "width": "the photo's width in pixels (full resolution)",
    "height": "the photo's height in pixels (full resolution)",
    # Arriving with the unseen-model checks (mnd attack --check MODEL):
    "unseen": "the models that only read the saved file, never gave a gradient (`--check`)",
    "unseen_fooled": "per checked model, whether its answer on the saved file differs from its answer on the original",
    "unseen_jpeg75": "the same after a JPEG at quality 75",
}
"""One line per result column; :func:`columns_page` lays them out per file."""

REPORT_NOTES: dict[str, str] = {
    "success": "the saved file, read back, is protected (classifier: fools the model; faces: every face meets "
               "the criterion)",
    "psnr": "PSNR of the saved file against the original photo at full resolution, in dB",
    "ssim": "SSIM of the saved file against the original photo at full resolution",
    "file": "the saved photo's name in the output folder (empty when nothing was written)",
}
"""Where a column of ``report.csv`` (``mnd protect``) means more than in ``metrics.csv``."""

FILES: tuple[tuple[str, str, Sequence[str]], ...] = (
    ("metrics.csv", "`mnd attack --out DIR`: one row per photo", experiments.COLUMNS),
    ("report.csv", "`mnd protect --out DIR`: one row per photo", REPORT_COLUMNS),
    ("results.csv", "`mnd book` (the grid): one row per image x method x setting", experiments.GRID_COLUMNS),
)
"""Each result file, who writes it, and its columns (the lists the code writes)."""


def undocumented() -> list[str]:
    """The columns of :data:`FILES` that :data:`COLUMN_NOTES` does not describe (none: [])."""
    return sorted({c for _, _, columns in FILES for c in columns} - set(COLUMN_NOTES))


def columns_page() -> str:
    """The page "Reading the result files": one table per file, a row per column, in the file's order.

    Raises:
        MndError: a column has no note in :data:`COLUMN_NOTES` (add one).
    """
    missing = undocumented()
    if missing:
        raise MndError(f"{COLUMNS_PAGE}: no note for the columns {', '.join(missing)} (add them to COLUMN_NOTES "
                       "in mnd/book/guide.py)")
    out = ["# Reading the result files", "",
           "Every command writes a CSV file beside the images it writes, one row per image it wrote (per "
           "image, method and setting in the grid's `results.csv`), and each row names its file and the "
           "SHA-256 of its bytes. This page is generated from the column lists the code writes, so it has "
           "every column, in the file's order. An empty cell means \"not measured\".", ""]
    for name, writer, columns in FILES:
        notes = REPORT_NOTES if name == "report.csv" else {}
        rows = [{"column": f"`{c}`", "meaning": notes.get(c, COLUMN_NOTES[c])} for c in columns]
        out += [f"## `{name}`", "", f"Written by {writer}; {len(columns)} columns.", "",
                markdown_table(rows, ["column", "meaning"]), ""]
    out += ["A file written by an older mnd, with fewer columns, is still read; the missing columns read "
            "empty.", ""]
    return "\n".join(out)


# --- protecting your photos ------------------------------------------------------------


def _fraction(k: int, n: int) -> str:
    return f"{k} of {n} ({100 * k / n:.0f}%)" if n else "none"


def sharing_rows(rows: Sequence[Mapping[str, Any]], method: str = "mnd") -> list[dict[str, Any]]:
    """Per data set x setting: how many of ``method``'s successes still fool the model after each sharing transform.

    >>> rows = [{"dataset": "d", "setting": "targeted", "method": "mnd", "success": True, "jpeg95": True,
    ...          "jpeg85": False, "jpeg75": False, "resize50": True}]
    >>> sharing_rows(rows)[0]["jpeg95"], sharing_rows(rows)[0]["successes"]
    (1, 1)
    """
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        if r.get("method") != method:
            continue
        line = out.setdefault((str(r["dataset"]), str(r["setting"])), {
            "dataset": str(r["dataset"]), "setting": str(r["setting"]), "images": 0, "successes": 0,
            "measured": 0, **{c: 0 for c in SHARING}})
        line["images"] += 1
        if r.get("success") is True:
            line["successes"] += 1
            if all(isinstance(r.get(c), bool) for c in SHARING):
                line["measured"] += 1
                for c in SHARING:
                    line[c] += int(r[c])
    return [out[k] for k in sorted(out)]


def sharing_sentences(line: Mapping[str, Any]) -> str:
    """What one :func:`sharing_rows` line says, as sentences."""
    where = f"On the data set `{line['dataset']}` ({line['setting']})"
    if not line["measured"]:
        return (f"{where}, MND protected {_fraction(line['successes'], line['images'])} images; "
                "their sharing columns were not measured (the attacked model was not at hand).")
    kept = "; ".join(f"after {text}, {_fraction(line[c], line['measured'])}" for c, text in SHARING.items())
    weakest = min(SHARING, key=lambda c: line[c])
    return (f"{where}, MND protected {_fraction(line['successes'], line['images'])} images. Of those, the "
            f"saved file still fooled the model {kept}. The weakest was {SHARING[weakest]}: "
            f"{line['measured'] - line[weakest]} of {line['measured']} protected images lost their protection "
            "there.")


def strengths_table() -> str:
    """The ``--strength`` levels as ``mnd/presets/protect.toml`` defines them."""
    levels = load_strengths()
    rows = [{"--strength": f"`{s.name}`", "must survive": ", ".join(f"`{t.name}`" for t in s.survive) or "nothing",
             "logit margin": s.margin, "iteration budget": s.max_iter} for s in levels.values()]
    return markdown_table(rows, ["--strength", "must survive", "logit margin", "iteration budget"],
                          digits={"logit margin": 1})


def unseen_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """HOOK(unseen): the section "On models it was not made on", from the unseen-model columns of the rows.

    The unseen-model checks (``unseen``, ``unseen_fooled``, ``unseen_jpeg75``:
    models that only read the saved file) fill this section; until a run has
    those columns it says so.
    """
    out = ["## On models it was not made on", ""]
    if not any(r.get("unseen") for r in rows):
        out += ["This run checked no model besides the one each photo was protected against (no `unseen` "
                "column is filled), so it says nothing about other models. Protection is made for one model; "
                "do not assume it holds for another.", ""]
        return out
    out += ["Models that never gave a gradient read every saved image of this run (`--check MODEL` does the same "
            "for your photos). Per method: the images it made adversarial on the attacked model and not "
            "degenerate, then the share of images on which each unseen model reads another label than on the "
            "original, on the saved file and after JPEG 75, with Wilson 95% intervals. A method made for one "
            "model may do no better on another than random noise (the `noise` row, where the run has it); "
            "`mnd protect --strength max` (an ensemble surrogate, input diversity, translation invariance and a "
            "margin) is made for that, at a cost in quality, and even it promises nothing about a model nobody "
            "checked.", ""]
    datasets = list(dict.fromkeys((str(r.get("dataset")), str(r.get("setting"))) for r in rows if r.get("unseen")))
    for dataset, setting in datasets:
        table = transfer_rows(rows, dataset, setting)
        if table:  # two tables, so that each fits the page: the attacked model, then the unseen ones
            columns = transfer_columns(table)
            out += [f"**{dataset}, {setting}** (n per method in the first table)", "",
                    markdown_table(table, columns[:4], {"PSNR (usable)": 1}), "",
                    *[part for k in range(4, len(columns), 2)  # one table per unseen model: plain, JPEG 75
                      for part in (markdown_table(table, [columns[0], *columns[k:k + 2]]), "")]]
    return out


def protect_page(preset: experiments.Preset, results: str | Path) -> str:
    """The page "Protecting your photos" for a run (MyST Markdown, numbers from ``results``)."""
    rows = experiments.read_results(results)
    lines = sharing_rows(rows)
    out = ["# Protecting your photos", "",
           "`mnd protect PHOTOS --out DIR` writes a copy of each photo that a given model misreads while a "
           "person sees no difference. The copy has the photo's own size, is upright (EXIF orientation "
           "applied) and carries no metadata (no EXIF, GPS, ICC profile or text chunks). The change lives at "
           "full resolution; the model sees it through a differentiable copy of its own resize-and-crop, and "
           "success is decided on the saved file read back from disk. With a face model "
           "(`--model dlib_resnet_v1`) every face MTCNN finds is protected, and only the pixels the "
           "recogniser reads change.", "",
           "```sh",
           "mnd protect photo.jpg photos/ --out protected/                  # PNG, the low level",
           "mnd protect photos/ --out protected/ --strength high            # also survives sharing",
           "mnd protect photos/ --out protected/ --format jpeg --quality 90 # checked on the JPEG itself",
           "```", "",
           "## The strength levels", "",
           "`--strength` picks what the saved photo must also survive (the attack keeps going until the real "
           "transform of the saved file fools the model too), the logit margin the wrong answer must win by, "
           "and the iteration budget. Stronger levels cost image quality and time. `--survive`, `--margin` and "
           "`--max-iter` replace a level's values.", "",
           strengths_table(), "",
           "`DIR/report.csv` says, per photo, whether the saved file is protected and whether it still is "
           "after each sharing transform below ([Reading the result files](guide_columns.md)).", "",
           "## What protection promises, and what it does not", "",
           "It promises that the saved file, exactly as written, fools the model it was made against "
           "(`success` in the report; the command's exit status says when a photo was not protected). Sharing "
           "changes a photo: a site recompresses it as JPEG or makes it smaller. The numbers below are from "
           f"this book's run (preset `{preset.name}`): the MND images of the grid (each model's input, "
           "not a whole photo), made with no margin and no `--survive`, as the low level does, then "
           "recompressed and resized as sharing does.", ""]
    if lines:
        for line in lines:
            out += [sharing_sentences(line), ""]
        table = [{"data set": f"{r['dataset']} ({r['setting']})", "protected": f"{r['successes']}/{r['images']}",
                  **{c: f"{r[c]}/{r['measured']}" for c in SHARING}} for r in lines]
        lost = any(r[c] < r["measured"] for r in lines for c in SHARING)
        out += [markdown_table(table, ["data set", "protected", *SHARING]), "",
                ("So a photo protected at the low level may lose its protection once it is shared. "
                 if lost else "In this run every protected image survived all four; that holds for these "
                 "images and this model, and is no promise for others. ")
                + "If a photo will be recompressed, protect it for that: `--strength mid` or `high`, or "
                "`--survive jpeg:Q` with the quality the site uses; the report then says whether it survived.", ""]
    else:
        out += ["This run has no MND rows, so it measured nothing about sharing.", ""]
    out += unseen_section(rows)
    out += ["## What it does not do", "",
            "- It does not hide a photo from people: anyone can see who or what is in it.",
            "- It protects against the model it was made on; another model, or a later version of the same "
            "one, may still read the photo.",
            "- Cropping, heavy filters, screenshots or a print-and-scan were not measured here.", ""]
    return "\n".join(out)


def guide_pages(preset: experiments.Preset, results: str | Path) -> dict[str, str]:
    """The generated pages of the guide (:data:`GUIDE_PAGES`): file name -> MyST Markdown."""
    return {PROTECT_PAGE: protect_page(preset, results), COLUMNS_PAGE: columns_page()}


__all__ = [
    "COLUMN_NOTES", "COLUMNS_PAGE", "FILES", "GUIDE_PAGES", "PROTECT_PAGE", "REPORT_NOTES", "SHARING",
    "columns_page", "guide_pages", "protect_page", "sharing_rows", "sharing_sentences", "strengths_table",
    "undocumented", "unseen_section",
]
