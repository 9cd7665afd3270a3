"""Summaries of result rows: success rates and means per data set, setting and method, beside the paper's values.

:func:`summarize` gives, per data set x setting x method, the success rate
and mean +- std of PSNR, SSIM and the changed-pixel ratio twice: over every
attacked image (``*_all_*``) and over the successful attacks only
(``*_success_*``), with the paper's values beside them. Differences from the
paper are given only where the model and data are the paper's
(:meth:`~mnd.experiments.presets.DatasetSpec.same_as_paper`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from mnd.core.metrics import sample_mean, sample_std
from mnd.data.paths import paper_dir
from mnd.errors import InputError
from mnd.experiments.methods import method_label, order_key
from mnd.experiments.presets import SETTINGS, Preset
from mnd.experiments.rows import read_rows


def paper_psnr_ssim() -> dict[tuple[str, str], dict[str, float]]:
    """The paper's Tables I, II, VI, VII: (table, method label) -> psnr/ssim mean and std."""
    path = paper_dir() / "psnr_ssim_tables.csv"
    out = {}
    for row in read_rows(path):
        out[(row["table"], row["method"])] = {k: float(row[k]) for k in ("psnr_mean", "psnr_std", "ssim_mean", "ssim_std")}
    if not out:
        raise InputError(path, "the paper's table values are missing (they live in data/paper/ of the checkout)")
    return out


AVERAGED: tuple[str, ...] = ("psnr", "ssim", "changed_ratio")
"""Per-image metrics :func:`summarize` averages."""


OVER: dict[str, str] = {"all": "all attacked", "success": "successes"}
"""The two sets of images a summary averages over (column infix -> label).

``all``: every image the method attacked (the paper's tables are means over
all its 100 tested images); ``success``: only the images the attack made
adversarial. Attacks that raised (NaN metrics) are in neither.
"""


def _measured(group: Sequence[dict[str, Any]], key: str) -> list[float]:
    """The values of ``key`` in ``group`` that were measured (not NaN; +inf kept: an unchanged image)."""
    return [float(r[key]) for r in group if r.get(key) is not None and not math.isnan(float(r[key]))]


def summarize(
    rows: Iterable[dict[str, Any]], preset: Preset | None = None, *, paper: bool = True
) -> list[dict[str, Any]]:
    """Per data set x setting x method: success rate, iterations and PSNR/SSIM mean +- std, twice.

    Every statistic comes in two versions, named by :data:`OVER`:
    ``psnr_all_mean`` (and ``_std``) over every attacked image, successful
    or not (the paper reports means over all its tested images), and
    ``psnr_success_mean`` over the images the attack made adversarial; the
    same for ``ssim``, ``changed_ratio`` and ``iterations`` (mean only).
    Neither is more "the paper's" than the other when some attacks fail: the
    first counts failed attempts, the second favours easy images. Standard
    deviations are sample (n - 1) ones. An image an attack left unchanged has
    PSNR +inf, which makes a mean over it +inf (and its std NaN).

    With ``paper`` and a preset naming the paper's tables, the paper's
    values are added (``paper_psnr_mean`` ...), and ``same_as_paper`` says
    whether the data set is the paper's model on the paper's test set
    (:meth:`DatasetSpec.same_as_paper`); only then are the differences
    ``psnr_all_diff`` and ``ssim_all_diff`` (all-attacked mean - paper) given,
    else they are NaN.
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["setting"], row["method"]), []).append(row)
    table = paper_psnr_ssim() if paper and preset is not None else {}
    datasets = {n: i for i, n in enumerate(preset.names)} if preset else {}
    out = []
    for (dataset, setting, method), group in sorted(
        groups.items(),
        key=lambda kv: (datasets.get(kv[0][0], 99), kv[0][0], SETTINGS.index(kv[0][1]) if kv[0][1] in SETTINGS else 9,
                        order_key(kv[0][2])),
    ):
        attacked = [r for r in group if r.get("attacked", True)]
        won = [r for r in attacked if r["success"]]
        entry: dict[str, Any] = {
            "dataset": dataset,
            "setting": setting,
            "method": method,
            "label": method_label(method),
            "images": len(group),
            "attacked": len(attacked),
            "measured": len(_measured(attacked, "psnr")),
            "succeeded": len(won),
            "success_rate": len(won) / len(attacked) if attacked else math.nan,
        }
        for over, chosen in (("all", attacked), ("success", won)):
            for key in AVERAGED:
                values = _measured(chosen, key)
                entry[f"{key}_{over}_mean"] = sample_mean(values)
                entry[f"{key}_{over}_std"] = sample_std(values)
            entry[f"iterations_{over}_mean"] = sample_mean(_measured(chosen, "iterations"))
        entry["seconds_mean"] = sample_mean(_measured(attacked, "seconds"))
        if preset is not None and dataset in datasets:
            spec = preset.dataset(dataset)
            tab = spec.paper_table(setting)
            ref = table.get((tab, entry["label"])) if tab else None
            same = spec.same_as_paper(setting)
            entry["paper_table"] = tab or ""
            entry["same_as_paper"] = same
            for k in ("psnr_mean", "psnr_std", "ssim_mean", "ssim_std"):
                entry[f"paper_{k}"] = ref[k] if ref else math.nan
            entry["psnr_all_diff"] = entry["psnr_all_mean"] - entry["paper_psnr_mean"] if same else math.nan
            entry["ssim_all_diff"] = entry["ssim_all_mean"] - entry["paper_ssim_mean"] if same else math.nan
        out.append(entry)
    return out
