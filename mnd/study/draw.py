"""Drawing a rating study from a grid's results (section IV-B-5's choice of images and pairs).

A study is drawn once from a grid results folder (:mod:`mnd.experiments.grid`)
for one data set and one setting. As the paper does, every pair shows the MND
image and one anchor's image of the same photo side by side, on TABLE V's
scale (:data:`mnd.study.protocol.SCALE`); only images that both methods
attacked successfully are used. Hidden *control* pairs show the clean image
next to itself: their honest score is 0. The images are copied into the
study file (:mod:`mnd.study.store`), so a study does not change when the
results folder does.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mnd import experiments
from mnd.core.anchors import MOS_ORDER
from mnd.errors import InputError
from mnd.study import protocol
from mnd.study.store import _SCHEMA, CONTROL, MND, SCHEMA_VERSION, Study, StudyArgs, study_path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_CONTROLS = 1000
"""The most control pairs a study may have (each rater rates every one)."""

RESULT_COLUMNS = ("dataset", "setting", "image", "method", "success")
"""The columns of the grid's ``results.csv`` a study is drawn from."""



def _succeeded(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> dict[str, set[str]]:
    """Image -> the methods that attacked it successfully in this data set and setting."""
    out: dict[str, set[str]] = {}
    for r in rows:
        if r["dataset"] == dataset and r["setting"] == setting and r.get("success") in (True, "True"):
            out.setdefault(str(r["image"]), set()).add(str(r["method"]))
    return out


def _draw(results: Path, args: StudyArgs) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """(images S1.., (image, anchor) pairs, control images) for a study; refuses a study with no pair."""
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
    images = protocol.choose_images(candidates, args.dataset, args.images, settings=[args.setting], anchors=compared,
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
    image_ids = {img: f"{protocol.IMAGE_PREFIX}{k}" for k, img in enumerate(images, start=1)}
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
