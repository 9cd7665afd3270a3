"""Per-iteration traces of Algorithm 1, for the book's look at each term of eq. (7).

:func:`run` replays :func:`mnd.attack.generate` on ONE image, step by step,
with the same objective (:func:`mnd.attack.objective`), the same optimizer
and the same stopping rule, and records after every step what the 8-bit
image looks like to the model and to each loss term. It stops where
``generate`` stops, so its last iteration equals ``generate``'s count
(tests/test_book.py checks this).

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

from mnd import attack, losses, metrics
from mnd.imageio import atomic_open

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


def _row(variant: str, step: int, goal: int, logits: torch.Tensor, zq: torch.Tensor, x: torch.Tensor,
         config: attack.AttackConfig, done: bool) -> dict[str, Any]:
    t = terms(zq, x)
    adv = float(losses.adversarial_loss(logits.float(), torch.tensor([goal]), targeted=config.targeted, r=config.r)[0])
    b1, b2, b3 = config.betas
    # the objective with the attack's norm forms (the l1/l2 columns use the default forms)
    red, form = config.reduction, config.l2_form
    deviation = float(losses.deviation_loss(zq, x, norm=config.deviation, reduction=red, l2_form=form)[0])
    gradient = float(losses.gradient_loss(zq, x, norm=config.gradient, reduction=red, l2_form=form)[0])
    return {
        "variant": variant,
        "iteration": step,
        "goal": goal,
        "goal_prob": float(logits.float().softmax(1)[0, goal]),
        "top_label": int(logits.argmax(1)[0]),
        "adversarial": done,
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


def run(
    model: nn.Module,
    x: torch.Tensor,
    label: int | None,
    variant: str,
    *,
    task: attack.Task = "imagenet",
    targeted: bool = False,
    hparams: str | Path | None = None,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Trace one MND variant on one image: a row per iteration until success or ``max_iter``.

    ``goal_prob`` is the softmax probability of the true class (non-targeted)
    or of the eq. (5) target (targeted) on the 8-bit image after each step;
    the loss columns are measured on that 8-bit image too.

    Args:
        model: logits for [0, 1] inputs, frozen.
        x: (3, H, W) or (1, 3, H, W) clean image.
        label: ground truth, or None for the clean prediction.
        variant: a key of :data:`mnd.attack.VARIANTS`.
        task, targeted, hparams, **overrides: as :func:`mnd.attack.config_for`.
    """
    config = attack.config_for(variant, task=task, targeted=targeted, hparams=hparams, **overrides)
    device = next((p.device for p in model.parameters()), x.device)
    x = attack.quantize((x if x.ndim == 4 else x[None]).detach().to(device))
    labels = None if label is None else torch.tensor([int(label)], device=device)
    lab = attack.prepare_labels(model, x, labels, targeted=config.targeted)
    goal = lab.goal
    with torch.no_grad():
        rows = [_row(variant, 0, int(goal[0]), model(x), x, x, config, False)]
    if not bool(lab.attacked[0]):
        return rows
    reference = losses.CleanReference(x)
    z = x.clone()
    adam = attack._Adam(z, config.step_size) if config.optimizer == "adam" else None
    for step in range(config.max_iter + 1):
        if step > 0:
            with torch.no_grad():
                zq = attack.quantize(z)
                logits = model(zq)
                done = bool(attack.is_adversarial(logits, goal, targeted=config.targeted)[0])
                rows.append(_row(variant, step, int(goal[0]), logits, zq, x, config, done))
            if done:
                break
        if step == config.max_iter:
            break
        z.requires_grad_(True)
        loss, _ = attack.objective(model, z, reference, goal, config)
        (grad,) = torch.autograd.grad(loss.sum(), z)
        with torch.no_grad():
            z = adam.step(z.detach(), grad) if adam is not None else z.detach() - config.step_size * grad
            z = z.clamp(0, 1)
        if not bool(torch.isfinite(z).all()):
            raise FloatingPointError(f"{variant}: the iterate became non-finite (NaN or inf) at step {step + 1}")
    return rows


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
        preset: a :class:`mnd.grid.Preset`.
        results: its results folder.
        dataset, image, setting: which image and setting.
        variants: MND variants (default: every variant of the preset's methods).
        max_iter: iteration cap (default: the preset's).
    """
    from mnd import grid

    spec = preset.dataset(dataset)
    variants = list(variants or [m for m in preset.methods if m in attack.VARIANTS])
    cap = int(max_iter or preset.effective_max_iter(spec.task))
    path = trace_path(results, dataset, setting, image)
    if path.exists():
        rows = read(path)
        if sorted({r["variant"] for r in rows}) == sorted(variants) and all(r["max_iter"] == cap for r in rows):
            return rows
    with grid.threads(preset):
        rows = _traces(preset, spec, image, setting, variants, cap)
    write(path, rows)
    return rows


def _traces(preset: Any, spec: Any, image: str, setting: str, variants: Sequence[str], cap: int) -> list[dict[str, Any]]:
    from mnd import grid

    opened = grid.open_dataset(preset, spec)
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
