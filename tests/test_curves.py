"""mnd.book.curves (the trade-off chapter) and its two claims, on synthetic result rows with known PSNRs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import nbformat
import pytest

from mnd import book, experiments
from mnd.errors import InputError

# method -> (PSNR of image a, PSNR of image b, success a, success b); the plain anchors are eps 8/255
KNOWN: dict[str, tuple[float, float, bool, bool]] = {
    "bim@eps=1": (52.0, 48.0, True, False),
    "bim@eps=4": (41.0, 39.0, True, True),
    "bim": (35.0, 33.0, True, True),
    "bim@eps=16": (29.0, 27.0, True, True),
    "pgd": (34.0, 32.0, True, True),
    "no_norm": (56.0, 58.0, True, True),
    "l1": (57.0, 58.0, True, True),
    "mnd": (58.0, 60.0, True, True),
    "mnd@margin=2": (55.0, 53.0, True, True),
    "ddn": (66.0, 70.0, True, True),
    "fmn_linf": (80.0, 81.0, False, False),
    "alma_ssim": (40.0, 44.0, True, True),
}


def make_rows(known: dict[str, tuple[float, float, bool, bool]] | None = None,
              settings: tuple[str, ...] = ("non-targeted", "targeted")) -> list[dict[str, Any]]:
    """Result rows of two images x the methods of ``known`` on the tiny preset's ``imagenet``, every metric set."""
    rows = []
    for setting in settings:
        for method, (pa, pb, sa, sb) in (known or KNOWN).items():
            for image, psnr, success in (("a", pa, sa), ("b", pb, sb)):
                rows.append({"dataset": "imagenet", "setting": setting, "image": image, "method": method,
                             "success": success, "attacked": True, "psnr": psnr, "ssim": psnr / 100,
                             "ms_ssim": psnr / 100, "haarpsi": psnr / 100, "vif": psnr / 100, "gmsd": 1 / psnr,
                             "fsim": psnr / 100, "ciede2000": 100 / psnr, "changed_ratio": 0.5, "iterations": 10,
                             "seconds": 1.0, "margin": 0.0, "eps": math.nan})
    return rows


def test_method_names_parse_into_base_and_sweep_parameters() -> None:
    assert experiments.parse_method("bim@eps=4") == ("bim", {"eps": 4.0})
    assert experiments.parse_method("mnd@margin=0.5") == ("mnd", {"margin": 0.5})
    assert experiments.parse_method("ddn") == ("ddn", {})
    assert experiments.parse_method("x@eps=4,steps=10") == ("x", {"eps": 4.0, "steps": 10.0})
    for bad in ("bim@", "@eps=4", "bim@eps", "bim@eps=four", "bim@=4"):
        with pytest.raises(InputError, match="malformed"):
            experiments.parse_method(bad)
    assert book.point_label("bim@eps=4") == "BIM, eps 4/255" and book.point_label("mnd@margin=2") == "MND, margin 2"
    assert book.point_label("fmn_linf") == "FMN-Linf" and book.point_label("l1_ssim") == "l1-norm + SSIM"
    assert [book.in_paper(m) for m in ("bim", "mnd", "no_norm", "bim@eps=4", "mnd@margin=2", "ddn")] == [
        True, True, True, False, False, False]


def test_points_sweep_each_family() -> None:
    rows = make_rows()
    points = {p.method: p for p in book.curve_points(rows, "imagenet", "targeted")}
    assert [(p.value, p.success_rate, p.psnr_all) for p in points.values() if p.family == "bim"] == [
        (1.0, 0.5, 50.0), (4.0, 1.0, 40.0), (8.0, 1.0, 34.0), (16.0, 1.0, 28.0)]
    assert points["bim@eps=1"].psnr_success == 52.0 and points["bim@eps=1"].ssim_all == pytest.approx(0.5)
    assert (points["mnd"].knob, points["mnd"].value, points["mnd@margin=2"].value) == ("margin", 0.0, 2.0)
    assert points["ddn"].kind == "minimum norm" and points["fmn_linf"].success_rate == 0.0
    assert points["pgd"].kind == "fixed budget" and points["no_norm"].kind == "stops at success"
    # the figure: every anchor, MND and no norm, the minimum-norm attacks; not the other ablation settings
    families = book.plotted(list(points.values()))
    assert list(families) == ["pgd", "bim", "no_norm", "mnd", "ddn", "fmn_linf", "alma_ssim"]
    # bim and bim@eps=8 are one point; the plain name wins
    both = rows + [dict(r, method="bim@eps=8", psnr=0.0) for r in rows if r["method"] == "bim"]
    assert [p.method for p in book.curve_points(both, "imagenet", "targeted") if p.family == "bim"] == [
        "bim@eps=1", "bim@eps=4", "bim", "bim@eps=16"]


