"""The methods: the MND ablation variants and the anchors, their order, labels and one call to run any of them.

The methods, their order and their display names are defined here once:
:data:`VARIANTS` (the MND ablation settings, from the hyper-parameter file),
:data:`ANCHORS` (torchattacks, fixed eps), :data:`TRANSFER_ANCHORS` (three of
them, transfer attacks not in the paper), :data:`CONTROLS` (random noise of the
same budget, not an attack), :data:`MIN_ANCHORS` (the
minimum-perturbation anchors, not in the paper), :data:`METHODS` (all),
:data:`REFINED` (MND followed by our refinement, not in the paper),
:data:`TABLE_ORDER` (the rows of the result tables: the paper's anchors, the
MND variants, then the methods not in the paper) and :func:`method_label`.

>>> TABLE_ORDER[:5], TABLE_ORDER[11], method_label("di2fgsm"), method_label("l2_ssim")
(('pgd', 'mifgsm', 'bim', 'di2fgsm', 'rfgsm'), 'mnd', 'DI2FGSM', 'l2-norm + SSIM')
>>> NOT_IN_PAPER  # doctest: +NORMALIZE_WHITESPACE
('mnd_refine', 'bim_min', 'pgd_min', 'ddn', 'fmn_l2', 'fmn_linf', 'alma_ssim', 'cw_l2',
 'tifgsm', 'vmifgsm', 'sinifgsm', 'noise')
>>> method_label("tifgsm@eps=4"), method_label("noise")
('TIFGSM (eps 4/255)', 'random sign noise')
>>> method_label("mnd_refine"), mnd_variant("mnd_refine@margin=1"), mnd_variant("ddn")
('MND + refinement (ours)', 'mnd', None)
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnd.core import anchors, attack, config, min_anchors, refine
from mnd.core.attack import AttackResult
from mnd.core.config import Task, config_for
from mnd.errors import InputError

VARIANTS: tuple[str, ...] = tuple(config.VARIANTS)
"""The MND settings of the ablation, in the hyper-parameter file's order (``no_norm`` ... ``mnd``)."""


ANCHORS: tuple[str, ...] = tuple(anchors.ANCHORS)
"""The fixed-budget anchors: torchattacks' (section IV-A-1, plus RFGSM and the transfer attacks) and the controls."""


TRANSFER_ANCHORS: tuple[str, ...] = anchors.TRANSFER_ANCHORS
"""The transfer attacks among the anchors (TIFGSM, VMIFGSM, SINIFGSM; not in the paper)."""


CONTROLS: tuple[str, ...] = anchors.CONTROLS
"""The controls among the anchors (random sign noise of the same budget, no gradient): not attacks, shown apart."""


MIN_ANCHORS: tuple[str, ...] = tuple(min_anchors.MIN_ANCHORS)
"""The minimum-perturbation anchors (smallest-eps BIM and PGD, adversarial-library's minimum-norm attacks)."""


REFINED: dict[str, str] = {"mnd_refine": "mnd"}
"""MND followed by our refinement (:mod:`mnd.core.refine`, not in the paper), and the MND variant each refines:
its hyper-parameter file, ``max_iter`` and overrides apply to that variant."""


REFINED_LABELS: dict[str, str] = {"mnd_refine": "MND + refinement (ours)"}
"""Display name of each refined method."""


NOT_IN_PAPER: tuple[str, ...] = tuple(REFINED) + MIN_ANCHORS + TRANSFER_ANCHORS + CONTROLS
"""The methods the paper does not have: the tables show them in their own block, labelled so."""


METHODS: tuple[str, ...] = VARIANTS + ANCHORS + tuple(REFINED) + MIN_ANCHORS
"""Every method ``mnd attack --method`` and a preset accept."""


TABLE_ORDER: tuple[str, ...] = tuple(a for a in anchors.TABLE_ORDER if a not in NOT_IN_PAPER) + VARIANTS + NOT_IN_PAPER
"""Row order of the result tables: the paper's Tables I, II, VI and VII (anchors, then the ablation
settings), then the methods not in the paper."""


