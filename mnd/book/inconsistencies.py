"""The paper's own inconsistencies, computed from its tables (data/paper)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mnd import experiments
from mnd import study
from mnd.book.pages import label
from mnd.core import anchors
from mnd.data.paths import paper_dir


TEXT_QUOTES: dict[str, Any] = {
    "intro_psnr": (30.0, 35.0),  # introduction: "around 30~35dB/0.78~0.89 ... of the anchor methods on ImageNet"
    "intro_ssim": (0.78, 0.89),
    "viii_bim": 1.84,  # section IV-C-5, first paragraph: "... MND VS. BIM are ... 1.84"
    "ix_rfgsm": 0.29,  # section IV-C-5, second paragraph: "... MND VS. RFGSM are ... 0.29"
}
"""Numbers the paper's text states (not its tables): what :func:`paper_inconsistencies` checks them against."""


ANCHOR_LABELS: tuple[str, ...] = tuple(label(m) for m in anchors.PAPER_ANCHORS)
"""The anchors' row labels in the paper's Tables I, II, VI and VII (:data:`mnd.core.anchors.PAPER_ANCHORS`)."""


@dataclass(frozen=True)
class Inconsistency:
    """A place where the paper disagrees with itself; ``text`` gives the numbers (computed from data/paper/)."""

    title: str
    text: str


