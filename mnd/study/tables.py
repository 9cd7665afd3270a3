"""A study's tables: the MOS rows of Tables III, IV, VIII and IX, and the raw ratings, as CSV.

Tables (:func:`mos_rows`): a score becomes "MND versus the anchor" (its sign
flipped when MND was on the right, :func:`mnd.study.protocol.mnd_scores`); raters who
*failed the controls* (mean absolute score over the control pairs they
answered above ``control_limit``, default 1, i.e. they saw a clear
difference between two identical images) are left out and counted; then
:func:`mnd.study.protocol.mos_table` gives the per-image mean and standard deviation
per anchor and the "Average" rows. This is all the book reads of a study
(:func:`study_reports`).

Both CSV outputs (:func:`export_ratings`, :func:`write_tables`) are written
atomically, and a text cell a spreadsheet would run as a formula (a rater
named ``=HYPERLINK(...)``) gets a leading ``'`` (:func:`csv_cell`).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnd import experiments
from mnd.data.imageio import atomic_open
from mnd.errors import InputError
from mnd.study import protocol
from mnd.study.protocol import csv_cell
from mnd.study.store import Study, open_study

CONTROL_LIMIT = 1.0
"""A rater fails the controls when their mean |score| on the control pairs is above this."""

EXPORT_COLUMNS = [
    "study", "rater", "pair_id", "dataset", "setting", "image", "image_id", "versus", "is_control", "position",
    "left", "right", "mnd_side", "score", "mnd_score", "shown_at", "answered_at",
]
"""Columns of the raw export: one row per rating; ``left``/``right`` name what was shown there."""

TABLE_COLUMNS = ["dataset", "setting", "image_id", "image", "versus", "mean", "std", "n"]
"""Columns of the tables CSV: the rows of :func:`mnd.study.protocol.mos_table`
(:func:`mnd.study.protocol.wide` lays them out as the paper)."""


@dataclass(frozen=True)
class MosReport:
    """The MOS rows of a study and who they come from."""

    rows: list[dict[str, Any]]
    raters: list[str]
    excluded: list[str]
    unchecked: list[str]
    ratings: int
    control_limit: float = CONTROL_LIMIT

    def summary(self) -> str:
        """One line: how many raters and ratings count, and how many were left out and why."""
        return (f"{len(self.raters)} raters, {self.ratings} ratings counted; {len(self.excluded)} raters left out "
                f"for failing the control pairs (mean |score| on them above {self.control_limit:g})"
                + (f": {', '.join(self.excluded)}" if self.excluded else "")
                + (f"; {len(self.unchecked)} counted without any control answered" if self.unchecked else ""))


def _write_csv(path: Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: csv_cell(v) for k, v in row.items()})


def check_output(study: Study, out: Path) -> Path:
    """Refuse an output that is a folder, lies under a file, or would replace the study file or the grid's table."""
    if out.is_dir():
        raise InputError(out, "is a folder, expected a CSV file path")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(out, f"{parent} is a file, not a folder")
            break
    target = out.resolve()
    protected = {study.path.resolve(), *(Path(f"{study.path.resolve()}{s}") for s in ("-wal", "-shm")),
                 (study.path.parent.parent / experiments.RESULTS_CSV).resolve()}
    if target in protected or target.suffix.lower() in (".png", ".sqlite"):
        raise InputError(out, "would overwrite an input of the study; choose another --out")
    return out


def export_ratings(study: Study, out: str | Path) -> int:
    """Write every rating as CSV (:data:`EXPORT_COLUMNS`), atomically; returns how many."""
    rows = study.ratings()
    _write_csv(check_output(study, Path(out)), rows, EXPORT_COLUMNS)
    return len(rows)


def control_means(ratings: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Rater -> mean |score| over the control pairs they answered (raters without one are absent).

    >>> control_means([{"rater": "a", "is_control": 1, "score": -2}, {"rater": "a", "is_control": 1, "score": 1},
    ...                {"rater": "b", "is_control": 0, "score": 3}])
    {'a': 1.5}
    """
    found: dict[str, list[int]] = {}
    for r in ratings:
        if r["is_control"]:
            found.setdefault(str(r["rater"]), []).append(abs(int(r["score"])))
    return {k: sum(v) / len(v) for k, v in found.items()}


def check_control_limit(value: Any, where: str = "control_limit") -> float:
    """``value`` as a control limit: a finite number >= 0 (``nan`` would leave out nobody, ``-1`` everybody).

    >>> check_control_limit(1)
    1.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InputError(where, f"must be a finite number >= 0 (the most mean |score| a rater may give the "
                         f"control pairs), not {value!r}")
    return float(value)


def mos_rows(ratings: Sequence[Mapping[str, Any]], *, control_limit: float = CONTROL_LIMIT) -> MosReport:
    """The MOS rows (:func:`mnd.study.protocol.mos_table`) of raw ratings, without the raters who failed the controls.

    ``ratings`` are :meth:`Study.ratings` rows. Each rater's view of a pair
    becomes one :class:`mnd.study.protocol.Pair` (its own MND side), so
    :func:`mnd.study.protocol.mnd_scores` flips the sign where that rater saw MND on the right.
    ``control_limit`` must be a finite number >= 0 (:func:`check_control_limit`).
    """
    control_limit = check_control_limit(control_limit)
    checked = control_means(ratings)
    excluded = sorted(r for r, m in checked.items() if m > control_limit)
    raters = sorted({str(r["rater"]) for r in ratings})
    kept = [r for r in ratings if not r["is_control"] and str(r["rater"]) not in excluded]
    pairs, scores = [], []
    for r in kept:
        key = f"{r['pair_id']}:{r['rater']}"
        pairs.append(protocol.Pair(key, r["dataset"], r["setting"], r["image"], r["image_id"], r["versus"],
                              r["mnd_side"], "", ""))
        scores.append(protocol.Rating(str(r["rater"]), key, int(r["score"])))
    rows = protocol.mos_table(protocol.mnd_scores(scores, pairs))
    unchecked = sorted(r for r in raters if r not in checked)
    counted = [r for r in raters if r not in excluded]
    return MosReport(rows, counted, excluded, unchecked, len(kept), control_limit)


def write_tables(study: Study, out: str | Path, *, control_limit: float = CONTROL_LIMIT) -> MosReport:
    """Compute the study's MOS rows and write them as CSV (:data:`TABLE_COLUMNS`), atomically."""
    report = mos_rows(study.ratings(), control_limit=control_limit)
    if not report.rows:
        raise InputError(study.path, "every rater failed the control pairs; no table"
                         if report.excluded and not report.raters else "no ratings of MND pairs yet; no table")
    _write_csv(check_output(study, Path(out)), report.rows, TABLE_COLUMNS)
    return report


def study_reports(results: str | Path, *, control_limit: float = CONTROL_LIMIT) -> list[tuple[str, MosReport]]:
    """(study name, its MOS report) for every study under ``RESULTS/mos/`` (none: [])."""
    folder = Path(results) / "mos"
    names = sorted(p.stem for p in folder.glob("*.sqlite") if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", p.stem))
    return [(name, mos_rows(open_study(results, name).ratings(), control_limit=control_limit)) for name in names]