def test_figure_draws_one_line_per_family() -> None:
    fig = book.tradeoff_figure(make_rows(), "imagenet", "non-targeted")
    try:
        left, right = fig.axes
        for ax in (left, right):
            lines = ax.get_lines()
            assert len(lines) == 7  # pgd, bim, no_norm, mnd, ddn, fmn_linf, alma_ssim
            assert sorted(len(line.get_xdata()) for line in lines) == [1, 1, 1, 1, 1, 2, 4]
        mnd = [line for line in left.get_lines() if line.get_label() == "MND (over margin)"]
        assert len(mnd) == 1 and mnd[0].get_linewidth() == 3.0 and list(mnd[0].get_xdata()) == [59.0, 54.0]
        assert "DDN, not in the paper" in [line.get_label() for line in left.get_lines()]
        assert {t.get_text() for t in left.texts} >= {"1", "4", "8", "16", "0", "2"}
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    assert book.tradeoff_figure(make_rows(), "faces", "non-targeted") is None


def test_quality_table_has_every_metric_and_says_which_reach_full_success() -> None:
    table = {r["method"]: r for r in book.quality_rows(make_rows(), "imagenet", "targeted")}
    assert table["MND"]["full success"] and not table["BIM, eps 1/255"]["full success"]
    assert table["BIM, eps 1/255"]["success (Wilson 95%)"] == "1/2 (9–91%)" and table["DDN"]["in the paper"] is False
    assert table["MND"]["PSNR (dB) ↑"] == "59.00 ± 1.41" and table["MND"]["CIEDE2000 ↓"] == "1.70 ± 0.04"
    html = book.quality_table_html(make_rows(), "imagenet", "targeted")
    for header in ("MS-SSIM ↑", "HaarPSI ↑", "VIF ↑", "GMSD ↓", "FSIM ↑", "CIEDE2000 ↓"):
        assert header in html
    first, second, third = html.split("</table>")[:3]  # the metrics in three tables that fit the column
    assert "SSIM ↑" in first and "MS-SSIM ↑" not in first and "success" in first
    assert "MS-SSIM ↑" in second and "FSIM ↑" not in second and "success" not in second
    assert "FSIM ↑" in third and "CIEDE2000 ↓" in third and "success" not in third
    assert "n = 2 images" in first
    assert "degenerate" in first  # make_rows' SSIM is PSNR / 100: every output under 50 dB is degenerate
    old = [{k: v for k, v in r.items() if k not in ("ms_ssim", "vif")} for r in make_rows()]
    assert book.quality_rows(old, "imagenet", "targeted")[0]["VIF ↑"] == "–"  # not measured


def test_gain_table_gives_paired_differences_from_mnd() -> None:
    rows = make_rows()
    ddn = book.paired_difference(rows, "imagenet", "targeted", "ddn")
    assert (ddn.images, ddn.mean, ddn.std) == (2, 9.0, pytest.approx(math.sqrt(2)))
    only_a = book.paired_difference(rows, "imagenet", "targeted", "bim@eps=1")
    assert (only_a.images, only_a.mean) == (1, -6.0) and math.isnan(only_a.std)
    table = {r["method"]: r for r in book.gain_rows(rows, "imagenet", "targeted")}
    assert list(table) == ["PGD", "BIM", "No norm", "l1-norm", "DDN", "FMN-Linf", "ALMA-SSIM"]
    assert table["No norm"]["Δ PSNR vs MND (dB), both adversarial"] == "-2.00 ± 0.00"
    assert table["DDN"]["Δ PSNR vs MND (dB), both adversarial"] == "+9.00 ± 1.41"
    assert table["FMN-Linf"]["images"] == 0 and table["FMN-Linf"]["Δ PSNR vs MND (dB), both adversarial"] == "–"
    assert table["ALMA-SSIM"]["group"] == "minimum norm (not in the paper)"
    words = book.gain_verdict(rows, "imagenet", "targeted")
    assert "by 25.00 dB" in words and "costs 2.00 dB of that (8%)" in words
    assert "not the perceptual loss, explains most of it" in words and "DDN +9.00 dB (2 images)" in words
    assert "1 of 2 minimum-norm attacks give a higher PSNR than MND" in words
    assert "nothing to compare" in book.gain_table_html([r for r in rows if r["method"] != "mnd"], "imagenet",
                                                        "targeted")


