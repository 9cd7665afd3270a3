"""The verdict page: the paper's claims checked against the results, and the paper's own inconsistencies.

>>> verdict([True, True]), verdict([True, False]), verdict([])
('supported', 'partly supported', 'no data')
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnd import experiments
from mnd.experiments import stats
from mnd import study
from mnd.book import curves, transfer
from mnd.book.inconsistencies import ANCHOR_LABELS, TEXT_QUOTES, Inconsistency, paper_inconsistencies
from mnd.book.pages import label, split_methods
from mnd.book.tables import fmt, markdown_table, setup_text, signed
from mnd.core import anchors
from mnd.core.anchors import LABELS
from mnd.data.paths import paper_dir, project_root


def verdict(checks: Sequence[Any]) -> str:
    """:func:`mnd.experiments.stats.verdict`: ``supported``, ``partly supported``, ``not supported``, ``inconclusive``
    (with the number of undecided checks) or ``no data``."""
    return stats.verdict(checks)


TIES: dict[str, float] = {"psnr": 0.005, "ssim": 0.00005, "changed_ratio": 0.00005}
"""Per-image differences within these are ties: equal at the precision the tables print."""


def paired(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str, method: str, reference: str,
           metric: str = "psnr", *, higher_is_better: bool = True) -> stats.Paired:
    """``method`` against ``reference`` on ``metric``, per image, over the images both made adversarial with an
    acceptable output (:func:`mnd.experiments.stats.usable`: a degenerate one is a failure)."""
    def values(name: str) -> dict[str, float]:
        return {str(r["image"]): float(r[metric]) for r in rows if (r.get("dataset"), r.get("setting"),
                r.get("method")) == (dataset, setting, name) and stats.usable(r)}

    a, b = values(method), values(reference)
    common = sorted(a.keys() & b.keys())
    return stats.compare([a[i] for i in common], [b[i] for i in common], higher_is_better=higher_is_better,
                         tie=TIES.get(metric, 0.0))


def both(first: stats.Paired, second: stats.Paired) -> stats.Outcome:
    """Two paired checks that must both hold: ``does not hold`` when either is decided against, ``holds`` when
    both hold, else ``inconclusive``."""
    if "does not hold" in (first.outcome, second.outcome):
        return "does not hold"
    return "holds" if first.outcome == second.outcome == "holds" else "inconclusive"


PAIRED_NOTE = (f"Per-image differences (median [interquartile range], images going each way ↑ ↓ and tied =, "
               f"two-sided sign test p) over the images both made adversarial with an acceptable output: one "
               f"below {stats.DEGENERATE_PSNR:g} dB PSNR or {stats.DEGENERATE_SSIM:g} SSIM counts as a failure. "
               f"A comparison holds (or does not) only when p < {stats.ALPHA:g} on at least {stats.MIN_PAIRS} "
               "pairs; otherwise it is inconclusive.")
"""How every paired column of the verdict page reads."""


@dataclass
class Claim:
    """One claim of the paper, checked against a run.

    Attributes:
        title: the claim, short.
        paper: where and how the paper states it.
        verdict: from :func:`verdict` over ``checks``.
        rows: the evidence, one row per table (or pair compared).
        columns: which keys of ``rows`` to show.
        checks: one per row that decides the verdict: a bool, a paired outcome
            (:data:`mnd.experiments.stats.Outcome`) or None (undecided).
        note: caveats.
    """

    title: str
    paper: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    checks: list[Any] = field(default_factory=list)
    note: str = ""

    @property
    def verdict(self) -> str:
        return verdict(self.checks)


def _index(summary: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    return {(s["dataset"], s["setting"], s["method"]): s for s in summary}


def _paper_index() -> dict[tuple[str, str], dict[str, float]]:
    return experiments.paper_psnr_ssim()


def _where(spec: experiments.DatasetSpec, setting: str) -> str:
    table = spec.paper_table(setting)
    return f"{spec.name}, {setting}" + (f" (Table {table})" if table else "")


def _ok(entry: Mapping[str, Any] | None) -> bool:
    """At least one successful attack."""
    return entry is not None and entry["succeeded"] > 0


def _measured(entry: Mapping[str, Any] | None) -> bool:
    """At least one attacked image with measured metrics (so the all-attacked means exist)."""
    return entry is not None and entry.get("measured", 0) > 0


def _higher(a: float, b: float) -> bool:
    """``a > b`` for two finite means (an infinite mean, from an unchanged image, decides nothing)."""
    return math.isfinite(a) and math.isfinite(b) and a > b


ALL_MEANS_NOTE = ("PSNR, SSIM, changed-pixel ratios and iterations here are means over all attacked images, "
                  "successful or not (a failed attack counts with its final image and its iteration cap), as the "
                  "paper's tables average over all their tested images; the pages of Tables I, II, VI and VII also "
                  "show the means over the successful attacks only.")
"""What every claim built on :func:`mnd.experiments.summary.summarize` averages over."""


def claim_best(preset: experiments.Preset, summary: Sequence[Mapping[str, Any]],
               rows: Sequence[Mapping[str, Any]] = ()) -> Claim:
    """"MND has the best PSNR and SSIM of all methods", per table, on the means over all attacked images."""
    idx = _index(summary)
    claim = Claim(
        "MND gives the best PSNR and the best SSIM of all methods",
        "Sections IV-B-3 and IV-C-3: in each of Tables I, II, VI and VII, MND has the highest mean PSNR and SSIM "
        "of the four anchors and the six other ablation settings.",
        columns=["table", "MND PSNR / SSIM (all attacked)", "best other PSNR; SSIM (all attacked)",
                 "MND − best other PSNR, per image (dB)", "MND − best other SSIM, per image",
                 "MND success (Wilson 95%)", "holds"],
        note=ALL_MEANS_NOTE + " Only the paper's methods (no sweep point, no minimum-norm attack: those are "
             "the trade-off chapter's) that made at least one image adversarial are compared. A table "
             "is compared with the method of the best mean PSNR and the one of the best mean SSIM, image by image. "
             + PAIRED_NOTE + " It holds when both paired differences favour MND.",
    )
    for spec in preset.datasets:
        for setting in preset.settings:
            mnd = idx.get((spec.name, setting, "mnd"))
            others = [s for (d, st, m), s in idx.items()
                      if d == spec.name and st == setting and m != "mnd" and curves.in_paper(m) and _ok(s)
                      and _measured(s)]
            if not _measured(mnd) or not others:
                continue
            best_psnr = max(others, key=lambda s: s["psnr_all_mean"])
            best_ssim = max(others, key=lambda s: s["ssim_all_mean"])
            dp = paired(rows, spec.name, setting, "mnd", best_psnr["method"], "psnr")
            ds = paired(rows, spec.name, setting, "mnd", best_ssim["method"], "ssim")
            holds = both(dp, ds)
            claim.rows.append({
                "table": _where(spec, setting),
                "MND PSNR (all attacked)": fmt(mnd["psnr_all_mean"], 2),  # type: ignore[index]
                "best other PSNR (all attacked)": f"{best_psnr['label']} {fmt(best_psnr['psnr_all_mean'], 2)}",
                "MND PSNR / SSIM (all attacked)": f"{fmt(mnd['psnr_all_mean'], 2)} / {fmt(mnd['ssim_all_mean'], 4)}",  # type: ignore[index]
                "best other PSNR; SSIM (all attacked)": f"{best_psnr['label']} {fmt(best_psnr['psnr_all_mean'], 2)}; "
                                                        f"{best_ssim['label']} {fmt(best_ssim['ssim_all_mean'], 4)}",
                "MND − best other PSNR, per image (dB)": dp.text(2),
                "MND − best other SSIM, per image": ds.text(4),
                "MND success (Wilson 95%)": stats.rate_text(int(mnd["succeeded"]), int(mnd["attacked"])),  # type: ignore[index]
                "holds": holds,
            })
            claim.checks.append(holds)
    return claim


ABLATION_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("l1", "l2", "the l1 deviation term beats l2"),
    ("l1", "no_norm", "the l1 deviation term beats no perceptual term"),
    ("l1_ssim", "l1", "adding SSIM to l1 helps"),
    ("l2_ssim", "l2", "adding SSIM to l2 helps"),
    ("mnd", "l1_ssim", "adding the Sobel gradient term helps"),
)
"""(better, worse, what it says): the ablation ordering of section IV-B-3."""


def _kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-a of two equally long sequences (NaN for fewer than two)."""
    n = len(a)
    if n < 2:
        return math.nan
    s = 0
    for i in range(n):
        for j in range(i + 1, n):
            s += int(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]))
    return s / (n * (n - 1) / 2)


