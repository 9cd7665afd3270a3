"""The subjective test of sections IV-B-5 and IV-C-5 (Tables III, IV, V, VIII and IX).

Protocol (ITU-R BT.500-11 as the paper applies it): every pair shows the MND
image and one anchor's image of the same photo side by side, in random
left/right order; a rater scores the pair on TABLE V's 7-point scale, from
+3 "left image is much better" to -3 "right image is much better". A score
is turned into "MND versus the anchor" by flipping its sign when MND was on
the right. A MOS table then gives, per image and anchor, the mean and
standard deviation over raters, and an "Average" row over the images.

- :func:`make_sheet` draws the pairs (seeded order and sides) and
  :func:`write_sheet` writes what raters see (``sheet.html``, ``sheet.csv``),
  the hidden key (``key.csv``) and an empty ``ratings.csv`` to fill in.
- :func:`read_ratings`, :func:`mnd_scores` and :func:`mos_table` turn
  collected ratings into the paper's tables.
- :func:`paper_tables`, :func:`paper_averages` and :func:`check_averages`
  recompute the paper's own "Average" rows from its per-image rows.

>>> SCALE["Two images are same quality"], min(SCALE.values()), max(SCALE.values())
(0, -3, 3)
"""

from __future__ import annotations

import csv
import html
import math
import os
import random
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mnd.core.anchors import LABELS, MOS_ANCHORS, MOS_ORDER
from mnd.core.metrics import sample_std
from mnd.data.imageio import atomic_open
from mnd.data.paths import paper_dir
from mnd.errors import InputError
from mnd.experiments.rows import write_rows

SCALE: dict[str, int] = {
    "Left image is much better": 3,
    "Left image is better": 2,
    "Left image is slightly better": 1,
    "Two images are same quality": 0,
    "Right image is slightly better": -1,
    "Right image is better": -2,
    "Right image is much better": -3,
}
"""TABLE V: the rule a rater picks and its score."""

ANCHOR_ORDER = MOS_ORDER
"""Column order of the paper's MOS tables (vs. BIM, DI2FGSM, MIFGSM, PGD): :data:`mnd.core.anchors.MOS_ORDER`."""

SHEET_COLUMNS = ["pair_id", "left", "right"]
IMAGE_PREFIX = "S"
"""The letter of a study's image IDs (S1, S2, ...): not the paper's I, whose images are others."""

KEY_COLUMNS = ["pair_id", "dataset", "setting", "image", "image_id", "versus", "mnd_side"]
RATING_COLUMNS = ["rater", "pair_id", "score"]


@dataclass(frozen=True)
class Pair:
    """One side-by-side comparison: MND against ``versus`` on one image and setting.

    Attributes:
        pair_id: shown to the raters (``P001`` ...), in presentation order.
        dataset, setting, image: which adversarial images.
        image_id: the image's number in this study (``S1`` ...).
        versus: the anchor (``bim`` ...).
        mnd_side: ``left`` or ``right``.
        left, right: the image files shown on each side.
    """

    pair_id: str
    dataset: str
    setting: str
    image: str
    image_id: str
    versus: str
    mnd_side: str
    left: str
    right: str


def make_sheet(
    images: Mapping[str, Sequence[str]],
    *,
    settings: Sequence[str] = ("targeted", "non-targeted"),
    anchors: Sequence[str] = MOS_ANCHORS,
    seed: int = 0,
    path_of: Any = None,
) -> list[Pair]:
    """Draw the comparison pairs: every dataset x setting x image x anchor, MND on a random side.

    The sides and the presentation order come from ``random.Random(f"mnd-mos:{seed}")``,
    so the same arguments always give the same sheet. Image IDs are numbered
    ``S1, S2, ...`` across data sets in the given order, as the paper numbers its
    I1-I16 (I1-I8 ImageNet, I9-I16 VGGFace2), with another letter: these are other
    images, and ``I8`` here must not read as the paper's I8 (:data:`IMAGE_PREFIX`).

    Args:
        images: data set -> the images to rate (in order).
        settings: which settings.
        anchors: which anchors MND is compared with.
        seed: the sheet's seed.
        path_of: ``(dataset, setting, method, image) -> str`` giving the file
            shown (default ``dataset/setting/method/image.png``).

    >>> pairs = make_sheet({"faces": ["a"]}, settings=["targeted"], anchors=["bim", "pgd"])
    >>> sorted(p.versus for p in pairs), {p.mnd_side for p in pairs} <= {"left", "right"}
    (['bim', 'pgd'], True)
    """
    path_of = path_of or (lambda d, s, m, i: f"{d}/{s}/{m}/{i}.png")
    rng = random.Random(f"mnd-mos:{seed}")
    ids: dict[tuple[str, str], str] = {}
    for dataset, names in images.items():
        for name in names:
            ids[(dataset, name)] = f"{IMAGE_PREFIX}{len(ids) + 1}"
    drawn = []
    for dataset, names in images.items():
        for setting in settings:
            for name in names:
                for versus in anchors:
                    side = "left" if rng.random() < 0.5 else "right"
                    drawn.append((dataset, setting, name, versus, side))
    rng.shuffle(drawn)
    pairs = []
    for k, (dataset, setting, name, versus, side) in enumerate(drawn, start=1):
        mnd_file = path_of(dataset, setting, "mnd", name)
        other = path_of(dataset, setting, versus, name)
        left, right = (mnd_file, other) if side == "left" else (other, mnd_file)
        pairs.append(Pair(f"P{k:03d}", dataset, setting, name, ids[(dataset, name)], versus, side, left, right))
    return pairs