def _range(values: Iterable[float], digits: int) -> str:
    values = list(values)
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def paper_inconsistencies() -> list[Inconsistency]:
    """The paper's own inconsistencies, each with its numbers computed from the table values in ``data/paper/``.

    Only the numbers the paper's text states are constants (:data:`TEXT_QUOTES`); every table value, mean,
    range and comparison is read or computed from the CSV files.
    """
    found: list[Inconsistency] = []
    per_image, printed = study.paper_tables(), study.paper_averages()
    for c in study.check_averages(per_image, printed):
        if not c["matches"]:
            found.append(Inconsistency(
                f"TABLE {c['table']}: the average against {c['versus']}",
                f"The table prints {c['printed']:.2f}; the mean of its {c['images']} image rows is "
                f"{c['recomputed']:.4f}, which rounds to {c['recomputed']:.2f}."))
    average = {(r["table"], r["versus"]): float(r["mean"]) for r in printed}
    viii = average.get(("VIII", "BIM"), math.nan)
    if abs(viii - TEXT_QUOTES["viii_bim"]) > 0.005:
        order = sorted((v, k[1]) for k, v in average.items() if k[0] == "VIII")
        found.append(Inconsistency(
            "Section IV-C-5 against TABLE VIII",
            f"The text quotes the average of MND against BIM as {TEXT_QUOTES['viii_bim']:.2f}; TABLE VIII prints "
            f"{viii:.2f}. The text's own ranking (BIM closest to MND, then DI2FGSM, PGD and MIFGSM) fits the "
            f"table's averages ({', '.join(f'{n} {v:.2f}' for v, n in order)}), not {TEXT_QUOTES['viii_bim']:.2f}."))
    anchors_mos = sorted({str(r["versus"]) for r in per_image})
    if "RFGSM" not in anchors_mos:
        ix = ", ".join(f"{v} {average[('IX', v)]:.2f}" for v in anchors_mos if ("IX", v) in average)
        found.append(Inconsistency(
            "Section IV-C-5 against TABLE IX",
            f"The second paragraph quotes an average against RFGSM ({TEXT_QUOTES['ix_rfgsm']:.2f}), but no MOS "
            f"table has an RFGSM column (they compare with {', '.join(anchors_mos)} only); its other four values "
            f"are TABLE IX's ({ix}). The same paragraph calls the setting targeted; TABLE IX's caption says "
            "non-targeted."))
    tables = experiments.paper_psnr_ssim()
    imagenet = [(t, m, v) for (t, m), v in tables.items() if t in ("I", "II") and m in ANCHOR_LABELS]
    psnr = [v["psnr_mean"] for _, _, v in imagenet]
    ssim = [v["ssim_mean"] for _, _, v in imagenet]
    (lo_p, hi_p), (lo_s, hi_s) = TEXT_QUOTES["intro_psnr"], TEXT_QUOTES["intro_ssim"]
    if min(psnr) < lo_p or max(psnr) > hi_p or min(ssim) < lo_s or max(ssim) > hi_s:
        outside = [f"{m} (Table {t}) {v['psnr_mean']:.2f} dB / {v['ssim_mean']:.4f}" for t, m, v in imagenet
                   if not (lo_p <= v["psnr_mean"] <= hi_p and lo_s <= v["ssim_mean"] <= hi_s)]
        found.append(Inconsistency(
            "The introduction against Tables I and II",
            f"The introduction puts the anchors' average PSNR/SSIM on ImageNet at \"around {lo_p:.0f}~{hi_p:.0f}dB/"
            f"{lo_s:.2f}~{hi_s:.2f}\"; Tables I and II show {_range(psnr, 2)} dB and {_range(ssim, 4)}, with "
            f"{len(outside)} of the {len(imagenet)} anchor rows outside that range: {'; '.join(outside)}."))
    ratios: dict[str, list[str]] = {}
    pixel_rows = experiments.read_rows(paper_dir() / "pixel_ratio.csv")
    for r in pixel_rows:
        ratios.setdefault(r["changed_ratio"], []).append(r["method"])
    for value, methods in sorted(ratios.items()):
        if len(methods) > 1:
            others = ", ".join(f"{r['method']} {r['changed_ratio']}" for r in pixel_rows if r["method"] not in methods)
            found.append(Inconsistency(
                "The changed-pixel ratios of section IV-D-2",
                f"{' and '.join(methods)} have exactly the same ratio, {value}, on the image of Fig. 4, to four "
                f"digits, while the other methods differ ({others}): two different attacks are unlikely to change "
                "exactly as many values, which suggests that one number was copied from the other."))
    for table in ("I", "II", "VI", "VII"):
        stds = {m: tables[(table, m)]["psnr_std"] for m in ANCHOR_LABELS if (table, m) in tables}
        if len(stds) < 2:
            continue
        low = min(stds, key=lambda m: stds[m])
        rest = [v for m, v in stds.items() if m != low]
        if stds[low] * 5 < min(rest):
            every = [v["psnr_std"] for (t, m), v in tables.items() if m in ANCHOR_LABELS and (t, m) != (table, low)]
            found.append(Inconsistency(
                f"TABLE {table}: the PSNR standard deviation of {low}",
                f"{stds[low]:.2f} dB, against {_range(rest, 2)} dB for the other anchors of the same table "
                f"({_range(every, 2)} dB over the other {len(every)} anchor rows of Tables I, II, VI and VII), "
                f"while its SSIM std, {tables[(table, low)]['ssim_std']:.4f}, is like theirs: possibly a misprint."))
    for plain, aimed in (("I", "II"), ("VI", "VII")):
        both = [m for m in ANCHOR_LABELS if (plain, m) in tables and (aimed, m) in tables]
        higher = [(m, tables[(aimed, m)]["psnr_mean"], tables[(plain, m)]["psnr_mean"]) for m in both
                  if tables[(aimed, m)]["psnr_mean"] > tables[(plain, m)]["psnr_mean"]]
        if higher:
            mnd = (tables[(plain, "MND")]["psnr_mean"], tables[(aimed, "MND")]["psnr_mean"])
            found.append(Inconsistency(
                f"Targeted against non-targeted anchors (Tables {plain} and {aimed})",
                "Section IV-B-3 reads the lower targeted PSNR as \"non-targeted attack is easier than targeted "
                f"attack\" (MND: {mnd[0]:.2f} dB in Table {plain}, {mnd[1]:.2f} dB in Table {aimed}), but "
                f"{len(higher)} of the {len(both)} anchors score a higher PSNR targeted than "
                "non-targeted: " + ", ".join(f"{m} {t:.2f} vs {n:.2f} dB" for m, t, n in higher) + "."))
    return found