def claim_ablation(preset: experiments.Preset, summary: Sequence[Mapping[str, Any]],
                   rows: Sequence[Mapping[str, Any]] = ()) -> Claim:
    """The ablation ordering: l1 > l2, no norm; + SSIM helps; + gradient helps (PSNR and SSIM)."""
    idx = _index(summary)
    paper = _paper_index()
    variants = split_methods(preset.methods)[0]
    claim = Claim(
        "The ablation ordering: l1 beats l2 and no norm, SSIM helps, the gradient term helps",
        "Section IV-B-3 (and IV-C-3): the l1 deviation loss is more effective than l2 and no norm; adding SSIM "
        "improves PSNR and SSIM; the Sobel gradient similarity improves them further, so the full MND is best.",
        columns=["table", "comparison", "ours PSNR / SSIM (all attacked)", "per image, PSNR (dB)",
                 "per image, SSIM", "paper PSNR / SSIM", "holds"],
        note=ALL_MEANS_NOTE + " Two settings are compared when both made at least one image adversarial. A "
             "comparison holds for this run when the better setting wins both paired per-image differences; "
             "the mean columns give the differences of the means (better − worse). " + PAIRED_NOTE + " The paper's own "
             "tables are checked the same way. Kendall's tau compares the order of the seven settings by mean PSNR "
             "with the paper's order (1: same order).",
    )
    for spec in preset.datasets:
        for setting in preset.settings:
            table = spec.paper_table(setting)
            for better, worse, text in ABLATION_CHECKS:
                if better not in variants or worse not in variants:
                    continue
                a, b = idx.get((spec.name, setting, better)), idx.get((spec.name, setting, worse))
                if not (_ok(a) and _ok(b) and _measured(a) and _measured(b)):
                    continue
                dp = a["psnr_all_mean"] - b["psnr_all_mean"]  # type: ignore[index]
                ds = a["ssim_all_mean"] - b["ssim_all_mean"]  # type: ignore[index]
                pa, pb = paper.get((table or "", label(better))), paper.get((table or "", label(worse)))
                pp = paired(rows, spec.name, setting, better, worse, "psnr")
                ps = paired(rows, spec.name, setting, better, worse, "ssim")
                holds = both(pp, ps)
                claim.rows.append({
                    "per image, PSNR (dB)": pp.text(2), "per image, SSIM": ps.text(5),
                    "ours PSNR / SSIM (all attacked)": f"{signed(dp, 2)} / {signed(ds, 5)}",
                    "paper PSNR / SSIM": (f"{signed(pa['psnr_mean'] - pb['psnr_mean'], 2)} / "
                                          f"{signed(pa['ssim_mean'] - pb['ssim_mean'], 5)}") if pa and pb else "–",
                    "table": _where(spec, setting),
                    "comparison": f"{label(better)} vs {label(worse)}: {text}",
                    "ours PSNR (all attacked)": signed(dp, 2),
                    "ours SSIM (all attacked)": signed(ds, 5),
                    "paper PSNR": signed(pa["psnr_mean"] - pb["psnr_mean"], 2) if pa and pb else "–",
                    "paper SSIM": signed(pa["ssim_mean"] - pb["ssim_mean"], 5) if pa and pb else "–",
                    "holds": holds,
                })
                claim.checks.append(holds)
            ranked = [m for m in variants
                      if _ok(idx.get((spec.name, setting, m))) and _measured(idx.get((spec.name, setting, m)))
                      and paper.get((table or "", label(m)))
                      and math.isfinite(idx[(spec.name, setting, m)]["psnr_all_mean"])]
            if len(ranked) >= 2:
                ours = [idx[(spec.name, setting, m)]["psnr_all_mean"] for m in ranked]
                theirs = [paper[(table or "", label(m))]["psnr_mean"] for m in ranked]
                claim.rows.append({
                    "table": _where(spec, setting),
                    "comparison": f"order of {len(ranked)} settings by PSNR: Kendall tau {fmt(_kendall(ours, theirs), 2)}",
                    "ours PSNR (all attacked)": "", "ours SSIM (all attacked)": "", "paper PSNR": "", "paper SSIM": "",
                    "per image, PSNR (dB)": "", "per image, SSIM": "", "ours PSNR / SSIM (all attacked)": "",
                    "paper PSNR / SSIM": "",
                    "holds": "",
                })
    return claim