def choose_images(
    rows: Iterable[Mapping[str, Any]],
    dataset: str,
    count: int,
    *,
    settings: Sequence[str] = ("targeted", "non-targeted"),
    anchors: Sequence[str] = MOS_ANCHORS,
    seed: int = 0,
) -> list[str]:
    """``count`` images of a data set for the subjective test, drawn with a seed.

    The paper "randomly selected 8 images". Images on which MND and every
    anchor succeeded in every setting are preferred (a rater should compare
    two successful attacks); when too few qualify, the others fill up.
    The draw is ``random.Random(f"mnd-mos:{seed}:{dataset}")`` over the
    sorted names, so it is reproducible.

    >>> rows = [{"dataset": "d", "setting": "targeted", "method": m, "image": i, "success": True}
    ...         for m in ("mnd", "bim") for i in ("a", "b", "c")]
    >>> sorted(choose_images(rows, "d", 2, settings=["targeted"], anchors=["bim"]))
    ['a', 'c']
    """
    rows = [r for r in rows if r["dataset"] == dataset]
    names = sorted({str(r["image"]) for r in rows})
    wanted = {(s, m) for s in settings for m in ("mnd", *anchors)}
    won: dict[str, set[tuple[str, str]]] = {}
    for r in rows:
        if r.get("success") in (True, "True"):
            won.setdefault(str(r["image"]), set()).add((str(r["setting"]), str(r["method"])))
    good = [n for n in names if wanted <= won.get(n, set())]
    rest = [n for n in names if n not in good]
    rng = random.Random(f"mnd-mos:{seed}:{dataset}")
    rng.shuffle(good)
    rng.shuffle(rest)
    return (good + rest)[:count]


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell a spreadsheet shows as data, never runs as a formula.

    Text starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
    (a rater's name, an image's name) gets a leading ``'``, the usual defence
    against formula injection; numbers, and text that is a plain number, are
    written as they are. Floats are written exactly (``repr``).

    >>> [csv_cell(v) for v in ("=1+2", "-1.5", -1.5, "@ann", "-2+3", "ann", 3)]
    ["'=1+2", '-1.5', '-1.5', "'@ann", "'-2+3", 'ann', 3]
    """
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def data_cell(text: str) -> str:
    """A cell read back from a file :func:`csv_cell` wrote: the leading ``'`` it added removed.

    >>> data_cell("'=1+2"), data_cell("'quoted"), data_cell("ann")
    ('=1+2', "'quoted", 'ann')
    """
    if text.startswith("'") and text[1:].startswith(_FORMULA_START):
        return text[1:]
    return text


def write_sheet(pairs: Sequence[Pair], folder: str | Path, *, image_root: str | Path | None = None) -> dict[str, Path]:
    """Write the rating material into ``folder``.

    - ``sheet.html``: the pairs side by side with TABLE V's scale (for raters);
    - ``sheet.csv``: pair id, left file, right file (what raters see);
    - ``key.csv``: which side is MND (keep it from the raters);
    - ``ratings.csv``: the header ``rater,pair_id,score`` to fill in, one row
      per rater and pair, ``score`` from -3 to 3 (TABLE V).

    ``image_root``: the folder the pairs' file paths are relative to; the HTML
    links to them relative to ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {"sheet_csv": folder / "sheet.csv", "key": folder / "key.csv", "html": folder / "sheet.html",
           "ratings": folder / "ratings.csv"}
    cells = [{k: csv_cell(v) for k, v in asdict(p).items()} for p in pairs]  # an image's name is a user's text
    write_rows(out["sheet_csv"], cells, SHEET_COLUMNS)
    write_rows(out["key"], cells, KEY_COLUMNS)
    if not out["ratings"].exists():  # never overwrite collected ratings
        write_rows(out["ratings"], [], RATING_COLUMNS)
    root = Path(image_root) if image_root is not None else folder

    def link(p: str) -> str:
        return html.escape(Path(os.path.relpath(root / p, folder)).as_posix())

    scale = "".join(f"<li><b>{v:+d}</b> {html.escape(k)}</li>" for k, v in SCALE.items())
    body = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>MND rating sheet</title>",
        "<style>body{font-family:sans-serif} td{padding:6px;text-align:center} img{width:320px}</style>",
        "</head><body><h1>Image quality comparison</h1>",
        "<p>For each pair, compare the left and the right image and write in <code>ratings.csv</code> one line "
        "<code>your-name,pair id,score</code> with the score of the rule that fits (TABLE V):</p>",
        f"<ul>{scale}</ul><table>",
    ]
    for p in pairs:
        body.append(f"<tr><td><b>{p.pair_id}</b></td><td><img src='{link(p.left)}' alt='left'></td>"
                    f"<td><img src='{link(p.right)}' alt='right'></td></tr>")
    body.append("</table></body></html>")
    with atomic_open(out["html"], "w") as handle:
        handle.write("\n".join(body) + "\n")
    return out