def order_key(name: str) -> tuple[int, str, tuple[tuple[str, float], ...], str]:
    """Sort key of method names: :data:`TABLE_ORDER`, then the others by base name and their sweep parameters
    as numbers (eps 1, 2, 4, 16; not 1, 16, 2, 4 as text).

    >>> sorted(["pgd@eps=16", "pgd@eps=2", "ddn", "mnd", "pgd@eps=1", "pgd"], key=order_key)
    ['pgd', 'mnd', 'ddn', 'pgd@eps=1', 'pgd@eps=2', 'pgd@eps=16']
    """
    base, params = parse_method(name)
    rank = TABLE_ORDER.index(name) if name in TABLE_ORDER else len(TABLE_ORDER)
    return rank, base, tuple(sorted(params.items())), name


def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


SWEEPS: dict[str, str] = {**{a: "eps" for a in ANCHORS}, **{v: "margin" for v in (*VARIANTS, *REFINED)}}
"""The parameter a method may be swept over, as ``<method>@<param>=<value>``: a fixed anchor's budget
``eps`` (in 1/255 units; its step is eps/4, as torchattacks' 2/255 for 8/255; a control has no step), an MND
method's ``margin``."""


BOOSTER_PARAMS: dict[str, str] = {"diversity": "diversity", "translation": "translation", "step": "step_size"}
"""Parameters an MND variant (not a refined one) also takes, beside its ``margin``: the transfer boosters
(:mod:`mnd.core.boosters`) and Adam's step, as AttackConfig fields: ``mnd@margin=20,diversity=0.5,translation=7,step=0.001``."""


def parse_method(name: str) -> tuple[str, dict[str, float]]:
    """A method name split into its base and its sweep parameters: ``"bim@eps=4"`` -> ``("bim", {"eps": 4.0})``.

    Several parameters are separated by commas (``"x@eps=4,steps=10"``).

    >>> parse_method("mnd@margin=2"), parse_method("ddn")
    (('mnd', {'margin': 2.0}), ('ddn', {}))

    Raises:
        InputError: a malformed name (empty base, a parameter without ``=``, a value that is not a number).
    """
    base, at, tail = name.partition("@")
    if not base or (at and not tail):
        raise InputError("method", f"malformed method name {name!r}; expected <base> or <base>@<param>=<value>")
    params: dict[str, float] = {}
    for part in tail.split(",") if tail else []:
        key, eq, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not key or not eq or not math.isfinite(number):
            raise InputError("method", f"malformed sweep parameter {part!r} in {name!r}; expected <param>=<number>")
        params[key] = number
    return base, params


def method_label(method: str) -> str:
    """Display name of a method as the paper's tables print it (a sweep point: with its parameter)."""
    base, params = parse_method(method)
    if base in VARIANTS:
        text = config.VARIANTS[base].label
    elif base in REFINED_LABELS:
        text = REFINED_LABELS[base]
    else:
        text = anchors.LABELS.get(base) or min_anchors.LABELS.get(base, base)
    if "eps" in params:
        text += f" (eps {params['eps']:g}/255)"
    if "margin" in params:
        text += f" (margin {params['margin']:g})"
    boosters = [f"{key} {params[key]:g}" for key in BOOSTER_PARAMS if key in params]
    if boosters:
        text += f" ({', '.join(boosters)})"
    return text


def mnd_variant(method: str) -> str | None:
    """The MND variant ``method`` runs (itself, or the one a refined method refines); None for an anchor."""
    base = parse_method(method)[0]
    return base if base in VARIANTS else REFINED.get(base)


def is_mnd(method: str) -> bool:
    """Whether ``method`` runs Algorithm 1 (an MND variant or a refined one: the hyper-parameter file and
    ``max_iter`` apply)."""
    return mnd_variant(method) is not None