def claim_targeted(preset: experiments.Preset, summary: Sequence[Mapping[str, Any]]) -> Claim:
    """Non-targeted attacks are easier than targeted ones."""
    idx = _index(summary)
    claim = Claim(
        "Non-targeted attacks are easier than targeted ones",
        "Sections III-C-2 and IV-B-3: non-targeted attacks are easier; MND's PSNR and SSIM are higher "
        "non-targeted (Table I: 48.55 dB) than targeted (Table II: 46.56 dB).",
        columns=["data set", "method", "success (non-t. / t.)", "iterations, all attacked (non-t. / t.)",
                 "PSNR, all attacked (non-t. / t.)", "holds"],
        note=ALL_MEANS_NOTE + " A method is compared when it made at least one image adversarial in both settings. "
             "Holds when the non-targeted attack needs fewer iterations on average and gives the "
             "higher mean PSNR (its success rate is shown too). The paper's two settings also differ in their "
             "hyper-parameters "
             "(betas 100/100/100 non-targeted; 2/0.1/2 for ImageNet and 1/0.1/1 for faces targeted, with r = "
             "0.0625), so the comparison measures setting and hyper-parameters together, as the paper's does.",
    )
    if not {"non-targeted", "targeted"} <= set(preset.settings):
        return claim
    for spec in preset.datasets:
        for method in split_methods(preset.methods)[0]:
            a, b = idx.get((spec.name, "non-targeted", method)), idx.get((spec.name, "targeted", method))
            if not (_ok(a) and _ok(b) and _measured(a) and _measured(b)):
                continue
            holds = (_higher(b["iterations_all_mean"], a["iterations_all_mean"])  # type: ignore[index]
                     and _higher(a["psnr_all_mean"], b["psnr_all_mean"]))  # type: ignore[index]
            claim.rows.append({
                "data set": spec.name,
                "method": label(method),
                "success (non-t. / t.)": f"{a['succeeded']}/{a['attacked']} / {b['succeeded']}/{b['attacked']}",  # type: ignore[index]
                "iterations, all attacked (non-t. / t.)":
                    f"{fmt(a['iterations_all_mean'], 1)} / {fmt(b['iterations_all_mean'], 1)}",  # type: ignore[index]
                "PSNR, all attacked (non-t. / t.)":
                    f"{fmt(a['psnr_all_mean'], 2)} / {fmt(b['psnr_all_mean'], 2)}",  # type: ignore[index]
                "holds": holds,
            })
            claim.checks.append(holds)
    return claim


