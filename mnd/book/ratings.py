"""The MOS page: the rating sheet, the rated pairs, and the MOS tables beside the paper's.

The rating study itself (protocol, SQLite store, web server) is :mod:`mnd.study`; this page only reads
its tables (:func:`mnd.study.study_reports`). It was ``mnd.book.mos_page``, a name that still imports.
"""

from __future__ import annotations

import html

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnd import experiments, study
from mnd.book.claims import paper_inconsistencies
from mnd.book.figures import load_image
from mnd.book.pages import dataset_status, mos_anchors
from mnd.book.tables import html_table


def scale_html() -> str:
    """TABLE V, the 7-point rating scale."""
    return html_table([{"rule": k, "score": v} for k, v in study.SCALE.items()], caption="TABLE V: the rating scale")


@dataclass(frozen=True)
class RatingSheet:
    """A run's rating sheet (:func:`write_rating_sheet`).

    Attributes:
        images: data set -> the images of the test, in order.
        pairs: the pairs of the sheet (:func:`mnd.study.make_sheet`).
        files: what :func:`mnd.study.write_sheet` wrote (``html``, ``key``, ``ratings``, ...).
    """

    images: dict[str, list[str]]
    pairs: list[study.Pair]
    files: dict[str, Path]


def write_rating_sheet(preset: experiments.Preset, results: str | Path, rows: Sequence[Mapping[str, Any]], *,
                       images_per_dataset: int, seed: int) -> RatingSheet:
    """Draw the test's images and pairs for a run and write its sheet into ``<results>/mos/``.

    Per data set the grid ran, ``images_per_dataset`` images drawn with
    ``seed`` among those MND and every compared anchor made adversarial in
    every setting (:func:`mnd.study.choose_images`); MND is compared with the
    preset's anchors of the paper's test (:func:`mos_anchors`). Collected
    ratings already in the folder are kept.
    """
    results = Path(results)
    compared = mos_anchors(preset.methods)
    chosen = {}
    for spec in preset.datasets:
        if dataset_status(results, spec.name)[0]:
            chosen[spec.name] = study.choose_images(rows, spec.name, images_per_dataset, settings=preset.settings,
                                                  anchors=compared, seed=seed)
    pairs = study.make_sheet(chosen, settings=preset.settings, anchors=compared, seed=seed,
                           path_of=lambda d, s, m, i: str(experiments.png_path(Path("."), d, s, m, i)))
    files = study.write_sheet(pairs, results / "mos", image_root=results)
    return RatingSheet(images=chosen, pairs=pairs, files=files)


def rating_sheet_markdown(sheet: RatingSheet) -> str:
    """What the sheet holds and where its files are."""
    files = sheet.files
    return (f"{len(sheet.pairs)} pairs over {sum(map(len, sheet.images.values()))} images; "
            f"sheet: `{files['html'].name}`, key: `{files['key'].name}`, ratings: `{files['ratings'].name}` "
            f"in the results folder's `mos/`.")


def rated_images_html(pairs: Iterable[study.Pair]) -> str:
    """The images of the test with their IDs (S1, S2, ...; not the paper's I1, I2: other images)."""
    tested = sorted({(int(p.image_id[1:]), p.image_id, p.dataset, p.image) for p in pairs})
    return html_table([{"image ID": i, "data set": d, "image": n} for _, i, d, n in tested],
                      caption="the images of the test")


def pairs_figure(results: str | Path, pairs: Sequence[study.Pair]) -> Any:
    """The two sides of each of ``pairs`` as raters see them."""
    import matplotlib.pyplot as plt  # heavy: only figures need it

    fig, axes = plt.subplots(len(pairs), 2, figsize=(6, 3.1 * len(pairs)), squeeze=False)
    for (left, right), p in zip(axes, pairs):
        for ax, side, path in ((left, "left", p.left), (right, "right", p.right)):
            ax.imshow(load_image(Path(results) / path))
            ax.set_title(f"{p.pair_id} {side}", fontsize=11)
            ax.axis("off")
    fig.tight_layout()
    return fig


