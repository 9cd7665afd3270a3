"""A rating study in one SQLite file: the schema, the raters, their pairs and their answers.

A *study* (drawn by :mod:`mnd.study.draw`) holds the images it shows, its
pairs (MND against one anchor on one photo, or a hidden control pair of the
clean image against itself) and every rater's answers. Each rater gets their
own random pair order and their own random side for MND in every pair, drawn
when they first log in (seeded by the study's seed and the rater's name) and
recorded in ``assignments``; every rating records what was on the left and
on the right, when the pair was first shown and when it was answered. The
file is ``RESULTS/mos/<study>.sqlite``, in WAL mode, and every rating is one
transaction: stopping the server, even by killing it, loses no answered
pair, and several raters can rate at once.

>>> check_name("pilot-1")
'pilot-1'
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnd.errors import InputError

SCHEMA_VERSION = 1
CONTROL = "clean"
"""The ``versus`` of a control pair (the clean image shown against itself)."""

MND = "mnd"
MAX_RATER_NAME = 64

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




def open_study(results: str | Path, name: str) -> Study:
    """An existing study of a results folder."""
    return Study(study_path(results, name))