def claim_pixels(preset: experiments.Preset, summary: Sequence[Mapping[str, Any]]) -> Claim:
    """MND changes fewer pixels than every anchor."""
    idx = _index(summary)
    anchor_names = split_methods(preset.methods)[1]
    claim = Claim(
        "MND changes the fewest pixels",
        "Section IV-D-2: on the image of Fig. 4 (targeted) the ratio of changed pixels is BIM 0.8240, MIFGSM "
        "0.9491, DI2FGSM 0.8240, PGD 0.9122 and MND 0.6345.",
        columns=["table", "MND (all attacked)", "anchors (all attacked)", "holds"],
        note="Mean ratio of changed values (over the three colour channels) over all attacked images, for the "
             "anchors that made at least one image adversarial. A table holds when MND's is lower than every "
             "anchor's and MND made at least one image adversarial.",
    )
    for spec in preset.datasets:
        for setting in preset.settings:
            mnd = idx.get((spec.name, setting, "mnd"))
            anchors = [s for (d, st, m), s in idx.items()
                       if d == spec.name and st == setting and m in anchor_names
                       and _ok(s) and _measured(s)]
            if not _measured(mnd) or not anchors:
                continue
            ratio = mnd["changed_ratio_all_mean"]  # type: ignore[index]
            holds = _ok(mnd) and all(_higher(s["changed_ratio_all_mean"], ratio) for s in anchors)
            claim.rows.append({
                "table": _where(spec, setting),
                "MND (all attacked)": fmt(mnd["changed_ratio_all_mean"], 4),  # type: ignore[index]
                "anchors (all attacked)": ", ".join(f"{s['label']} {fmt(s['changed_ratio_all_mean'], 4)}"
                                                    for s in anchors),
                "holds": holds,
            })
            claim.checks.append(holds)
    return claim