def collected_ratings(sheet: RatingSheet, ratings: str | Path = "") -> tuple[Path, list[study.Rating]]:
    """The ratings file (``ratings``, else the sheet's ``ratings.csv``) and its ratings ([] when it does not exist)."""
    source = Path(ratings) if ratings else sheet.files["ratings"]
    return source, (study.read_ratings(source, sheet.pairs) if source.exists() else [])


def mos_tables_html(ratings: Sequence[study.Rating], pairs: Sequence[study.Pair]) -> list[str]:
    """This run's MOS tables, one per data set x setting, in the layout of Tables III, IV, VIII and IX."""
    table = study.mos_table(study.mnd_scores(ratings, pairs))
    raters = len({r.rater for r in ratings})
    out = []
    for (d, st) in dict.fromkeys((r["dataset"], r["setting"]) for r in table):
        block = [r for r in table if r["dataset"] == d and r["setting"] == st]
        out.append(html_table(study.wide(block), caption=f"MOS of MND versus each anchor: {d}, {st} ({raters} raters)"))
    return out


def paper_mos_html() -> list[str]:
    """The paper's MOS tables (III, IV, VIII, IX) with their printed Average rows, then printed versus recomputed."""
    paper = study.paper_tables()
    printed = {(r["table"], r["versus"]): r["mean"] for r in study.paper_averages()}
    out = []
    for name in dict.fromkeys(str(r["table"]) for r in paper):
        block = [dict(r) for r in paper if r["table"] == name]
        lines = study.wide(block + [{"image_id": "Average (printed)", "versus": v, "mean": m, "std": float("nan")}
                                  for (t, v), m in printed.items() if t == name])
        first = block[0]
        out.append(html_table(lines, caption=f"TABLE {name}: {first['dataset']}, {first['setting']}"))
    check = study.check_averages(paper, study.paper_averages())
    out.append(html_table(check, ["table", "versus", "printed", "recomputed", "difference", "matches"],
                          digits={"recomputed": 4, "difference": 4}, caption="printed versus recomputed averages"))
    return out


def paper_mos_markdown() -> str:
    """The printed averages that are not the mean of their rows, and what section IV-C-5's text gets wrong."""
    wrong = [c for c in study.check_averages(study.paper_tables(), study.paper_averages()) if not c["matches"]]
    return ("**Averages that do not match:** " + ("; ".join(
        f"TABLE {c['table']} vs. {c['versus']}: printed {c['printed']:.2f}, mean of its rows {c['recomputed']:.4f}"
        for c in wrong) if wrong else "none.") + "\n\nThe text of section IV-C-5 disagrees with the tables too:\n\n"
        + "\n".join(f"- **{i.title}.** {i.text}" for i in paper_inconsistencies()
                    if i.title.startswith("Section IV-C-5")))


def study_tables_html(results: str | Path) -> list[str]:
    """The MOS tables of every browser study of this run (``mnd mos serve``), with who was left out, or a note."""
    reports = study.study_reports(results)
    if not reports:
        return ["<p>No browser study in this run's <code>mos/</code> folder. Start one with "
                "<code>mnd mos serve RESULTS --study NAME</code>; its ratings appear here when the book is built "
                "again.</p>"]
    out = []
    for name, report in reports:
        if not report.rows:
            out.append(f"<p>Study <code>{html.escape(name)}</code>: {html.escape(report.summary())}; no table yet.</p>")
            continue
        for (d, st) in dict.fromkeys((r["dataset"], r["setting"]) for r in report.rows):
            block = [r for r in report.rows if r["dataset"] == d and r["setting"] == st]
            out.append(html_table(study.wide(block), caption=f"study {name}: MOS of MND versus each anchor, {d}, {st}; "
                                  f"{report.summary()}"))
    return out
