"""What one attack looked like at each iteration: the rows of a trace and where they are kept.

:class:`Recorder` is an observer of :func:`mnd.core.attack.generate` that keeps,
for one image of the batch, what the 8-bit image looks like to the model and to
each loss term of eq. (7) at every iteration; :func:`keep` writes one variant's
rows where :func:`mnd.experiments.trace.load_or_run` finds them. The grid records
its own runs this way; :mod:`mnd.experiments.trace` runs the ones it did not.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mnd.core import attack, losses, metrics
from mnd.core.config import AttackConfig
from mnd.data.imageio import atomic_open

TRACE_COLUMNS = [
    "variant", "iteration", "goal", "goal_prob", "top_label", "adversarial", "adv_loss", "l1", "l2", "ssim",
    "gradient_l1", "objective", "psnr", "max_iter", "error",
]
"""One row per variant x iteration; iteration 0 is the clean image. ``error``: why a trace stopped early."""


@torch.no_grad()
def terms(z: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
    """Every term of eq. (7) for one image pair (mean reduction, as the attack uses).

    Args:
        z: (1, 3, H, W) or (3, H, W) adversarial image in [0, 1].
        x: the clean image, same shape.

    Returns:
        l1 (eq. 8), l2 (eq. 9), ssim (eq. 10), gradient_l1 (eq. 18), gradient_l2 (eq. 19), psnr.
    """
    z = z if z.ndim == 4 else z[None]
    x = x if x.ndim == 4 else x[None]
    return {
        "l1": float(losses.deviation_loss(z, x, norm="l1")[0]),
        "l2": float(losses.deviation_loss(z, x, norm="l2")[0]),
        "ssim": float(losses.ssim_similarity(z, x)[0]),
        "gradient_l1": float(losses.gradient_loss(z, x, norm="l1")[0]),
        "gradient_l2": float(losses.gradient_loss(z, x, norm="l2")[0]),
        "psnr": float(metrics.psnr(z, x)[0]),
    }


def step_row(variant: str, record: attack.StepRecord, x: torch.Tensor, config: AttackConfig) -> dict[str, Any]:
    """One trace row: what the model and each loss term see in the 8-bit image of ``record`` (one image)."""
    zq, logits, goal = record.image, record.logits, int(record.goal[0])
    t = terms(zq, x)
    adv = float(record.adv_loss[0])
    b1, b2, b3 = config.betas
    # the objective with the attack's norm forms (the l1/l2 columns use the default forms)
    red, form = config.reduction, config.l2_form
    deviation = float(losses.deviation_loss(zq, x, norm=config.deviation, reduction=red, l2_form=form)[0])
    gradient = float(losses.gradient_loss(zq, x, norm=config.gradient, reduction=red, l2_form=form)[0])
    return {
        "variant": variant,
        "iteration": int(record.iterations[0]),
        "goal": goal,
        "goal_prob": float(logits.float().softmax(1)[0, goal]),
        "top_label": int(logits.argmax(1)[0]),
        "adversarial": bool(record.adversarial[0]),
        "adv_loss": adv,
        "l1": t["l1"],
        "l2": t["l2"],
        "ssim": t["ssim"],
        "gradient_l1": t["gradient_l1"],
        "objective": adv + b1 * deviation - b2 * t["ssim"] + b3 * gradient,
        "psnr": t["psnr"],
        "max_iter": config.max_iter,
        "error": "",
    }


class Recorder:
    """An observer of :func:`mnd.core.attack.generate` that keeps a trace row per iteration of one image.

    Args:
        variant: the MND variant being run.
        x: (1, C, H, W) that image's clean 8-bit version.
        config: the configuration ``generate`` runs with.
        row: the image's row in the attacked batch (the other rows are not recorded).
    """

    def __init__(self, variant: str, x: torch.Tensor, config: AttackConfig, row: int = 0) -> None:
        self.variant, self.x, self.config, self.row = variant, x, config, row
        self.rows: list[dict[str, Any]] = []

    @torch.no_grad()
    def __call__(self, record: attack.StepRecord) -> None:
        where = (record.rows == self.row).nonzero()
        if where.numel() == 0:  # that image stopped, or is handled in another pass
            return
        k = int(where[0, 0])
        mine = attack.StepRecord(*(value[k : k + 1] for value in (
            record.rows, record.iterations, record.iterate, record.image, record.goal, record.logits,
            record.adv_loss, record.adversarial)))
        row = step_row(self.variant, mine, self.x.to(record.image.device), self.config)
        if self.rows and self.rows[-1]["iteration"] == row["iteration"]:  # amp: its float32 check replaces it
            self.rows.pop()
        self.rows.append(row)


def non_finite(reason: str) -> bool:
    """Whether an attack's reason (:attr:`mnd.core.attack.AttackResult.reason`) says it stopped on non-finite values."""
    return reason.startswith((attack.STOPPED_NON_FINITE_LOGITS, attack.STOPPED_NON_FINITE_GRADIENT))


def write(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write trace rows as CSV, atomically."""
    path = Path(path)
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRACE_COLUMNS, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


def read(path: str | Path) -> list[dict[str, Any]]:
    """Trace rows written by :func:`write`, typed."""
    out = []
    with Path(path).open(newline="") as handle:
        for row in csv.DictReader(handle):
            typed: dict[str, Any] = dict(row)
            for k in ("iteration", "goal", "top_label", "max_iter"):
                typed[k] = int(row[k])
            for k in ("goal_prob", "adv_loss", "l1", "l2", "ssim", "gradient_l1", "objective", "psnr"):
                typed[k] = float(row[k])
            typed["adversarial"] = row["adversarial"] == "True"
            typed["error"] = row.get("error") or ""
            out.append(typed)
    return out


def trace_path(results: str | Path, dataset: str, setting: str, image: str, variant: str) -> Path:
    """Where one variant's trace on one image is kept (:func:`load_or_run`, :func:`keep`)."""
    return Path(results) / "trace" / dataset / setting / image / f"{variant}.csv"


def keep(results: str | Path, dataset: str, setting: str, image: str, rows: Sequence[dict[str, Any]]) -> Path:
    """Write one variant's trace rows where :func:`load_or_run` finds them (the grid records its own runs here)."""
    variants = {r["variant"] for r in rows}
    if len(variants) != 1:
        raise ValueError(f"a kept trace holds one variant's rows, not {sorted(variants)}")
    return write(trace_path(results, dataset, setting, image, variants.pop()), rows)