def claim_success(preset: experiments.Preset, summary: Sequence[Mapping[str, Any]]) -> Claim:
    """MND images still fool the model."""
    idx = _index(summary)
    claim = Claim(
        "MND images fool the model",
        "Abstract and section V: the MND images attack the classifiers successfully while keeping the quality.",
        columns=["table", "MND success", "mean iterations (successes)", "holds"],
        note="Success is decided on the saved 8-bit image; an attack still failing after the iteration cap counts "
             "as a failure (reading notes, section 3). The interval is Wilson's 95%; a table where every image "
             f"succeeded holds on at least {stats.MIN_PAIRS} images and is inconclusive on fewer.",
    )
    for spec in preset.datasets:
        for setting in preset.settings:
            mnd = idx.get((spec.name, setting, "mnd"))
            if mnd is None or not mnd["attacked"]:
                continue
            holds: Any = mnd["succeeded"] == mnd["attacked"]
            if holds and mnd["attacked"] < stats.MIN_PAIRS:
                holds = "inconclusive"  # every image, but too few images to say that MND always succeeds
            claim.rows.append({"table": _where(spec, setting),
                               "MND success": stats.rate_text(int(mnd["succeeded"]), int(mnd["attacked"])),
                               "mean iterations (successes)": fmt(mnd["iterations_success_mean"], 1),
                               "holds": holds})
            claim.checks.append(holds)
    return claim


def claim_mos(results: str | Path | None) -> Claim:
    """Raters prefer MND to every anchor (needs ratings: the sheet's ``mos/ratings.csv`` or a browser study)."""
    claim = Claim(
        "Raters prefer MND to every anchor",
        "Sections IV-B-5 and IV-C-5: every average MOS of MND versus an anchor is positive (Tables III, IV, VIII, "
        "IX; e.g. 1.64 to 2.09 targeted on ImageNet).",
        columns=["ratings", "data set", "setting", "versus", "average MOS", "holds"],
        note="The average over the test's images of the mean score of MND against the anchor (positive: MND "
             "preferred), from the ratings collected with the sheet of the MOS page or in a browser study "
             "(mnd mos serve; raters who failed its control pairs left out).",
    )
    tables: list[tuple[str, list[dict[str, Any]]]] = []
    folder = Path(results) / "mos" if results is not None else None
    if folder is not None and (folder / "key.csv").exists() and (folder / "ratings.csv").exists():
        pairs = study.read_key(folder / "key.csv")
        ratings = study.read_ratings(folder / "ratings.csv", pairs)
        if ratings:
            tables.append(("rating sheet", study.mos_table(study.mnd_scores(ratings, pairs))))
    for name, report in study.study_reports(results) if results is not None else []:
        if report.rows:
            tables.append((f"study {name} ({len(report.raters)} raters, {len(report.excluded)} left out)", report.rows))
    if not tables:
        claim.note = ("No ratings have been collected for this run (no rows in mos/ratings.csv from the sheet, no "
                      "browser study with ratings), so this claim is not checked; the MOS page has the sheet.")
        return claim
    for source, rows in tables:
        for row in rows:
            if row["image_id"] == "Average":
                holds = row["mean"] > 0
                claim.rows.append({"ratings": source, "data set": row["dataset"], "setting": row["setting"],
                                   "versus": LABELS.get(row["versus"], row["versus"]),
                                   "average MOS": fmt(row["mean"], 2), "holds": holds})
                claim.checks.append(holds)
    return claim