def read_key(path: str | Path) -> list[Pair]:
    """The pairs of a ``key.csv`` (with empty file columns)."""
    rows = _read(Path(path), KEY_COLUMNS)
    return [Pair(r["pair_id"], r["dataset"], r["setting"], r["image"], r["image_id"], r["versus"], r["mnd_side"],
                 "", "") for r in rows]


def _read(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(path, f"missing columns {missing}; expected {', '.join(columns)}")
            return [{k: data_cell(v) if isinstance(v, str) else v for k, v in r.items()} for r in reader]
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"cannot read ({exc})") from None


@dataclass(frozen=True)
class Rating:
    """One rater's score of one pair, on TABLE V's scale (left versus right)."""

    rater: str
    pair_id: str
    score: int


def read_ratings(path: str | Path, pairs: Sequence[Pair] | None = None) -> list[Rating]:
    """Read ``rater,pair_id,score`` rows; scores must be integers from -3 to 3.

    Raises:
        InputError: a bad score, an unknown pair id (when ``pairs`` is
            given), or one rater scoring one pair twice; the message names the line.
    """
    path = Path(path)
    known = {p.pair_id for p in pairs} if pairs is not None else None
    out: list[Rating] = []
    seen: set[tuple[str, str]] = set()
    for line, row in enumerate(_read(path, RATING_COLUMNS), start=2):
        rater, pair_id, raw = (row["rater"] or "").strip(), (row["pair_id"] or "").strip(), (row["score"] or "").strip()
        try:
            score = int(raw)
        except ValueError:
            raise InputError(path, f"line {line}: score {raw!r} is not an integer from -3 to 3") from None
        if not -3 <= score <= 3:
            raise InputError(path, f"line {line}: score {score} is outside TABLE V's -3..3")
        if not rater:
            raise InputError(path, f"line {line}: no rater")
        if known is not None and pair_id not in known:
            raise InputError(path, f"line {line}: unknown pair {pair_id!r}")
        if (rater, pair_id) in seen:
            raise InputError(path, f"line {line}: {rater} rated {pair_id} twice")
        seen.add((rater, pair_id))
        out.append(Rating(rater, pair_id, score))
    return out


def mnd_scores(ratings: Iterable[Rating], pairs: Sequence[Pair]) -> list[dict[str, Any]]:
    """Each rating as "MND versus the anchor": the score, sign-flipped when MND was on the right.

    >>> pair = Pair("P001", "d", "targeted", "x", "I1", "bim", "right", "", "")
    >>> mnd_scores([Rating("r", "P001", -2)], [pair])[0]["score"]
    2
    """
    by_id = {p.pair_id: p for p in pairs}
    out = []
    for r in ratings:
        p = by_id[r.pair_id]
        out.append({"dataset": p.dataset, "setting": p.setting, "image": p.image, "image_id": p.image_id,
                    "versus": p.versus, "rater": r.rater, "score": r.score if p.mnd_side == "left" else -r.score})
    return out


def _image_sort(image_id: str) -> tuple[int, str]:
    digits = "".join(ch for ch in image_id if ch.isdigit())
    return (int(digits) if digits else 10**9, image_id)