def _verdicts(rows: list[dict[str, Any]]) -> tuple[str, str]:
    preset = experiments.load_preset("tiny")
    return (book.claim_perceptual(preset, rows).verdict, book.claim_min_norm(preset, rows).verdict)


def test_claim_c6_splits_mnds_lead() -> None:
    preset = experiments.load_preset("tiny")
    early = book.claim_perceptual(preset, make_rows())
    assert early.verdict == "not supported" and len(early.rows) == 2  # both settings of imagenet
    row = early.rows[0]
    assert (row["best fixed anchor"], row["MND's lead (dB)"], row["share of the lead"]) == ("BIM 34.00", "+25.00", "8%")
    assert "more than 50%" in early.note
    loss = dict(KNOWN, no_norm=(40.0, 40.0, True, True))  # MND − no norm = 19 dB of a 25 dB lead
    assert _verdicts(make_rows(loss))[0] == "supported"
    assert _verdicts(make_rows({k: v for k, v in KNOWN.items() if k != "no_norm"}))[0] == "no data"
    behind = dict(KNOWN, mnd=(30.0, 30.0, True, True))  # no lead at all
    assert _verdicts(make_rows(behind))[0] == "not supported"


def _six(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each image three times (six images), with an acceptable SSIM, so that a paired test can decide."""
    return [{**r, "image": f"{r['image']}{k}", "ssim": 0.95} for r in rows for k in range(3)]


def test_claim_c7_compares_mnd_with_each_minimum_norm_attack() -> None:
    preset = experiments.load_preset("tiny")
    both = book.claim_min_norm(preset, _six(make_rows()))
    assert both.verdict.startswith("partly supported")  # above ALMA, below DDN
    shown = {(r["versus"], r["table"]): r for r in both.rows}
    ddn = shown[("DDN", "imagenet, targeted (Table II)")]
    assert ddn["holds"] == "does not hold" and ddn["MND − it, PSNR per image (dB)"].startswith("-")
    assert shown[("ALMA-SSIM", "imagenet, targeted (Table II)")]["holds"] == "holds"
    fmn = shown[("FMN-Linf", "imagenet, targeted (Table II)")]
    assert fmn["images both made adversarial"] == 0 and fmn["holds"] == "inconclusive"  # no common success
    assert book.claim_min_norm(preset, make_rows()).verdict == "inconclusive"  # two images decide nothing
    without_ddn = {k: v for k, v in KNOWN.items() if k != "ddn"}
    assert _verdicts(_six(make_rows(without_ddn)))[1].startswith("supported")
    assert _verdicts(_six(make_rows({k: v for k, v in KNOWN.items() if k != "alma_ssim"})))[1].startswith("not supported")
    plain = {k: v for k, v in KNOWN.items() if k not in book.MIN_NORM}
    assert _verdicts(make_rows(plain))[1] == "no data"


def test_new_methods_leave_the_papers_claims_alone() -> None:
    preset = experiments.load_preset("tiny")
    paper_only = {k: v for k, v in KNOWN.items() if book.in_paper(k)}
    before = book.claims(preset, make_rows(paper_only))
    after = book.claims(preset, make_rows())
    assert len(after) == 9 and [c.title for c in after[6:]] == [
        "The perceptual loss, not early stopping, explains MND's lead over the anchors",
        "MND gives higher quality than minimum-norm attacks at equal success",
        "MND images fool a model they were not made on"]
    assert [(c.verdict, c.rows) for c in before[:6]] == [(c.verdict, c.rows) for c in after[:6]]


def test_missing_methods_are_named() -> None:
    rows = make_rows()
    missing = book.missing_methods(rows)
    assert "bim@eps=2" in missing and "pgd@eps=1" in missing and "mnd@margin=1" in missing
    assert not {"bim", "bim@eps=4", "mnd", "mnd@margin=2", "ddn", "no_norm"} & set(missing)
    assert book.missing_methods([dict(r, method="bim@eps=8") for r in rows if r["method"] == "bim"]).count("bim") == 0
    assert book.missing_text(["bim@eps=1", "bim@eps=2", "mnd@margin=4", "ddn", "cw_l2"]) == (
        "BIM at eps 1, 2 (/255); MND at margin 4; DDN, CW-L2")


def _write_results(folder: Path, rows: list[dict[str, Any]]) -> None:
    """A fake grid results folder: results.csv (with the new metric columns) and run.json (faces skipped)."""
    folder.mkdir(parents=True)
    extra = ["ms_ssim", "haarpsi", "vif", "gmsd", "fsim", "ciede2000", "margin", "eps"]
    columns = list(experiments.GRID_COLUMNS) + [c for c in extra if c not in experiments.GRID_COLUMNS]
    with (folder / experiments.RESULTS_CSV).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**{c: "" for c in columns}, **r, "model": "m", "targeted": r["setting"] == "targeted",
                             "eps": "", "seed": 0, "task": "imagenet", "max_iter": 25})
    run = {"datasets": {"imagenet": {"status": "ok"}, "faces": {"status": "skipped", "reason": "no face model here"}}}
    (folder / experiments.RUN_JSON).write_text(json.dumps(run))


@pytest.mark.slow  # a kernel start and the mnd import: about half a minute on two cores
def test_the_page_executes_on_a_small_results_folder(tmp_path: Path) -> None:
    pytest.importorskip("papermill")
    preset = experiments.load_preset("tiny")
    results = tmp_path / "results"
    _write_results(results, make_rows())
    ctx = book.setup("tiny", results)
    assert book.sweep_sections(ctx) == [("imagenet", "non-targeted"), ("imagenet", "targeted")]
    (path,) = book.execute_notebooks(preset, results, tmp_path / "source", names=["08_tradeoff"],
                                     log=lambda line: None)
    nb = nbformat.read(path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type in ("error", "stream")]
    text = "\n".join(str(o.get("data", {}).get("text/markdown", "")) + str(o.get("data", {}).get("text/html", ""))
                     for o in outputs)
    assert "Data set `faces` was not run: no face model here" in text
    assert "PGD at eps 1, 2, 4, 16 (/255)" in text and "MND at margin 1, 4, 8" in text
    assert "MS-SSIM ↑" in text and "FMN-Linf" in text and "by 25.00 dB" in text
    # the teaching figure and the trade-off figure of each setting (no strip: the folder has no clean copies)
    assert sum(1 for o in outputs if "image/png" in o.get("data", {})) == 4
    assert sorted(p.name for p in (results / "figures").glob("tradeoff_*.png")) == [
        "tradeoff_imagenet_non-targeted.png", "tradeoff_imagenet_targeted.png"]


def test_the_robustness_table_counts_successes_that_survive() -> None:
    rows = [
        {"dataset": "d", "setting": "s", "method": "mnd", "image": "a", "attacked": True, "success": True,
         "jpeg95": True, "jpeg85": True, "jpeg75": False, "resize50": False},
        {"dataset": "d", "setting": "s", "method": "mnd", "image": "b", "attacked": True, "success": False,
         "jpeg95": False, "jpeg85": False, "jpeg75": False, "resize50": False},
        {"dataset": "d", "setting": "s", "method": "bim", "image": "a", "attacked": True, "success": True},
    ]
    table = {r["method"]: r for r in book.robustness_rows(rows, "d", "s")}
    assert table["MND"]["adversarial (saved PNG)"] == "1/2"
    assert [table["MND"][f"after {t}"] for t in ("JPEG 95", "JPEG 85", "JPEG 75", "resize 0.5x")] == [
        "1/2", "1/2", "0/2", "0/2"]
    assert table["BIM"]["after JPEG 75"] == "–"  # a run from before the columns existed
    assert "still adversarial" in book.robustness_table_html(rows, "d", "s")


def test_methods_that_could_not_run_are_named_with_why() -> None:
    rows = make_rows()
    for r in rows:
        if r["method"] == "alma_ssim" and r["setting"] == "targeted":
            r.update(success=False, psnr=math.nan, note="failed: InputError: alma_ssim: needs 4 classes")
    assert book.failed_methods(rows) == {("imagenet", "targeted", "alma_ssim"): "InputError: alma_ssim: needs 4 classes"}
    rows[0]["note"] = "failed: one image only"  # a method with one failed image among successes did run
    assert ("imagenet", "non-targeted", rows[0]["method"]) not in book.failed_methods(rows)


def test_mnd_refine_is_drawn_in_its_own_style() -> None:
    rows = make_rows({**KNOWN, "mnd_refine": (65.0, 66.0, True, True)}, settings=("non-targeted",))
    fig = book.tradeoff_figure(rows, "imagenet", "non-targeted")
    labels = {line.get_label(): line for line in fig.axes[0].get_lines()}
    ours, no_norm = labels["MND + refinement (ours)"], labels["No norm"]
    assert (ours.get_marker(), ours.get_color()) != (no_norm.get_marker(), no_norm.get_color())
    assert "mnd_refine" in book.expected_methods(rows) and "mnd_refine" not in book.missing_methods(rows)
