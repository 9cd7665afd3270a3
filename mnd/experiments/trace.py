"""Per-iteration traces of Algorithm 1, for the book's look at each term of eq. (7).

:func:`run` runs :func:`mnd.core.attack.generate` on ONE image and records, through
its ``observer`` hook, what the 8-bit image looks like to the model and to
each loss term at every iteration: the trace is generate's own run, so it
stops where ``generate`` stops (tests/test_trace.py checks this).

:func:`terms` measures every term of eq. (7) between a clean and an
adversarial image; :func:`load_or_run` caches traces under a results folder.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnd.core import attack, losses, metrics
from mnd.core.config import VARIANTS, AttackConfig, Task, config_for
from mnd.core.pixels import quantize
from mnd.data.imageio import atomic_open
from mnd.experiments.grid import open_dataset
from mnd.experiments.presets import threads

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


def _row(variant: str, record: attack.StepRecord, x: torch.Tensor, config: AttackConfig) -> dict[str, Any]:
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


class _Recorder:
    """An observer of :func:`mnd.core.attack.generate` on one image that keeps a trace row per iteration."""

    def __init__(self, variant: str, x: torch.Tensor, config: AttackConfig) -> None:
        self.variant, self.x, self.config = variant, x, config
        self.rows: list[dict[str, Any]] = []

    @torch.no_grad()
    def __call__(self, record: attack.StepRecord) -> None:
        row = _row(self.variant, record, self.x, self.config)
        if self.rows and self.rows[-1]["iteration"] == row["iteration"]:  # amp: its float32 check replaces it
            self.rows.pop()
        self.rows.append(row)


def _clean_record(model: nn.Module, x: torch.Tensor, result: attack.AttackResult,
                  config: AttackConfig) -> attack.StepRecord:
    """Iteration 0 of an image that was not attacked: the clean image as the model sees it."""
    goal = result.target_label if result.target_label is not None else result.true_label
    goal = goal.to(x.device)
    with torch.no_grad():
        logits = model(x).float()
    adv_loss = losses.adversarial_loss(logits, goal, targeted=config.targeted, r=config.r)
    zero = torch.zeros(1, dtype=torch.long, device=x.device)
    return attack.StepRecord(zero, zero, x, x, goal, logits, adv_loss, torch.zeros_like(zero, dtype=torch.bool))


def run(
    model: nn.Module,
    x: torch.Tensor,
    label: int | None,
    variant: str,
    *,
    task: Task = "imagenet",
    targeted: bool = False,
    hparams: str | Path | None = None,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Trace one MND variant on one image: a row per iteration until success or ``max_iter``.

    ``goal_prob`` is the softmax probability of the true class (non-targeted)
    or of the eq. (5) target (targeted) on the 8-bit image at each iteration;
    the loss columns are measured on that 8-bit image too. An image that is
    not attacked (see :func:`mnd.core.attack.prepare_labels`) gives its clean row only.

    Args:
        model: logits for [0, 1] inputs, frozen.
        x: (3, H, W) or (1, 3, H, W) clean image.
        label: ground truth, or None for the clean prediction.
        variant: a key of :data:`mnd.core.config.VARIANTS`.
        task, targeted, hparams, **overrides: as :func:`mnd.core.config.config_for`.

    Raises:
        FloatingPointError: the attack stopped on non-finite values.
    """
    config = config_for(variant, task=task, targeted=targeted, hparams=hparams, **overrides)
    device = next((p.device for p in model.parameters()), x.device)
    x = quantize((x if x.ndim == 4 else x[None]).detach().to(device))
    labels = None if label is None else torch.tensor([int(label)], device=device)
    recorder = _Recorder(variant, x, config)
    result = attack.generate(model, x, labels, config=config, observer=recorder)
    reason = result.reason[0]
    if reason.startswith((attack.STOPPED_NON_FINITE_LOGITS, attack.STOPPED_NON_FINITE_GRADIENT)):
        raise FloatingPointError(f"{variant}: {reason.split(':')[0]}")
    return recorder.rows or [_row(variant, _clean_record(model, x, result, config), x, config)]


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


def trace_path(results: str | Path, dataset: str, setting: str, image: str) -> Path:
    """Where :func:`load_or_run` keeps a trace."""
    return Path(results) / "trace" / dataset / setting / f"{image}.csv"


def load_or_run(
    preset: Any,
    results: str | Path,
    dataset: str,
    image: str,
    setting: str,
    *,
    variants: Sequence[str] | None = None,
    max_iter: int | None = None,
) -> list[dict[str, Any]]:
    """The traces of ``variants`` on one image of a preset's data set, computed once.

    A trace on disk with the same variants and iteration cap is read back;
    otherwise the data set's model is loaded and the traces are computed and
    written to :func:`trace_path`.

    Args:
        preset: a :class:`mnd.experiments.presets.Preset`.
        results: its results folder.
        dataset, image, setting: which image and setting.
        variants: MND variants (default: every variant of the preset's methods).
        max_iter: iteration cap (default: the preset's).
    """
    spec = preset.dataset(dataset)
    variants = list(variants or [m for m in preset.methods if m in VARIANTS])
    cap = int(max_iter or preset.effective_max_iter(spec.task))
    path = trace_path(results, dataset, setting, image)
    if path.exists():
        rows = read(path)
        if sorted({r["variant"] for r in rows}) == sorted(variants) and all(r["max_iter"] == cap for r in rows):
            return rows
    with threads(preset):
        rows = _traces(preset, spec, image, setting, variants, cap)
    write(path, rows)
    return rows


def _traces(preset: Any, spec: Any, image: str, setting: str, variants: Sequence[str], cap: int) -> list[dict[str, Any]]:
    opened = open_dataset(preset, spec)
    item = opened.item(image)
    rows: list[dict[str, Any]] = []
    for variant in variants:
        try:
            rows += run(opened.model, item.tensor, item.label, variant, task=spec.task,
                        targeted=setting == "targeted", hparams=preset.hparams, max_iter=cap, straight_through=False)
        except FloatingPointError as exc:  # recorded as a trace that stops at the clean image
            rows.append({**run(opened.model, item.tensor, item.label, variant, task=spec.task,
                               targeted=setting == "targeted", hparams=preset.hparams, max_iter=0)[0],
                         "max_iter": cap, "error": str(exc)})
    return rows
