"""The subjective test of section IV-B-5 as a study in one SQLite file (Tables III, IV, VIII and IX).

A *study* is drawn once from a grid results folder (:mod:`mnd.experiments.grid`) for one
data set and one setting. As the paper does, every pair shows the MND image
and one anchor's image of the same photo side by side, on TABLE V's scale
(:data:`mnd.book.mos.SCALE`); only images that both methods attacked successfully
are used. Hidden *control* pairs show the clean image next to itself: their
honest score is 0.

Each rater gets their own random pair order and their own random side for
MND in every pair, drawn when they first log in (seeded by the study's seed
and the rater's name) and recorded in ``assignments``; every rating records
what was on the left and on the right, when the pair was first shown and
when it was answered. The file is ``RESULTS/mos/<study>.sqlite``, in WAL
mode, and every rating is one transaction: stopping the server, even by
killing it, loses no answered pair, and several raters can rate at once.

Tables (:func:`mos_rows`): a score becomes "MND versus the anchor" (its sign
flipped when MND was on the right, :func:`mnd.book.mos.mnd_scores`); raters who
*failed the controls* (mean absolute score over the control pairs they
answered above ``control_limit``, default 1, i.e. they saw a clear
difference between two identical images) are left out and counted; then
:func:`mnd.book.mos.mos_table` gives the per-image mean and standard deviation
per anchor and the "Average" rows.

Both CSV outputs (:func:`export_ratings`, :func:`write_tables`) are written
atomically, and a text cell a spreadsheet would run as a formula (a rater
named ``=HYPERLINK(...)``) gets a leading ``'`` (:func:`csv_cell`).

>>> check_name("pilot-1")
'pilot-1'
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import json
import math
import random
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mnd import experiments
from mnd.book import mos
from mnd.core.anchors import MOS_ORDER
from mnd.data.imageio import atomic_open
from mnd.errors import InputError

SCHEMA_VERSION = 1
CONTROL = "clean"
"""The ``versus`` of a control pair (the clean image shown against itself)."""

MND = "mnd"
CONTROL_LIMIT = 1.0
"""A rater fails the controls when their mean |score| on the control pairs is above this."""

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_RATER_NAME = 64
MAX_CONTROLS = 1000
"""The most control pairs a study may have (each rater rates every one)."""

RESULT_COLUMNS = ("dataset", "setting", "image", "method", "success")
"""The columns of the grid's ``results.csv`` a study is drawn from."""

EXPORT_COLUMNS = [
    "study", "rater", "pair_id", "dataset", "setting", "image", "image_id", "versus", "is_control", "position",
    "left", "right", "mnd_side", "score", "mnd_score", "shown_at", "answered_at",
]
"""Columns of the raw export: one row per rating; ``left``/``right`` name what was shown there."""

TABLE_COLUMNS = ["dataset", "setting", "image_id", "image", "versus", "mean", "std", "n"]
"""Columns of the tables CSV: the rows of :func:`mnd.book.mos.mos_table` (``mnd.book.mos.wide`` lays them out as the paper)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS study (
    name TEXT PRIMARY KEY, schema_version INTEGER NOT NULL, args TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS contents (
    content_id INTEGER PRIMARY KEY, image TEXT NOT NULL, method TEXT NOT NULL, sha256 TEXT NOT NULL,
    png BLOB NOT NULL, UNIQUE (image, method));
CREATE TABLE IF NOT EXISTS pairs (
    pair_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, setting TEXT NOT NULL, image TEXT NOT NULL,
    image_id TEXT NOT NULL, left_content INTEGER NOT NULL REFERENCES contents,
    right_content INTEGER NOT NULL REFERENCES contents, versus TEXT NOT NULL,
    is_control INTEGER NOT NULL CHECK (is_control IN (0, 1)));
CREATE TABLE IF NOT EXISTS raters (
    rater_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    token TEXT PRIMARY KEY, rater_id INTEGER NOT NULL REFERENCES raters, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS assignments (
    rater_id INTEGER NOT NULL REFERENCES raters, pair_id TEXT NOT NULL REFERENCES pairs,
    position INTEGER NOT NULL, swapped INTEGER NOT NULL CHECK (swapped IN (0, 1)), shown_at REAL,
    PRIMARY KEY (rater_id, pair_id), UNIQUE (rater_id, position));
CREATE TABLE IF NOT EXISTS ratings (
    rating_id INTEGER PRIMARY KEY, rater_id INTEGER NOT NULL REFERENCES raters,
    pair_id TEXT NOT NULL REFERENCES pairs, left_content INTEGER NOT NULL REFERENCES contents,
    right_content INTEGER NOT NULL REFERENCES contents, score INTEGER NOT NULL CHECK (score BETWEEN -3 AND 3),
    shown_at REAL, answered_at REAL NOT NULL, UNIQUE (rater_id, pair_id));
"""
"""``pairs`` holds MND on the left (``left_content``); ``assignments.swapped`` says a rater saw it on the right."""


