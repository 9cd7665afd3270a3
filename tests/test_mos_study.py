"""The subjective test's study file: drawing pairs, validating ratings, the sign flip, control pairs, the tables."""

from __future__ import annotations

import contextlib
import csv
import math
import socketserver
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mnd import book, experiments
from mnd import study as mos_study
from mnd.study import RatingRejected
from mnd.cli.main import main as mnd_main
from mnd.errors import InputError

DATASET, SETTING = "toy", "targeted"
SUCCESS = {  # image -> method -> attack succeeded (targeted setting)
    "a": {"mnd": True, "bim": True, "pgd": True},
    "b": {"mnd": True, "bim": True, "pgd": True},
    "c": {"mnd": True, "bim": True, "pgd": False},  # no c-vs-pgd pair
    "d": {"mnd": False, "bim": True, "pgd": True},  # MND failed: no pair at all
}
PAIRS = {("a", "bim"), ("a", "pgd"), ("b", "bim"), ("b", "pgd"), ("c", "bim")}

# What each rater means, as "MND versus the anchor" (the test answers with the sign the side needs).
INTENDED = {
    "ann": {("a", "bim"): 3, ("a", "pgd"): 2, ("b", "bim"): 1, ("b", "pgd"): 0, ("c", "bim"): 2},
    "bob": {("a", "bim"): 1, ("a", "pgd"): 2, ("b", "bim"): -1, ("b", "pgd"): 2, ("c", "bim"): 2},
}
CONTROL_ANSWERS = {"ann": 0, "bob": 1}  # mean |score| 0 and 1: both kept (the limit is "above 1")
EXPECTED = {  # per image and anchor: mean and sample std over ann and bob, by hand
    ("a", "bim"): (2.0, math.sqrt(2)), ("a", "pgd"): (2.0, 0.0), ("b", "bim"): (0.0, math.sqrt(2)),
    ("b", "pgd"): (1.0, math.sqrt(2)), ("c", "bim"): (2.0, 0.0),
}
EXPECTED_AVERAGE = {"bim": (2.0 + 0.0 + 2.0) / 3, "pgd": (2.0 + 1.0) / 2}


def colour(image: str, method: str) -> tuple[int, int, int]:
    """A distinct flat colour per image and method, so a test can tell any two shown images apart."""
    images, methods = "abcd", ["clean", "mnd", "bim", "pgd"]
    return (40 + 50 * images.index(image), 30 + 60 * methods.index(method), 90)


def make_results(folder: Path) -> Path:
    """A grid results folder in miniature: results.csv plus 48x48 PNGs (no model involved)."""
    rows = []
    for image, methods in SUCCESS.items():
        clean = experiments.clean_path(folder, DATASET, image)
        clean.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (48, 48), colour(image, "clean")).save(clean)
        for method, ok in methods.items():
            path = experiments.png_path(folder, DATASET, SETTING, method, image)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (48, 48), colour(image, method)).save(path)
            rows.append({"dataset": DATASET, "setting": SETTING, "image": image, "method": method,
                         "success": ok, "targeted": True})
    rows.append({"dataset": DATASET, "setting": "non-targeted", "image": "a", "method": "mnd", "success": True})
    with (folder / experiments.RESULTS_CSV).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=experiments.GRID_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return folder


def content_of(png: bytes, folder: Path) -> tuple[str, str]:
    """(image, method) of a shown PNG, found by comparing with the fixture's files."""
    for image, methods in SUCCESS.items():
        if png == experiments.clean_path(folder, DATASET, image).read_bytes():
            return image, "clean"
        for method in methods:
            if png == experiments.png_path(folder, DATASET, SETTING, method, image).read_bytes():
                return image, method
    raise AssertionError("an image that is not in the study's results folder")


def raw_score(intended: int, left: tuple[str, str]) -> int:
    """What a rater presses to say ``intended`` about MND, given what is on the left."""
    return intended if left[1] == "mnd" else -intended


def count_ratings(study: mos_study.Study) -> int:
    return len(study.ratings())


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return make_results(tmp_path / "results")


@pytest.fixture
def study(results: Path) -> mos_study.Study:
    return mos_study.create_study(results, "s1", DATASET, SETTING, seed=3, controls=2)