def claim_perceptual(preset: experiments.Preset, rows: Sequence[Mapping[str, Any]]) -> Claim:
    """C6: the perceptual loss, not early stopping, explains MND's lead over the anchors (:func:`mnd.book.curves.perceptual_split`)."""
    share = f"{100 * curves.PERCEPTUAL_SHARE:.0f}%"
    claim = Claim(
        "The perceptual loss, not early stopping, explains MND's lead over the anchors",
        "Not a claim the paper states in these words: the paper credits MND's quality to its perceptual loss "
        "(sections III-B and IV-B-3), while its anchors spend a fixed 8/255 budget and MND stops at the first "
        "success. No norm stops the same way without the perceptual loss, which separates the two.",
        columns=["table", "MND PSNR (all attacked)", "no norm PSNR (all attacked)", "best fixed anchor",
                 "MND's lead (dB)", "lost without the perceptual loss (dB)", "share of the lead", "holds"],
        note=ALL_MEANS_NOTE + f" The rule: a table holds when MND leads the best plain anchor (eps 8/255) and "
             f"MND − no norm is more than {share} of that lead (MND − best anchor); otherwise stopping at success "
             "with small steps explains most of the lead. Compared when MND, no norm and at least one plain anchor "
             "each made an image adversarial; no data when a run lacks them.",
    )
    for spec in preset.datasets:
        for setting in preset.settings:
            split = curves.perceptual_split(rows, spec.name, setting)
            if split is None:
                continue
            claim.rows.append({
                "table": _where(spec, setting),
                "MND PSNR (all attacked)": fmt(split.mnd, 2),
                "no norm PSNR (all attacked)": fmt(split.no_norm, 2),
                "best fixed anchor": f"{label(split.anchor)} {fmt(split.anchor_psnr, 2)}",
                "MND's lead (dB)": signed(split.lead, 2),
                "lost without the perceptual loss (dB)": signed(split.loss_part, 2),
                "share of the lead": "–" if math.isnan(split.share) else f"{100 * split.share:.0f}%",
                "holds": split.holds,
            })
            claim.checks.append(split.holds)
    return claim


def claim_min_norm(preset: experiments.Preset, rows: Sequence[Mapping[str, Any]]) -> Claim:
    """C7: MND gives higher quality than minimum-norm attacks at equal success (:func:`mnd.book.curves.min_norm_comparisons`)."""
    claim = Claim(
        "MND gives higher quality than minimum-norm attacks at equal success",
        "Not in the paper, which compares MND with fixed-budget anchors only; the minimum-norm attacks "
        f"({', '.join(curves.MIN_NORM_LABELS[m] for m in curves.MIN_NORM)}) also look for the smallest change "
        "that fools the model.",
        columns=["table", "versus", "images both made adversarial", "MND − it, PSNR per image (dB)", "holds"],
        note=PAIRED_NOTE + " The claim is supported only when MND is higher against every minimum-norm attack of "
             "the run. No data when the run has none.",
    )
    for spec in preset.datasets:
        for setting in preset.settings:
            for compared in curves.min_norm_comparisons(rows, spec.name, setting):
                name = curves.base_label(compared.reference)
                diff = paired(rows, spec.name, setting, "mnd", compared.reference, "psnr")
                claim.rows.append({"table": _where(spec, setting), "versus": name,
                                   "images both made adversarial": diff.n,
                                   "MND − it, PSNR per image (dB)": diff.text(2), "holds": diff.outcome})
                claim.checks.append(diff.outcome)
    return claim