class RatingRejected(InputError):
    """A rating (or login) the study refuses; nothing was written.

    ``status`` is the HTTP status the web page answers with: 400 bad value,
    401 unknown rater, 404 unknown pair, 409 already answered.
    """

    def __init__(self, where: str, problem: str, status: int) -> None:
        super().__init__(where, problem)
        self.status = status


@dataclass(frozen=True)
class StudyArgs:
    """What a study was drawn with; creating a study again with the same values reuses it."""

    dataset: str
    setting: str
    seed: int
    images: int
    controls: int
    anchors: tuple[str, ...]


@dataclass(frozen=True)
class Shown:
    """The pair a rater is to rate next, as they see it."""

    pair_id: str
    position: int
    total: int
    answered: int
    left_content: int
    right_content: int


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


def check_name(name: str, what: str = "--study") -> str:
    """A study name: 1-64 letters, digits, ``-`` or ``_`` (it names a file)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name or ""):
        raise InputError(what, f"{name!r} is not a study name (1-64 letters, digits, '-' or '_')")
    return name


def study_path(results: str | Path, name: str) -> Path:
    """``RESULTS/mos/<name>.sqlite``."""
    return Path(results) / "mos" / f"{check_name(name)}.sqlite"


def clean_rater_name(name: str) -> str:
    """A rater's name or code, stripped; 1-64 printable characters."""
    name = (name or "").strip()
    if not name or len(name) > MAX_RATER_NAME or not name.isprintable():
        raise RatingRejected("name", f"give a name or code of 1 to {MAX_RATER_NAME} printable characters", 400)
    return name


# --- the database -------------------------------------------------------------------