def rate_all(study: mos_study.Study, results: Path, name: str, intended: dict, control: int) -> list[str]:
    """Rate every pair of ``name`` as the browser would; returns the sides MND was shown on."""
    rater = study.add_rater(name)
    sides = []
    while (shown := study.next_pair(rater)) is not None:
        left = content_of(study.image(rater, shown.pair_id, "left"), results)
        right = content_of(study.image(rater, shown.pair_id, "right"), results)
        if left[1] == "clean":
            assert right == left
            study.record(rater, shown.pair_id, control)
            continue
        sides.append("left" if left[1] == "mnd" else "right")
        versus = right[1] if left[1] == "mnd" else left[1]
        study.record(rater, shown.pair_id, raw_score(intended[(left[0], versus)], left))
    return sides


def test_pairs_are_mnd_against_each_successful_anchor_plus_hidden_controls(study: mos_study.Study) -> None:
    pairs = study.pairs()
    real = {(p["image"], p["right_method"]) for p in pairs if not p["is_control"]}
    assert real == PAIRS
    assert all(p["left_method"] == "mnd" for p in pairs if not p["is_control"])
    controls = [p for p in pairs if p["is_control"]]
    assert len(controls) == 2 and all(p["left_content"] == p["right_content"] for p in controls)
    assert all(p["left_method"] == p["right_method"] == "clean" for p in controls)
    assert sorted({p["image_id"] for p in pairs}) == ["S1", "S2", "S3"]
    assert sorted(p["pair_id"] for p in pairs) == [f"P{k:03d}" for k in range(1, 8)]
    with sqlite3.connect(study.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_create_again_reuses_and_other_arguments_are_refused(results: Path, study: mos_study.Study) -> None:
    rater = study.add_rater("ann")
    study.record(rater, study.next_pair(rater).pair_id, 1)
    again = mos_study.create_study(results, "s1", DATASET, SETTING, seed=3, controls=2)
    assert again.pairs() == study.pairs() and count_ratings(again) == 1
    before = study.path.read_bytes()
    with pytest.raises(InputError, match="exists, drawn with"):
        mos_study.create_study(results, "s1", DATASET, SETTING, seed=4, controls=2)
    assert study.path.read_bytes() == before
    with pytest.raises(InputError, match="no pair to rate"):
        mos_study.create_study(results, "s2", DATASET, "non-targeted")
    with pytest.raises(InputError, match="no rows"):
        mos_study.create_study(results, "s3", "nope", SETTING)
    with pytest.raises(InputError, match="not a study name"):
        mos_study.create_study(results, "../x", DATASET, SETTING)
    assert sorted(p.name for p in (results / "mos").iterdir() if p.suffix == ".sqlite") == ["s1.sqlite"]


def test_images_are_copied_in_and_served_by_pair_and_side(results: Path, study: mos_study.Study) -> None:
    rater = study.add_rater("ann")
    shown = study.next_pair(rater)
    left, right = (content_of(study.image(rater, shown.pair_id, s), results) for s in ("left", "right"))
    assert left[0] == right[0]
    with pytest.raises(RatingRejected) as exc:
        study.image(rater, "P999", "left")
    assert exc.value.status == 404


@pytest.mark.parametrize("score", [4, -4, 2.0, True, "2", None])
def test_a_score_outside_table_v_is_refused_and_writes_nothing(study: mos_study.Study, score: object) -> None:
    rater = study.add_rater("ann")
    with pytest.raises(RatingRejected) as exc:
        study.record(rater, study.next_pair(rater).pair_id, score)
    assert exc.value.status == 400 and count_ratings(study) == 0


def test_unknown_rater_unknown_pair_and_repeated_answer_are_refused(study: mos_study.Study) -> None:
    rater = study.add_rater("ann")
    pair = study.next_pair(rater).pair_id
    study.record(rater, pair, -2)
    for who, which, status in ((rater + 99, pair, 401), (rater, "P999", 404), (rater, pair, 409)):
        with pytest.raises(RatingRejected) as exc:
            study.record(who, which, 1)
        assert exc.value.status == status
    assert [(r["rater"], r["pair_id"], r["score"]) for r in study.ratings()] == [("ann", pair, -2)]
    with pytest.raises(RatingRejected):
        study.add_rater("  ")


def test_a_rater_resumes_by_name_with_the_same_order(study: mos_study.Study) -> None:
    rater, _ = study.login("ann")
    first = study.next_pair(rater)
    study.record(rater, first.pair_id, 0)
    second = study.next_pair(rater)
    again, _ = study.login(" ann ")
    assert again == rater
    assert study.next_pair(again) == second
    assert (second.answered, second.total, second.position) == (1, 7, 2)


def test_each_rater_has_a_recorded_order_and_sides(study: mos_study.Study) -> None:
    names = ["ann", "bob", "cyd"]
    ids = [study.add_rater(n) for n in names]
    with sqlite3.connect(study.path) as db:
        drawn = [db.execute("SELECT pair_id, swapped FROM assignments WHERE rater_id = ? ORDER BY position",
                            (r,)).fetchall() for r in ids]
    assert all(sorted(p for p, _ in d) == [f"P{k:03d}" for k in range(1, 8)] for d in drawn)
    assert len({tuple(d) for d in drawn}) == 3
    assert study.next_pair(ids[0]).pair_id == drawn[0][0][0]


def test_tables_flip_the_sign_and_leave_out_raters_who_fail_controls(
    results: Path, study: mos_study.Study, tmp_path: Path
) -> None:
    sides = {name: rate_all(study, results, name, INTENDED[name], CONTROL_ANSWERS[name]) for name in INTENDED}
    assert "right" in sides["ann"] + sides["bob"]  # the flip is exercised
    careless = study.add_rater("cyd")  # always "left image is much better", controls included
    while (shown := study.next_pair(careless)) is not None:
        study.record(careless, shown.pair_id, 3)
    report = mos_study.write_tables(study, tmp_path / "t.csv")
    assert report.excluded == ["cyd"] and report.raters == ["ann", "bob"] and report.ratings == 10
    assert "1 raters left out" in report.summary()
    rows = {(r["image"], r["versus"]): r for r in report.rows if r["image_id"] != "Average"}
    assert set(rows) == PAIRS
    for key, (mean, std) in EXPECTED.items():
        assert rows[key]["mean"] == pytest.approx(mean) and rows[key]["std"] == pytest.approx(std)
        assert rows[key]["n"] == 2
    average = {r["versus"]: r["mean"] for r in report.rows if r["image_id"] == "Average"}
    assert average == pytest.approx(EXPECTED_AVERAGE)
    with (tmp_path / "t.csv").open() as handle:
        written = list(csv.DictReader(handle))
    assert list(written[0]) == mos_study.TABLE_COLUMNS and len(written) == len(report.rows)


def test_export_has_every_rating_with_its_sides(results: Path, study: mos_study.Study, tmp_path: Path) -> None:
    rate_all(study, results, "ann", INTENDED["ann"], 0)
    assert mos_study.export_ratings(study, tmp_path / "raw.csv") == 7
    with (tmp_path / "raw.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == mos_study.EXPORT_COLUMNS
    real = [r for r in rows if r["is_control"] == "0"]
    assert {(r["image"], r["versus"]): int(r["mnd_score"]) for r in real} == INTENDED["ann"]
    assert all((r["left"] == "mnd") == (r["mnd_side"] == "left") for r in real)
    assert all(r["shown_at"] <= r["answered_at"] and r["answered_at"].endswith("Z") for r in rows)
    with pytest.raises(InputError, match="overwrite an input"):
        mos_study.export_ratings(study, study.path)
    with pytest.raises(InputError, match="overwrite an input"):
        mos_study.export_ratings(study, results / experiments.RESULTS_CSV)


def test_concurrent_raters_lose_nothing(study: mos_study.Study) -> None:
    raters = [study.add_rater(f"r{k}") for k in range(4)]
    errors: list[BaseException] = []

    def work(rater: int) -> None:
        try:
            while (shown := study.next_pair(rater)) is not None:
                study.record(rater, shown.pair_id, 1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in raters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and count_ratings(study) == 4 * 7


def test_cli_tables_and_export(results: Path, study: mos_study.Study, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    for name in INTENDED:
        rate_all(study, results, name, INTENDED[name], CONTROL_ANSWERS[name])
    assert mnd_main(["mos", "tables", str(results), "--study", "s1"]) == 0
    out = results / "mos" / "s1_tables.csv"
    assert str(out) in capsys.readouterr().out
    with out.open() as handle:
        rows = {(r["image"], r["versus"]): float(r["mean"]) for r in csv.DictReader(handle) if r["image"]}
    assert rows == pytest.approx({k: v[0] for k, v in EXPECTED.items()})
    assert mnd_main(["mos", "export", str(results), "--study", "s1", "--out", str(tmp_path / "r.csv")]) == 0
    assert mnd_main(["mos", "tables", str(results), "--study", "nope"]) == 2
    assert mnd_main(["mos", "tables", str(results), "--study", "a/b"]) == 2
    assert mnd_main(["mos", "tables", str(tmp_path), "--study", "s1"]) == 2
    assert "mnd: error:" in capsys.readouterr().err


def test_the_book_shows_a_study_and_checks_the_mos_claim_from_it(results: Path, study: mos_study.Study) -> None:
    before = book.claim_mos(results)
    assert not before.rows and "not checked" in before.note
    assert "No browser study" not in book.study_tables_html(results)[0]  # the study exists, but has no ratings
    for name in INTENDED:
        rate_all(study, results, name, INTENDED[name], CONTROL_ANSWERS[name])
    tables = book.study_tables_html(results)
    assert len(tables) == 1 and "study s1" in tables[0] and "2 raters" in tables[0]
    claim = book.claim_mos(results)
    averages = {r["versus"]: r["average MOS"] for r in claim.rows}
    assert averages == {"BIM": f"{EXPECTED_AVERAGE['bim']:.2f}", "PGD": f"{EXPECTED_AVERAGE['pgd']:.2f}"}
    assert claim.checks == [True, True] and all(r["ratings"].startswith("study s1") for r in claim.rows)


def test_the_book_says_when_there_is_no_study(tmp_path: Path) -> None:
    assert "No browser study" in book.study_tables_html(tmp_path)[0]


# --- hostile input: formulas in the CSVs, bad options, damaged study files -------------------------------------


FORMULAS = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)"]


def test_export_neutralises_formulas_but_keeps_numbers(results: Path, study: mos_study.Study, tmp_path: Path) -> None:
    for name in [*FORMULAS, "-1.5", "ann"]:
        rater = study.add_rater(name)
        while (shown := study.next_pair(rater)) is not None:
            study.record(rater, shown.pair_id, -1)
    out = tmp_path / "raw.csv"
    assert mnd_main(["mos", "export", str(results), "--study", "s1", "--out", str(out)]) == 0
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["rater"] for r in rows} == {"'" + f for f in FORMULAS} | {"-1.5", "ann"}
    assert {r["score"] for r in rows} == {"-1"}  # numbers stay numbers
    assert {r["mnd_score"] for r in rows} == {"-1", "1", ""}
    assert not any(cell.startswith(("=", "+", "@")) for r in rows for cell in r.values())


def test_tables_neutralise_text_but_keep_negative_means(results: Path, study: mos_study.Study, tmp_path: Path) -> None:
    with sqlite3.connect(study.path) as db:  # an image whose file name reads as a formula
        db.execute("UPDATE pairs SET image = '=1+2' WHERE image = 'a'")
    rater = study.add_rater("=cmd|' /C calc'!A0")
    while (shown := study.next_pair(rater)) is not None:
        is_control = shown.left_content == shown.right_content
        mnd_left = study.pairs()[int(shown.pair_id[1:]) - 1]["left_content"] == shown.left_content
        study.record(rater, shown.pair_id, 0 if is_control else (-2 if mnd_left else 2))
    out = tmp_path / "tables.csv"
    assert mnd_main(["mos", "tables", str(results), "--study", "s1", "--out", str(out)]) == 0
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["image"] for r in rows} == {"'=1+2", "b", "c", ""}
    assert {r["mean"] for r in rows} == {"-2.0"}  # MND judged worse everywhere: a number, not text


@pytest.mark.parametrize("limit", ["nan", "inf", "-inf", "-1", "-0.5", "1e400"])
def test_control_limit_must_be_a_finite_number_at_least_0(results: Path, study: mos_study.Study, limit: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    rate_all(study, results, "ann", INTENDED["ann"], 0)
    out = results / "mos" / "s1_tables.csv"
    assert mnd_main(["mos", "tables", str(results), "--study", "s1", f"--control-limit={limit}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mnd: error: --control-limit: must be a finite number >= 0") and err.count("\n") == 1
    assert not out.exists()
    assert mnd_main(["mos", "tables", str(results), "--study", "s1", "--control-limit", "0"]) == 0
    with pytest.raises(InputError, match="control_limit"):
        mos_study.mos_rows(study.ratings(), control_limit=float(limit))


@pytest.mark.parametrize("command", ["export", "tables"])
def test_an_output_that_is_a_folder_or_under_a_file_is_named_in_the_error(
    results: Path, study: mos_study.Study, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    rate_all(study, results, "ann", INTENDED["ann"], 0)
    folder = tmp_path / "FOLDER"
    folder.mkdir()
    assert mnd_main(["mos", command, str(results), "--study", "s1", "--out", str(folder)]) == 2
    assert capsys.readouterr().err == f"mnd: error: {folder}: is a folder, expected a CSV file path\n"
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["FOLDER", "results"]
    plain = tmp_path / "notes.txt"
    plain.write_text("mine\n")
    assert mnd_main(["mos", command, str(results), "--study", "s1", "--out", str(plain / "x.csv")]) == 2
    assert capsys.readouterr().err == f"mnd: error: {plain / 'x.csv'}: {plain} is a file, not a folder\n"
    assert plain.read_text() == "mine\n"


def _zero_a_page(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2 // 4096 * 4096
    data[middle:middle + 4096] = bytes(4096)
    path.write_bytes(bytes(data))


def _sql(statement: str) -> Any:
    def damage(path: Path) -> None:
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute(statement)
            db.commit()
    return damage


DAMAGE = {
    "a zeroed page": (_zero_a_page, "the study file is damaged"),
    "no sessions table": (_sql("DROP TABLE sessions"), "not a study file of this version of mnd (no table sessions)"),
    "no ratings table": (_sql("DROP TABLE ratings"), "not a study file of this version of mnd (no table ratings)"),
    "a column missing": (_sql("ALTER TABLE assignments DROP COLUMN shown_at"), "table assignments lacks shown_at"),
    "unreadable settings": (_sql("UPDATE study SET args = 'nope'"), "its settings are unreadable"),
    "settings of another shape": (_sql("""UPDATE study SET args = '{"a": 1}'"""), "its settings are unreadable"),
    "garbage": (lambda p: p.write_bytes(b"garbage" * 1000), "file is not a database"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:8192]), "malformed"),
    "a folder": (lambda p: (p.unlink(), p.mkdir()), "is a folder, not a study file"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_serve_refuses_a_damaged_study_before_listening(results: Path, study: mos_study.Study, damage: str,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    rate_all(study, results, "ann", INTENDED["ann"], 0)
    spoil, problem = DAMAGE[damage]
    spoil(study.path)

    def listening(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server started on a damaged study")

    monkeypatch.setattr(socketserver.BaseServer, "serve_forever", listening)
    assert mnd_main(["mos", "serve", str(results), "--study", "s1", "--port", "0"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"mnd: error: {study.path}: ") and captured.err.count("\n") == 1
    assert problem in captured.err
    for command in ("tables", "export"):  # the other commands say the same
        assert mnd_main(["mos", command, str(results), "--study", "s1"]) == 2
        assert capsys.readouterr().err == captured.err


def test_a_results_table_that_cannot_be_read_is_one_error(results: Path) -> None:
    table = results / experiments.RESULTS_CSV
    header, *lines = table.read_text().splitlines()
    column = header.split(",").index("iterations")
    cells = lines[0].split(",")
    cells[column] = "many"
    table.write_text("\n".join([header, ",".join(cells), *lines[1:]]) + "\n")
    with pytest.raises(InputError, match="cannot read the results"):
        mos_study.create_study(results, "s1", DATASET, SETTING)
    table.write_text("photo,model\nx,y\n")
    with pytest.raises(InputError, match="not a grid results table: no column dataset, setting, image, method"):
        mos_study.create_study(results, "s1", DATASET, SETTING)
    assert not (results / "mos" / "s1.sqlite").exists()


def test_anchors_given_twice_and_too_many_controls_are_refused(results: Path) -> None:
    with pytest.raises(InputError, match="'bim' is given twice"):
        mos_study.create_study(results, "s1", DATASET, SETTING, anchors=["bim", "pgd", "bim"])
    with pytest.raises(InputError, match="more than 1000 control pairs"):
        mos_study.create_study(results, "s1", DATASET, SETTING, controls=10**9)
    assert not (results / "mos" / "s1.sqlite").exists()