def mos_table(scores: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per data set x setting x image x anchor: mean and std of the MND-versus-anchor scores.

    After each data set x setting's image rows comes one ``image_id = "Average"``
    row per anchor: the mean of that anchor's per-image means (as the paper's
    "Average (I1-I8)" rows are), with no std.
    """
    groups: dict[tuple[str, str, str, str, str], list[float]] = {}
    for s in scores:
        groups.setdefault((s["dataset"], s["setting"], s["image_id"], s.get("image", ""), s["versus"]), []).append(
            float(s["score"]))
    out: list[dict[str, Any]] = []
    blocks = sorted({(d, st) for d, st, *_ in groups})
    for dataset, setting in blocks:
        keys = sorted((k for k in groups if k[:2] == (dataset, setting)),
                      key=lambda k: (_image_sort(k[2]), _anchor_rank(k[4])))
        per_image = [{"dataset": dataset, "setting": setting, "image_id": k[2], "image": k[3], "versus": k[4],
                      "mean": statistics.fmean(groups[k]), "std": sample_std(groups[k]), "n": len(groups[k])}
                     for k in keys]
        out += per_image
        out += averages(per_image)
    return out


def _anchor_rank(name: str) -> int:
    key = name.lower()
    return ANCHOR_ORDER.index(key) if key in ANCHOR_ORDER else len(ANCHOR_ORDER)


def averages(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The "Average" row of each data set x setting x anchor: the mean of the per-image means.

    >>> averages([{"dataset": "d", "setting": "t", "versus": "BIM", "mean": 1.0},
    ...           {"dataset": "d", "setting": "t", "versus": "BIM", "mean": 2.0}])[0]["mean"]
    1.5
    """
    groups: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        if r.get("image_id") == "Average":
            continue
        groups.setdefault((r["dataset"], r["setting"], r["versus"]), []).append(float(r["mean"]))
    return [{"dataset": d, "setting": s, "image_id": "Average", "image": "", "versus": v,
             "mean": statistics.fmean(means), "std": math.nan, "n": len(means)}
            for (d, s, v), means in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], _anchor_rank(kv[0][2])))]


# --- the paper's own MOS tables ----------------------------------------------------


def _paper_file(name: str) -> Path:
    return paper_dir() / name


def paper_tables() -> list[dict[str, Any]]:
    """The per-image rows of the paper's Tables III, IV, VIII and IX."""
    rows = _read(_paper_file("mos_tables.csv"), ["table", "dataset", "setting", "image_id", "versus", "mean", "std"])
    return [{**r, "mean": float(r["mean"]), "std": float(r["std"])} for r in rows]


def paper_averages() -> list[dict[str, Any]]:
    """The "Average" rows as the paper prints them."""
    rows = _read(_paper_file("mos_averages.csv"), ["table", "dataset", "setting", "versus", "mean"])
    return [{**r, "mean": float(r["mean"])} for r in rows]


def check_averages(
    per_image: Iterable[Mapping[str, Any]], printed: Iterable[Mapping[str, Any]], *, tolerance: float = 0.005
) -> list[dict[str, Any]]:
    """Recompute each table's "Average" row from its per-image rows and compare with the printed one.

    A printed average matches when it is within ``tolerance`` (half a unit of
    its last printed digit) of the mean of the per-image means.

    Returns:
        one row per table x anchor: printed, recomputed, difference, matches.
    """
    groups: dict[tuple[str, str], list[float]] = {}
    for r in per_image:
        groups.setdefault((r["table"], r["versus"]), []).append(float(r["mean"]))
    out = []
    for p in printed:
        values = groups.get((p["table"], p["versus"]), [])
        recomputed = statistics.fmean(values) if values else math.nan
        diff = float(p["mean"]) - recomputed
        out.append({"table": p["table"], "dataset": p["dataset"], "setting": p["setting"], "versus": p["versus"],
                    "images": len(values), "printed": float(p["mean"]), "recomputed": recomputed,
                    "difference": diff, "matches": abs(diff) <= tolerance + 1e-9})
    return out


def wide(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The paper's layout: one row per image (then "Average"), a mean and a std column per anchor.

    Column names are ``<anchor> mean`` and ``<anchor> std`` with the anchors'
    display names, in the paper's order (BIM, DI2FGSM, MIFGSM, PGD).

    >>> wide([{"image_id": "I1", "versus": "bim", "mean": 1.0, "std": 0.5}])
    [{'Image ID': 'I1', 'BIM mean': 1.0, 'BIM std': 0.5}]
    """
    rows = sorted(rows, key=lambda r: _anchor_rank(str(r["versus"])))
    table: dict[str, dict[str, Any]] = {}
    for r in rows:
        line = table.setdefault(r["image_id"], {"Image ID": r["image_id"]})
        label = LABELS.get(str(r["versus"]).lower(), str(r["versus"]))
        line[f"{label} mean"] = r["mean"]
        line[f"{label} std"] = r.get("std", math.nan)
    order = sorted(table, key=lambda k: (k == "Average", _image_sort(k)))
    return [table[k] for k in order]