class Study:
    """One study's SQLite file. Each call opens its own connection, so one object serves many threads."""

    def __init__(self, path: str | Path) -> None:
        """Open a study file, refusing (``InputError`` naming the file) one that is damaged or not a study."""
        self.path = Path(path)
        if self.path.is_dir():
            raise InputError(self.path, "is a folder, not a study file")
        if not self.path.is_file():
            raise InputError(self.path, "no such study; create it with --dataset and --setting")
        with self._connect() as db:
            self._check_file(db)
            row = db.execute("SELECT name, schema_version, args FROM study").fetchone()
        if row is None or row[1] != SCHEMA_VERSION:
            raise InputError(self.path, "not a study file of this version of mnd")
        try:
            args = json.loads(row[2])
            self.args = StudyArgs(**{**args, "anchors": tuple(args["anchors"])})
        except (TypeError, ValueError, KeyError):
            problem = "not a study file of this version of mnd (its settings are unreadable)"
            raise InputError(self.path, problem) from None
        self.name: str = str(row[0])

    def _check_file(self, db: sqlite3.Connection) -> None:
        """Refuse a damaged file (SQLite's quick check) or one without this version's tables and columns."""
        problems = [str(r[0]) for r in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise InputError(self.path, f"the study file is damaged (SQLite's check says: {' '.join(problems)[:200]})")
        for table, columns in _schema_columns().items():
            found = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
            missing = [c for c in columns if c not in found]
            if missing:
                lack = f"no table {table}" if not found else f"table {table} lacks {', '.join(missing)}"
                raise InputError(self.path, f"not a study file of this version of mnd ({lack})")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise InputError(self.path, f"cannot open the study ({exc})") from None
        try:
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA synchronous = FULL")
            yield db
        except sqlite3.DatabaseError as exc:
            raise InputError(self.path, f"study database error ({exc})") from None
        finally:
            db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on success, rolled back on any error."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # --- raters ---

    def login(self, name: str) -> tuple[int, str]:
        """Add a rater, or resume one by name; returns (rater id, a new session token).

        A new rater's pair order and sides are drawn here and recorded.
        """
        name = clean_rater_name(name)
        token = secrets.token_urlsafe(24)
        with self._write() as db:
            row = db.execute("SELECT rater_id FROM raters WHERE name = ?", (name,)).fetchone()
            if row is None:
                rater_id = db.execute("INSERT INTO raters (name, created_at) VALUES (?, ?)",
                                      (name, time.time())).lastrowid
                self._assign(db, int(rater_id), name)
            else:
                rater_id = row[0]
            db.execute("INSERT INTO sessions (token, rater_id, created_at) VALUES (?, ?, ?)",
                       (token, rater_id, time.time()))
        return int(rater_id), token

    def add_rater(self, name: str) -> int:
        """Add a rater (or find one by name); returns the rater id."""
        return self.login(name)[0]

    def _assign(self, db: sqlite3.Connection, rater_id: int, name: str) -> None:
        pair_ids = [r[0] for r in db.execute("SELECT pair_id FROM pairs ORDER BY pair_id")]
        rng = random.Random(f"mnd-mos:{self.args.seed}:{self.name}:{name}")
        order = pair_ids[:]
        rng.shuffle(order)
        swaps = [rng.random() < 0.5 for _ in order]
        db.executemany("INSERT INTO assignments (rater_id, pair_id, position, swapped) VALUES (?, ?, ?, ?)",
                       [(rater_id, p, k, int(s)) for k, (p, s) in enumerate(zip(order, swaps), start=1)])

    def rater_of(self, token: str) -> int | None:
        """The rater of a session token (None when unknown)."""
        with self._connect() as db:
            row = db.execute("SELECT rater_id FROM sessions WHERE token = ?", (token,)).fetchone()
        return None if row is None else int(row[0])

    def rater_name(self, rater_id: int) -> str:
        """The name a rater logged in with."""
        with self._connect() as db:
            row = db.execute("SELECT name FROM raters WHERE rater_id = ?", (rater_id,)).fetchone()
        if row is None:
            raise RatingRejected("rater", f"no rater {rater_id} in this study", 401)
        return str(row[0])

    # --- pairs ---

    def pair_count(self) -> int:
        """How many pairs each rater rates (controls included)."""
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM pairs").fetchone()[0])

    def pairs(self) -> list[dict[str, Any]]:
        """Every pair, with the methods in its canonical left (MND) and right places."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(
                "SELECT p.*, l.method AS left_method, r.method AS right_method FROM pairs p "
                "JOIN contents l ON l.content_id = p.left_content JOIN contents r ON r.content_id = p.right_content "
                "ORDER BY p.pair_id")]

    def next_pair(self, rater_id: int) -> Shown | None:
        """The rater's next unanswered pair in their order (None when all are done); records when it was first shown."""
        with self._write() as db:
            self._check_rater(db, rater_id)
            total, answered = self._progress(db, rater_id)
            row = db.execute(
                "SELECT a.pair_id, a.position, a.swapped, a.shown_at, p.left_content, p.right_content "
                "FROM assignments a JOIN pairs p USING (pair_id) WHERE a.rater_id = ? AND NOT EXISTS "
                "(SELECT 1 FROM ratings r WHERE r.rater_id = a.rater_id AND r.pair_id = a.pair_id) "
                "ORDER BY a.position LIMIT 1", (rater_id,)).fetchone()
            if row is None:
                return None
            pair_id, position, swapped, shown_at, left, right = row
            if shown_at is None:
                db.execute("UPDATE assignments SET shown_at = ? WHERE rater_id = ? AND pair_id = ?",
                           (time.time(), rater_id, pair_id))
        left, right = (right, left) if swapped else (left, right)
        return Shown(pair_id, position, total, answered, left, right)

    def progress(self, rater_id: int) -> tuple[int, int]:
        """(pairs in the study, pairs this rater answered)."""
        with self._connect() as db:
            return self._progress(db, rater_id)

    @staticmethod
    def _progress(db: sqlite3.Connection, rater_id: int) -> tuple[int, int]:
        total = db.execute("SELECT COUNT(*) FROM assignments WHERE rater_id = ?", (rater_id,)).fetchone()[0]
        done = db.execute("SELECT COUNT(*) FROM ratings WHERE rater_id = ?", (rater_id,)).fetchone()[0]
        return int(total), int(done)

    @staticmethod
    def _check_rater(db: sqlite3.Connection, rater_id: int) -> None:
        if db.execute("SELECT 1 FROM raters WHERE rater_id = ?", (rater_id,)).fetchone() is None:
            raise RatingRejected("rater", f"no rater {rater_id} in this study", 401)

    def image(self, rater_id: int, pair_id: str, side: str) -> bytes:
        """The PNG a rater sees on ``side`` (``left``/``right``) of one of their pairs."""
        if side not in ("left", "right"):
            raise RatingRejected("side", f"{side!r} is neither left nor right", 404)
        with self._connect() as db:
            row = db.execute(
                "SELECT a.swapped, p.left_content, p.right_content FROM assignments a JOIN pairs p USING (pair_id) "
                "WHERE a.rater_id = ? AND a.pair_id = ?", (rater_id, pair_id)).fetchone()
            if row is None:
                raise RatingRejected("pair", f"no pair {pair_id!r} for this rater", 404)
            swapped, left, right = row
            shown = (right if swapped else left) if side == "left" else (left if swapped else right)
            return bytes(db.execute("SELECT png FROM contents WHERE content_id = ?", (shown,)).fetchone()[0])

    # --- ratings ---

    def record(self, rater_id: int, pair_id: str, score: Any) -> None:
        """Store one rating, in one transaction; nothing is written when it is refused.

        Raises:
            RatingRejected: score not an integer from -3 to 3 (400), unknown
                rater (401), a pair that is not this rater's (404), or a pair
                this rater already answered (409).
        """
        if isinstance(score, bool) or not isinstance(score, int) or not -3 <= score <= 3:
            raise RatingRejected("score", f"{score!r} is not an integer from -3 to 3 (TABLE V)", 400)
        with self._write() as db:
            self._check_rater(db, rater_id)
            row = db.execute(
                "SELECT a.swapped, a.shown_at, p.left_content, p.right_content FROM assignments a "
                "JOIN pairs p USING (pair_id) WHERE a.rater_id = ? AND a.pair_id = ?", (rater_id, pair_id)).fetchone()
            if row is None:
                raise RatingRejected("pair", f"no pair {pair_id!r} in this study", 404)
            if db.execute("SELECT 1 FROM ratings WHERE rater_id = ? AND pair_id = ?",
                          (rater_id, pair_id)).fetchone() is not None:
                raise RatingRejected("pair", f"pair {pair_id} was already answered", 409)
            swapped, shown_at, left, right = row
            left, right = (right, left) if swapped else (left, right)
            db.execute("INSERT INTO ratings (rater_id, pair_id, left_content, right_content, score, shown_at, "
                       "answered_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (rater_id, pair_id, left, right, score, shown_at, time.time()))

    def ratings(self) -> list[dict[str, Any]]:
        """Every rating with its pair, in the raw export's columns (:data:`EXPORT_COLUMNS`)."""
        query = (
            "SELECT r.name AS rater, t.pair_id, p.dataset, p.setting, p.image, p.image_id, p.versus, p.is_control, "
            "a.position, l.method AS left, rr.method AS right, t.score, t.shown_at, t.answered_at, "
            "t.left_content = p.left_content AS mnd_left "
            "FROM ratings t JOIN raters r USING (rater_id) JOIN pairs p USING (pair_id) "
            "JOIN assignments a ON a.rater_id = t.rater_id AND a.pair_id = t.pair_id "
            "JOIN contents l ON l.content_id = t.left_content JOIN contents rr ON rr.content_id = t.right_content "
            "ORDER BY t.rating_id")
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            rows = [dict(r) for r in db.execute(query)]
        for r in rows:
            r["study"] = self.name
            r["mnd_side"] = "" if r["is_control"] else ("left" if r["mnd_left"] else "right")
            r["mnd_score"] = "" if r["is_control"] else (r["score"] if r["mnd_left"] else -r["score"])
            for key in ("shown_at", "answered_at"):
                r[key] = _iso(r[key])
        return rows


@functools.cache
def _schema_columns() -> dict[str, list[str]]:
    """Table -> its columns, as :data:`_SCHEMA` makes them."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(_SCHEMA)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        db.close()


def _iso(stamp: float | None) -> str:
    """UTC time as ``2024-01-31T12:00:00.123Z`` ('' when unknown)."""
    if stamp is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1000):03d}Z"


# --- drawing a study ----------------------------------------------------------------


def _succeeded(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> dict[str, set[str]]:
    """Image -> the methods that attacked it successfully in this data set and setting."""
    out: dict[str, set[str]] = {}
    for r in rows:
        if r["dataset"] == dataset and r["setting"] == setting and r.get("success") in (True, "True"):
            out.setdefault(str(r["image"]), set()).add(str(r["method"]))
    return out


def _draw(results: Path, args: StudyArgs) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """(images I1.., (image, anchor) pairs, control images) for a study; refuses a study with no pair."""
    table = results / experiments.RESULTS_CSV
    try:
        rows = experiments.read_results(results)
    except ValueError as exc:  # a number column holding something else
        raise InputError(table, f"cannot read the results ({exc})") from None
    if not rows:
        raise InputError(table, "no results here (run the grid first)")
    missing = [c for c in RESULT_COLUMNS if c not in rows[0]]
    if missing:
        raise InputError(table, f"not a grid results table: no column {', '.join(missing)}")
    where = f"{args.dataset}/{args.setting}"
    if not any(r["dataset"] == args.dataset and r["setting"] == args.setting for r in rows):
        found = sorted({f"{r['dataset']}/{r['setting']}" for r in rows})
        raise InputError(results / experiments.RESULTS_CSV, f"no rows for {where}; it has {', '.join(found)}")
    won = _succeeded(rows, args.dataset, args.setting)
    compared = [a for a in args.anchors if any(a in m for m in won.values())]
    candidates = [r for r in rows if str(r["image"]) in won and MND in won[str(r["image"])]]
    images = mos.choose_images(candidates, args.dataset, args.images, settings=[args.setting], anchors=compared,
                               seed=args.seed)
    pairs = [(i, a) for i in images for a in compared if a in won[i]]
    if not pairs:
        raise InputError(results / experiments.RESULTS_CSV,
                         f"no image of {where} was attacked successfully by MND and an anchor; no pair to rate")
    images = [i for i in images if any(p[0] == i for p in pairs)]
    rng = random.Random(f"mnd-mos:{args.seed}:controls")
    controls = [images[k % len(images)] for k in range(args.controls)]
    rng.shuffle(controls)
    return images, pairs, controls


def _png(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "image missing from the results folder") from None
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
    if not data.startswith(PNG_MAGIC):
        raise InputError(path, "not a PNG file")
    return data


def _fill(db: sqlite3.Connection, results: Path, name: str, args: StudyArgs) -> int:
    """Write a new study's rows: the images (copied in), then the pairs under shuffled ids."""
    images, pairs, controls = _draw(results, args)
    image_ids = {img: f"I{k}" for k, img in enumerate(images, start=1)}
    content: dict[tuple[str, str], int] = {}

    def content_id(image: str, method: str) -> int:
        if (image, method) not in content:
            path = (experiments.clean_path(results, args.dataset, image) if method == CONTROL
                    else experiments.png_path(results, args.dataset, args.setting, method, image))
            data = _png(path)
            content[(image, method)] = int(db.execute(
                "INSERT INTO contents (image, method, sha256, png) VALUES (?, ?, ?, ?)",
                (image, method, hashlib.sha256(data).hexdigest(), data)).lastrowid)
        return content[(image, method)]

    drawn = [(img, content_id(img, MND), content_id(img, a), a, 0) for img, a in pairs]
    drawn += [(img, content_id(img, CONTROL), content_id(img, CONTROL), CONTROL, 1) for img in controls]
    random.Random(f"mnd-mos:{args.seed}:pair-ids").shuffle(drawn)  # ids do not give controls away
    db.executemany(
        "INSERT INTO pairs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(f"P{k:03d}", args.dataset, args.setting, img, image_ids[img], left, right, versus, control)
         for k, (img, left, right, versus, control) in enumerate(drawn, start=1)])
    db.execute("INSERT INTO study VALUES (?, ?, ?, ?)",
               (name, SCHEMA_VERSION, json.dumps({**asdict(args), "anchors": list(args.anchors)}), time.time()))
    return len(drawn)


def create_study(
    results: str | Path,
    name: str,
    dataset: str,
    setting: str,
    *,
    seed: int = 0,
    images: int = 8,
    controls: int = 2,
    anchors: Sequence[str] | None = None,
) -> Study:
    """Draw a study from a grid results folder, or reuse the one drawn with the same arguments.

    Args:
        results: the grid's results folder (``results.csv`` and the PNGs).
        name: the study's name; the file is ``results/mos/<name>.sqlite``.
        dataset, setting: which images (``non-targeted`` or ``targeted``).
        seed: seeds the image draw, the pair ids and every rater's order and sides.
        images: how many images (the paper: 8), preferring those every compared method attacked successfully.
        controls: how many control pairs (clean image against itself).
        anchors: the anchors MND is compared with (default: every MOS anchor in the results).

    Raises:
        InputError: a study of that name drawn with other arguments, bad
            arguments, or no successful image pair to rate.
    """
    results = Path(results)
    path = study_path(results, name)
    if images < 1 or controls < 0:
        raise InputError("--images" if images < 1 else "--controls", "must be at least 1 (controls: 0)")
    if controls > MAX_CONTROLS:
        raise InputError("--controls", f"{controls} is more than {MAX_CONTROLS} control pairs")
    unknown = [a for a in anchors or () if a not in MOS_ORDER]
    if unknown:
        raise InputError("--anchors", f"unknown anchor {unknown[0]!r}; choose from {', '.join(MOS_ORDER)}")
    twice = [a for k, a in enumerate(anchors or ()) if a in list(anchors or ())[:k]]
    if twice:
        raise InputError("--anchors", f"{twice[0]!r} is given twice (each anchor's pairs would be rated twice)")
    args = StudyArgs(dataset, setting, int(seed), int(images), int(controls),
                     tuple(anchors) if anchors is not None else tuple(MOS_ORDER))
    if path.exists():
        study = Study(path)
        if study.args != args:
            raise InputError(path, f"study {name!r} exists, drawn with {_describe(study.args)}; "
                             f"not {_describe(args)} (use the same values or another --study name)")
        return study
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.new")
    partial.unlink(missing_ok=True)
    db = sqlite3.connect(partial, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(_SCHEMA)
        db.execute("BEGIN")
        _fill(db, results, name, args)
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except BaseException:
        db.close()
        partial.unlink(missing_ok=True)
        Path(f"{partial}-wal").unlink(missing_ok=True)
        Path(f"{partial}-shm").unlink(missing_ok=True)
        raise
    db.close()
    partial.rename(path)  # a half-made study never takes the name
    return Study(path)


def _describe(args: StudyArgs) -> str:
    return (f"dataset={args.dataset} setting={args.setting} seed={args.seed} images={args.images} "
            f"controls={args.controls} anchors={','.join(args.anchors)}")


def open_study(results: str | Path, name: str) -> Study:
    """An existing study of a results folder."""
    return Study(study_path(results, name))


# --- outputs ------------------------------------------------------------------------


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
    """The MOS rows (:func:`mnd.book.mos.mos_table`) of raw ratings, without the raters who failed the controls.

    ``ratings`` are :meth:`Study.ratings` rows. Each rater's view of a pair
    becomes one :class:`mnd.book.mos.Pair` (its own MND side), so
    :func:`mnd.book.mos.mnd_scores` flips the sign where that rater saw MND on the right.
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
        pairs.append(mos.Pair(key, r["dataset"], r["setting"], r["image"], r["image_id"], r["versus"],
                              r["mnd_side"], "", ""))
        scores.append(mos.Rating(str(r["rater"]), key, int(r["score"])))
    rows = mos.mos_table(mos.mnd_scores(scores, pairs))
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
