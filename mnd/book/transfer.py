"""Transfer: do a method's images fool models they were not made on? (the unseen-model columns of a run)

:func:`transfer_rows` gives, for every method of one data set x setting, how
many of its usable images (adversarial on the attacked model, not
degenerate: :func:`mnd.experiments.stats.usable`) each unseen model reads
another label on, on the saved file and after JPEG 75, with Wilson 95%
intervals. :func:`transfer_checks` decide the verdict page's claim "MND images
fool a model they were not made on": per data set, setting and unseen model,
MND's images against the noise control's (random signs of a similar size, the
same images) in a paired sign test; without the control in the run, decided
only when MND's interval excludes zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mnd.book.curves import point_label
from mnd.experiments import stats
from mnd.protect.unseen import unseen_of

CONTROL = "noise@eps=4"
"""The control the claim compares MND with: random ±4/255 signs, no gradient (a larger change than MND's on
these photos, so if anything the control has the better chance to move an unseen model)."""


def _select(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> list[Mapping[str, Any]]:
    return [r for r in rows if (r.get("dataset"), r.get("setting")) == (dataset, setting)]


def unseen_models(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The unseen models the rows were checked on, in first-seen order."""
    return list(dict.fromkeys(m for r in rows for m in unseen_of(r)))


def fooled_by_image(rows: Iterable[Mapping[str, Any]], method: str, model: str, jpeg: bool = False
                    ) -> dict[str, bool]:
    """image -> whether ``model`` read another label on the method's saved file (after JPEG 75 with ``jpeg``);
    only usable images (an image that did not fool the attacked model counts as not fooled)."""
    out: dict[str, bool] = {}
    for r in rows:
        if r.get("method") != method or not stats.truthy(r.get("attacked", True)):
            continue
        verdict = unseen_of(r).get(model)
        if verdict is None or verdict[1 if jpeg else 0] is None:
            continue
        out[str(r["image"])] = bool(verdict[1 if jpeg else 0]) and stats.usable(r)
    return out


def transfer_rows(rows: Iterable[Mapping[str, Any]], dataset: str, setting: str) -> list[dict[str, Any]]:
    """One row per method: n, mean PSNR, white-box success and each unseen model's rate (plain, JPEG 75)."""
    rows = _select(rows, dataset, setting)
    models = unseen_models(rows)
    if not models:
        return []
    out = []
    for method in dict.fromkeys(str(r["method"]) for r in rows):
        group = [r for r in rows if r["method"] == method and stats.truthy(r.get("attacked", True))]
        if not group:
            continue
        psnr = [float(r["psnr"]) for r in group if stats.usable(r)]
        row: dict[str, Any] = {"method": point_label(method), "n": len(group),
                               "PSNR (usable)": sum(psnr) / len(psnr) if psnr else float("nan"),
                               "attacked model": stats.rate_text(sum(stats.usable(r) for r in group), len(group))}
        for model in models:
            for jpeg in (False, True):
                hits = fooled_by_image(group, method, model, jpeg)
                row[f"{model}{' JPEG 75' if jpeg else ''}"] = stats.rate_text(sum(hits.values()), len(hits))
        out.append(row)
    return out


def transfer_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The columns of :func:`transfer_rows`' table."""
    return list(rows[0]) if rows else []


TRANSFER_COLUMNS = ["table", "unseen model", "MND: images it fools", "after JPEG 75",
                    "noise control: images it fools", "MND − control, per image", "holds"]
"""The columns of the verdict page's transfer claim (:func:`transfer_checks`)."""

TRANSFER_NOTE = ("Images MND made adversarial on the attacked model (an image it did not is counted as not fooling "
                 f"the unseen one either), read by models that never gave a gradient. The control is {CONTROL} "
                 "(random signs, no gradient) on the same images; per image, MND fooling the unseen model where "
                 "the control does not is a win. The claim holds for a table when the sign test gives "
                 f"p < {stats.ALPHA:g} on at least {stats.MIN_PAIRS} images; without the control in a setting it is "
                 "inconclusive, since some images change label on any model by chance.")


def transfer_checks(datasets: Sequence[tuple[str, str]], settings: Sequence[str], rows: Sequence[Mapping[str, Any]]
                    ) -> list[tuple[dict[str, Any], stats.Outcome]]:
    """The rows and outcomes of the claim "MND images fool a model they were not made on", one per data set
    (name, table caption), setting and unseen model."""
    out: list[tuple[dict[str, Any], stats.Outcome]] = []
    for name, where in datasets:
        for setting in settings:
            group = _select(rows, name, setting)
            for model in unseen_models(group):
                mnd = fooled_by_image(group, "mnd", model)
                if not mnd:
                    continue
                jpeg = fooled_by_image(group, "mnd", model, jpeg=True)
                control = fooled_by_image(group, CONTROL, model)
                common = sorted(mnd.keys() & control.keys())
                outcome: stats.Outcome
                if common:
                    diff = stats.compare([float(mnd[i]) for i in common], [float(control[i]) for i in common])
                    outcome, text = diff.outcome, diff.text(0)
                    ctrl = stats.rate_text(sum(control[i] for i in common), len(common))
                else:  # a few images move on any model by chance (JPEG alone moves some): no control, no verdict
                    outcome = "inconclusive"
                    text, ctrl = "no noise control in this setting: chance cannot be ruled out", "–"
                out.append(({"table": f"{where}, {setting}", "unseen model": model,
                             "MND: images it fools": stats.rate_text(sum(mnd.values()), len(mnd)),
                             "after JPEG 75": stats.rate_text(sum(jpeg.values()), len(jpeg)),
                             "noise control: images it fools": ctrl, "MND − control, per image": text,
                             "holds": outcome}, outcome))
    return out


__all__ = ["CONTROL", "TRANSFER_COLUMNS", "TRANSFER_NOTE", "fooled_by_image", "transfer_checks", "transfer_columns",
           "transfer_rows", "unseen_models"]