def check_method(method: str) -> None:
    """Raise InputError for a name that is not a method of :data:`METHODS` or a sweep point of one (:data:`SWEEPS`)."""
    base, params = parse_method(method) if "@" in method else (method, {})
    if base not in METHODS:
        raise InputError("--method", f"unknown method {method!r}; known: {', '.join(METHODS)}, or a sweep point "
                         "such as bim@eps=4 or mnd@margin=2")
    for key, value in params.items():
        if key in BOOSTER_PARAMS and base in VARIANTS:
            problem = {"diversity": not 0 <= value <= 1, "translation": not config.valid_translation(int(value))
                       or value != int(value), "step": not 0 < value <= 1}[key]
            if problem:
                raise InputError("--method", f"{method!r}: {key} out of range")
            continue
        if SWEEPS.get(base) != key:
            raise InputError("--method", f"{method!r}: {base} cannot be swept over {key!r}"
                             + (f" (only {SWEEPS[base]})" if base in SWEEPS else " (it has no sweep parameter)"))
        if value < 0 or (key == "eps" and not 0 < value <= 255):
            raise InputError("--method", f"{method!r}: {key} out of range")


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
    margin: float | None = None,
    observer: attack.Observer | None = None,
    **overrides: Any,
) -> AttackResult:
    """Attack a batch with an MND variant (via its preset), MND + refinement, or an anchor (fixed or minimum).

    ``margin`` (the attack-strength knob, not in the paper) applies to every
    method; None keeps the hyper-parameter file's for MND (0, the paper, in
    the packaged file) and 0 for the anchors. ``hparams`` and ``overrides`` (AttackConfig fields) to the MND
    variants only; ``anchor_kwargs`` to the anchors only (torchattacks'
    settings, or a minimum-perturbation anchor's budget). A refined method's knobs come from
    :data:`mnd.core.refine.REFINE_FILE`. ``observer`` sees every iteration of an MND
    variant (:func:`mnd.core.attack.generate`'s); the other methods have none.
    """
    check_method(method)
    seed_everything(seed)
    method, params = parse_method(method)
    if method in anchors.ANCHORS or method in min_anchors.MIN_ANCHORS:
        run = anchors.run if method in anchors.ANCHORS else min_anchors.run
        kwargs = dict(anchor_kwargs or {})
        if "eps" in params:  # a sweep point: eps in 1/255 units, the step a quarter of it (a control has none)
            kwargs.update(eps=params["eps"] / 255)
            if method not in CONTROLS:
                kwargs.update(alpha=params["eps"] / 4 / 255)
        return run(method, model, x, labels, targeted=targeted, seed=seed, margin=margin or 0.0, **kwargs)
    config = mnd_config(method, params, task=task, targeted=targeted, hparams=hparams, margin=margin, **overrides)
    if method in REFINED:
        return refine.generate_refined(model, x, labels, config=config)
    return attack.generate(model, x, labels, config=config, observer=observer)


def mnd_config(
    method: str,
    params: dict[str, float] | None = None,
    *,
    task: Task = "imagenet",
    targeted: bool = False,
    hparams: str | Path | None = None,
    margin: float | None = None,
    **overrides: Any,
) -> config.AttackConfig:
    """The configuration :func:`run_method` runs an MND method with (not an anchor).

    Args:
        method: an MND variant or a refined method, without its parameters.
        params: its parameters (:func:`parse_method`): a margin, the transfer boosters.
        task, targeted, hparams, margin, **overrides: as :func:`run_method`.
    """
    params = params or {}
    if "margin" in params:
        margin = params["margin"]
    if margin is not None:
        overrides["margin"] = margin
    for key, field in BOOSTER_PARAMS.items():
        if key in params:
            overrides[field] = int(params[key]) if key == "translation" else params[key]
    return config_for(REFINED.get(method, method), task=task, targeted=targeted, hparams=hparams, **overrides)
