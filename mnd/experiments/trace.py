"""Per-iteration traces of Algorithm 1, for the book's look at each term of eq. (7).

:func:`run` runs :func:`mnd.core.attack.generate` on ONE image and records, through
its ``observer`` hook, what the 8-bit image looks like to the model and to
each loss term at every iteration: the trace is generate's own run, so it
stops where ``generate`` stops (tests/test_trace.py checks this).

:func:`~mnd.experiments.steps.terms` measures every term of eq. (7) between a clean and
an adversarial image; :func:`load_or_run` caches traces under a results folder,
where the grid also keeps the traces of its own runs (:mod:`mnd.experiments.steps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnd.core import attack, losses
from mnd.core.config import VARIANTS, AttackConfig, Task, config_for
from mnd.core.pixels import quantize
from mnd.experiments.grid import open_dataset
from mnd.experiments.presets import threads
from mnd.experiments.steps import (TRACE_COLUMNS, Recorder, keep, non_finite, read, step_row, terms, trace_path,
                                   write)

__all__ = ["TRACE_COLUMNS", "Recorder", "keep", "load_or_run", "read", "run", "terms", "trace_path", "write"]
"""The recording and the files are :mod:`mnd.experiments.steps`'s, here under their old names too."""


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
    recorder = Recorder(variant, x, config)
    result = attack.generate(model, x, labels, config=config, observer=recorder)
    reason = result.reason[0]
    if non_finite(reason):
        raise FloatingPointError(f"{variant}: {reason.split(':')[0]}")
    return recorder.rows or [step_row(variant, _clean_record(model, x, result, config), x, config)]


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

    Each variant's trace on disk with the same iteration cap is read back: the
    grid records those of its own runs on each data set's figure image, so a
    book page shows the steps of the very attack whose result its tables hold.
    The data set's model is loaded only for the variants missing, whose traces
    are computed here and kept (:func:`keep`).

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
    found: dict[str, list[dict[str, Any]]] = {}
    for variant in variants:
        path = trace_path(results, dataset, setting, image, variant)
        if path.exists():
            rows = read(path)
            if rows and all(r["variant"] == variant and r["max_iter"] == cap for r in rows):
                found[variant] = rows
    missing = [v for v in variants if v not in found]
    if missing:
        with threads(preset):
            computed = _traces(preset, spec, image, setting, missing, cap)
        for variant in missing:
            found[variant] = [r for r in computed if r["variant"] == variant]
            keep(results, dataset, setting, image, found[variant])
    return [row for variant in variants for row in found[variant]]


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