def claim_transfer(preset: experiments.Preset, rows: Sequence[Mapping[str, Any]]) -> Claim:
    """C9: MND images fool a model they were not made on (:func:`mnd.book.transfer.transfer_checks`)."""
    claim = Claim("MND images fool a model they were not made on",
                  "Not in the paper, which checks every image on the model that made it; a person sharing a "
                  "protected photo does not know which model will read it.",
                  columns=list(transfer.TRANSFER_COLUMNS), note=transfer.TRANSFER_NOTE)
    where = [(spec.name, spec.name) for spec in preset.datasets]
    for row, outcome in transfer.transfer_checks(where, preset.settings, rows):
        claim.rows.append(row)
        claim.checks.append(outcome)
    return claim


def claims(preset: experiments.Preset, rows: Sequence[Mapping[str, Any]], results: str | Path | None = None) -> list[Claim]:
    """Every checked claim of the paper, for one run's result rows (and its MOS ratings, if any).

    The paper's claims first (the MOS claim last of them), then the trade-off
    chapter's two (:func:`claim_perceptual`, :func:`claim_min_norm`).
    """
    summary = experiments.summarize(rows, preset)
    found = [claim_best(preset, summary, rows), claim_ablation(preset, summary, rows)]
    found += [f(preset, summary) for f in (claim_targeted, claim_pixels, claim_success)]
    return found + [claim_mos(results), claim_perceptual(preset, rows), claim_min_norm(preset, rows),
                    claim_transfer(preset, rows)]


def public_paths(preset: experiments.Preset, *folders: str | Path) -> list[tuple[str, str]]:
    """(machine path, what a published page shows instead), longest first, for :func:`scrub`.

    Covers the given folders (results, book source), the checkout, this
    Python's prefix, the home folder and the preset's data folders and files.
    """
    pairs: list[tuple[str, str]] = []
    for folder, shown in [(f, f"<{Path(f).name}>") for f in folders] + [
        (project_root(), "<checkout>"), (sys.prefix, "<python>"), (Path.home(), "~"),
    ]:
        pairs.append((str(Path(folder).resolve()), shown))
        pairs.append((str(Path(folder)), shown))
    for spec in preset.datasets:
        for value, what in ((spec.root, "root"), (spec.manifest, "manifest"), (spec.gallery, "gallery")):
            if value and value != "embedded":
                pairs.append((str(Path(value).resolve()), f"<{spec.name} {what}>"))
                pairs.append((value, f"<{spec.name} {what}>"))
    for value, shown in ((preset.hparams, "<hparams>"), (preset.path, Path(preset.path).name)):
        if value and os.sep in value:
            pairs.append((str(Path(value).resolve()), shown))
            pairs.append((value, shown))
    unique = {p: shown for p, shown in pairs if p not in ("", ".", os.sep)}
    return sorted(unique.items(), key=lambda kv: -len(kv[0]))


def scrub(text: str, paths: Sequence[tuple[str, str]]) -> str:
    """``text`` with every machine path of :func:`public_paths` replaced by its public name.

    A path is replaced only where it stands alone (not inside a longer word or
    a base64 string such as an embedded image).

    >>> scrub("saved in /home/me/results/tiny/x.png", [("/home/me/results/tiny", "<tiny>"), ("/home/me", "~")])
    'saved in <tiny>/x.png'
    """
    for path, shown in paths:
        if path in text:
            text = re.sub(rf"(?<![\w/+.-]){re.escape(path)}(?![\w.+-])", lambda _: shown, text)
    return text


def setup_lines(preset: experiments.Preset, summary: Sequence[Mapping[str, Any]]) -> list[str]:
    """One Markdown bullet per data set: its model and images, and whether they are the paper's."""
    lines = []
    for spec in preset.datasets:
        images = max((int(s["images"]) for s in summary if s["dataset"] == spec.name), default=None)
        tables = [t for _, t in spec.paper_tables]
        setups = {experiments.PAPER_SETUPS[t].text for t in tables if t in experiments.PAPER_SETUPS}
        paper = f"the paper's Tables {' and '.join(tables)}: {'; '.join(sorted(setups))}" if setups else \
            "no table of the paper"
        if tables and all(spec.same_as_paper(st) for st, _ in spec.paper_tables):
            verdict = "the paper's model and test set, so differences from the paper's values are given"
        else:
            verdict = ("**not the paper's model and data**: the paper's values are shown for reference only, with "
                       "no differences; the claims test whether its findings carry over")
        lines.append(f"- `{spec.name}`: {setup_text(spec, images)} ({paper}); {verdict}.")
    return lines


