"""The methods: the MND ablation variants and the anchors, their order, labels and one call to run any of them.

The methods, their order and their display names are defined here once:
:data:`VARIANTS` (the MND ablation settings, from the hyper-parameter file),
:data:`ANCHORS` (torchattacks), :data:`METHODS` (both), :data:`TABLE_ORDER`
(the rows of the paper's Tables I, II, VI and VII) and :func:`method_label`.

>>> TABLE_ORDER[:5], TABLE_ORDER[-1], method_label("di2fgsm"), method_label("l2_ssim")
(('pgd', 'mifgsm', 'bim', 'di2fgsm', 'rfgsm'), 'mnd', 'DI2FGSM', 'l2-norm + SSIM')
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnd.core import anchors, attack, config
from mnd.core.attack import AttackResult
from mnd.core.config import Task, config_for
from mnd.errors import InputError

VARIANTS: tuple[str, ...] = tuple(config.VARIANTS)
"""The MND settings of the ablation, in the hyper-parameter file's order (``no_norm`` ... ``mnd``)."""


ANCHORS: tuple[str, ...] = tuple(anchors.ANCHORS)
"""The torchattacks anchors (section IV-A-1, plus RFGSM)."""


METHODS: tuple[str, ...] = VARIANTS + ANCHORS
"""Every method ``mnd attack --method`` and a preset accept."""


TABLE_ORDER: tuple[str, ...] = anchors.TABLE_ORDER + VARIANTS
"""Row order of the paper's Tables I, II, VI and VII (anchors, then the ablation settings)."""


def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def method_label(method: str) -> str:
    """Display name of a method as the paper's tables print it."""
    if method in VARIANTS:
        return config.VARIANTS[method].label
    return anchors.LABELS.get(method, method)


def check_method(method: str) -> None:
    """Raise InputError for a name that is neither an MND variant nor an anchor."""
    if method not in METHODS:
        raise InputError("--method", f"unknown method {method!r}; known: {', '.join(METHODS)}")


def run_method(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor | None,
    method: str,
    *,
    task: Task = "imagenet",
    targeted: bool = False,
    seed: int = 0,
    hparams: str | Path | None = None,
    anchor_kwargs: dict[str, Any] | None = None,
    **overrides: Any,
) -> AttackResult:
    """Attack a batch with an MND variant (via its preset) or an anchor."""
    check_method(method)
    seed_everything(seed)
    if method in anchors.ANCHORS:
        return anchors.run(method, model, x, labels, targeted=targeted, seed=seed, **(anchor_kwargs or {}))
    config = config_for(method, task=task, targeted=targeted, hparams=hparams, **overrides)
    return attack.generate(model, x, labels, config=config)