def reproduction_page(preset: experiments.Preset, results: str | Path) -> str:
    """The generated "what reproduced and what did not" page (MyST Markdown, no timestamps, no machine paths)."""
    results = Path(results)
    rows = experiments.read_results(results)
    run = experiments.read_run(results)
    summary = experiments.summarize(rows, preset)
    out = ["# What reproduced and what did not", ""]
    out += [f"Generated by `mnd book` from the results of preset `{preset.name}` ({len(rows)} result rows). "
            "Each claim is checked on this run's numbers, table by table; a table's check is decided by a paired "
            f"per-image test (sign test, p < {stats.ALPHA:g}, at least {stats.MIN_PAIRS} images) or is "
            "*inconclusive*. The verdict is *supported* when every decided table agrees, *partly supported* when "
            "some do, *not supported* when none does, with the number of inconclusive tables in brackets; "
            "*inconclusive* when no table is decided, *no data* when nothing could be compared. Degenerate outputs "
            f"(PSNR below {stats.DEGENERATE_PSNR:g} dB or SSIM below {stats.DEGENERATE_SSIM:g}) count as failures.",
            ""]
    out += ["Models and data of this run:", "", *setup_lines(preset, summary), "", ALL_MEANS_NOTE, ""]
    skipped = {k: v for k, v in run.get("datasets", {}).items() if v.get("status") != "ok"}
    for name, info in skipped.items():
        out += [f"```{{warning}}\nData set `{name}` was not run: {info.get('reason', 'skipped')}\n```", ""]
    failed = [r for r in rows if str(r.get("note", "")).startswith("failed:")]
    if failed:
        kinds = sorted({(r["dataset"], r["setting"], r["method"], str(r["note"])[:160]) for r in failed})
        text = "\n".join(f"- {d} {s} {m}: {n}" for d, s, m, n in kinds)
        out += [f"```{{warning}}\n{len(failed)} attacks raised an error and are left out of every mean:\n\n{text}\n```", ""]
    out += ["| claim | verdict |", "| --- | --- |"]
    found = claims(preset, rows, results)
    for k, c in enumerate(found, start=1):
        out.append(f"| {k}. {c.title} | **{c.verdict}** |")
    out.append("")
    for k, c in enumerate(found, start=1):
        out += [f"## {k}. {c.title}", "", f"*The paper:* {c.paper}", "", f"*This run:* **{c.verdict}**.", ""]
        if c.rows:
            out += [markdown_table(c.rows, c.columns), ""]
        if c.note:
            out += [c.note, ""]
    out += ["## The paper's own inconsistencies", "",
            "Places where the paper disagrees with itself. Every table value below is read from the paper's tables "
            "as transcribed in `data/paper/`, and every mean and range is computed from them.", ""]
    out += [f"- **{item.title}.** {item.text}" for item in paper_inconsistencies()]
    out += ["", "## This run", "", f"- preset: `{preset.name}` ({Path(preset.path).name})"]
    if preset.overrides:
        out.append(f"- overrides: {', '.join(f'`{o}`' for o in preset.overrides)}")
    out += [f"- MND iteration cap: {preset.effective_max_iter()} (the paper: 1000)",
            f"- seed: {preset.seed}; device: {preset.device}"]
    for spec in preset.datasets:
        out.append(f"- {spec.name}: {spec.title}; model `{spec.model}`")
    if preset.description:
        out += ["", " ".join(preset.description.split())]
    if preset.notes:
        out += ["", " ".join(preset.notes.split())]
    versions = run.get("versions", {})
    if versions:
        out += ["", "Package versions of the last grid run:", "",
                markdown_table([{"package": k, "version": v} for k, v in sorted(versions.items())], ["package", "version"])]
    return scrub("\n".join(out) + "\n", public_paths(preset, results))
