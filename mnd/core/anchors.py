"""The paper's anchors (section IV-A-1), run through torchattacks.

Every anchor uses torchattacks' defaults (eps 8/255, alpha 2/255, 10 steps),
as the paper gives no other settings. In the targeted setting it aims at the
same least-likely class as eq. (5). Outputs are quantized to 8 bits and
success is decided on them, exactly as for MND: never for an output equal to
its input, never towards the true label (see :func:`mnd.core.attack.prepare_labels`).
With a ``margin`` > 0 (not in the paper) the attack sees the model through
:func:`mnd.core.attack.with_margin` and success needs that logit margin.

Besides the paper's anchors: three transfer attacks (:data:`TRANSFER_ANCHORS`,
torchattacks' TIFGSM, VMIFGSM and SINIFGSM, not in the paper), reference
points for how well an image made on one model fools another, and one control
(:data:`CONTROLS`): ``noise``, random signs of the same L-infinity budget and
no gradient, which answers "does an attack transfer better than noise of the
same size?".

>>> sorted(ANCHORS)
['bim', 'di2fgsm', 'mifgsm', 'noise', 'pgd', 'rfgsm', 'sinifgsm', 'tifgsm', 'vmifgsm']
>>> TABLE_ORDER[-4:], CONTROLS
(('tifgsm', 'vmifgsm', 'sinifgsm', 'noise'), ('noise',))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from mnd.core.attack import UNCHANGED, AttackResult, is_adversarial, margin_text, prepare_labels, with_margin
from mnd.core.judge import combined, judged_logits
from mnd.core.pixels import quantize
from mnd.errors import InputError


def _torchattacks(class_name: str, model: nn.Module, **kw: Any) -> Any:
    import torchattacks  # imported late: it is heavy and only the anchors need it

    return getattr(torchattacks, class_name)(model, **kw)


DEFAULT_EPS = 8 / 255


class SignNoise:
    """The control: each pixel moved by +eps or -eps, the sign drawn at random; the model is never asked.

    It has the call of a torchattacks attack (``attack(images, labels)``), so
    :func:`run` treats it as an anchor; labels and the targeted mode are
    ignored. The signs come from a CPU generator seeded with ``seed``, so a
    batch gets the same noise on every device; the output is clipped to [0, 1].

    Args:
        model: unused (the attack's contract).
        eps: the L-infinity budget, in [0, 1] units.
        seed: seeds the signs.
    """

    steps = 1
    """One draw: the iteration count :func:`run` reports."""

    def __init__(self, model: nn.Module, *, eps: float = DEFAULT_EPS, seed: int = 0) -> None:
        del model
        self.eps = float(eps)
        self.seed = int(seed)

    def set_mode_targeted_by_label(self, quiet: bool = False) -> None:
        """The targeted mode changes nothing: noise has no goal."""

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        signs = torch.randint(0, 2, images.shape, generator=generator).mul_(2).sub_(1)
        return (images + self.eps * signs.to(images)).clamp(0, 1)


ANCHORS: dict[str, Callable[..., Any]] = {
    "bim": partial(_torchattacks, "BIM"),
    "pgd": partial(_torchattacks, "PGD"),
    "mifgsm": partial(_torchattacks, "MIFGSM"),
    "di2fgsm": partial(_torchattacks, "DIFGSM"),
    "rfgsm": partial(_torchattacks, "RFGSM"),
    "tifgsm": partial(_torchattacks, "TIFGSM"),
    "vmifgsm": partial(_torchattacks, "VMIFGSM"),
    "sinifgsm": partial(_torchattacks, "SINIFGSM"),
    "noise": SignNoise,
}
"""Name -> constructor ``(model, **torchattacks_kwargs) -> torchattacks.Attack``."""

LABELS: dict[str, str] = {
    "bim": "BIM", "pgd": "PGD", "mifgsm": "MIFGSM", "di2fgsm": "DI2FGSM", "rfgsm": "RFGSM",
    "tifgsm": "TIFGSM", "vmifgsm": "VMIFGSM", "sinifgsm": "SINIFGSM", "noise": "random sign noise",
}
"""Display name of each anchor, as the paper prints it (the one source; :func:`mnd.experiments.method_label`)."""

PAPER_ANCHORS: tuple[str, ...] = ("pgd", "mifgsm", "bim", "di2fgsm")
"""The paper's four anchors (section IV-A-1), in the row order of its Tables I, II, VI and VII."""

TRANSFER_ANCHORS: tuple[str, ...] = ("tifgsm", "vmifgsm", "sinifgsm")
"""The transfer attacks (not in the paper), torchattacks' defaults, each step costing more than BIM's:
TIFGSM smooths the gradient with a 15x15 Gaussian and resizes the input at random (no momentum by default);
VMIFGSM adds momentum and the gradient variance of 5 neighbours (6 gradients a step); SINIFGSM adds
Nesterov momentum and 5 scaled copies of the input (5 gradients a step)."""

CONTROLS: tuple[str, ...] = ("noise",)
"""Controls, not attacks: same budget, no gradient (:class:`SignNoise`); the book shows them apart."""

TABLE_ORDER: tuple[str, ...] = (*PAPER_ANCHORS, "rfgsm", *TRANSFER_ANCHORS, *CONTROLS)
"""Anchor order of the result tables: the paper's order, then RFGSM (not in its PSNR/SSIM tables), the
transfer attacks and the controls (both not in the paper)."""

MOS_ORDER: tuple[str, ...] = ("bim", "di2fgsm", "mifgsm", "pgd", "rfgsm")
"""Anchor columns of the paper's MOS tables (III, IV, VIII, IX): BIM, DI2FGSM, MIFGSM, PGD, then RFGSM.
The transfer anchors and the controls are not among them: a study's default anchors are these, and a
study already drawn must keep its arguments."""

MOS_ANCHORS: tuple[str, ...] = tuple(a for a in MOS_ORDER if a in PAPER_ANCHORS)
"""The anchors the paper's subjective test compares MND with, in its MOS tables' order."""


def build(name: str, model: nn.Module, **kwargs: Any) -> Any:
    """The torchattacks attack ``name`` on ``model`` (torchattacks' defaults unless given)."""
    if name not in ANCHORS:
        raise InputError("--method", f"unknown anchor {name!r}; known: {', '.join(ANCHORS)}")
    return ANCHORS[name](model, **kwargs)


def run(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    targeted: bool = False,
    seed: int = 0,
    margin: float = 0.0,
    **kwargs: Any,
) -> AttackResult:
    """Attack a batch with an anchor; same contract as :func:`mnd.core.attack.generate`.

    Args:
        name: a key of ANCHORS.
        model: logits for [0, 1] inputs.
        x: clean images (N, 3, H, W) in [0, 1].
        labels: ground truth, or None for the clean prediction.
        targeted: aim at the least-likely class of eq. (5).
        seed: seeds torch before the attack (PGD's random start, DI2FGSM's and TIFGSM's resizing,
            VMIFGSM's neighbours) and the control's signs.
        margin: the logit margin success needs (:func:`mnd.core.attack.is_adversarial`).
        **kwargs: torchattacks settings (eps, alpha, steps, ...); the control takes only eps.
    """
    device = next((p.device for p in model.parameters()), x.device)
    x = quantize(x.detach().to(device))
    start = time.perf_counter()
    lab = prepare_labels(model, x, labels, targeted=targeted)
    rows = lab.attacked.nonzero().squeeze(1)
    if name in CONTROLS:
        kwargs.setdefault("seed", seed)
    attack = build(name, with_margin(model, lab.goal[rows], margin, targeted=targeted), **kwargs)
    if targeted:
        attack.set_mode_targeted_by_label(quiet=True)
    torch.manual_seed(seed)
    adversarial = x.clone()
    if rows.numel():
        adversarial[rows] = quantize(attack(x[rows], lab.goal[rows]))
    finite = torch.isfinite(adversarial).flatten(1).all(1)
    adversarial = torch.where(finite.view(-1, 1, 1, 1), adversarial, x)  # a non-finite image is never an output
    with torch.no_grad():
        logits = judged_logits(model, adversarial)
    adv_label = combined(logits).argmax(1)
    changed = (adversarial != x).flatten(1).any(1)
    success = is_adversarial(logits, lab, targeted=targeted, margin=margin) & lab.attacked & changed
    steps = int(getattr(attack, "steps", 1))
    reason = list(lab.reasons) or [""] * len(x)
    for i in (lab.attacked & ~success).nonzero().flatten().tolist():
        if not bool(finite[i]):
            reason[i] = "the attack returned non-finite values: the clean image is kept, not a success"
        elif not bool(changed[i]):
            reason[i] = UNCHANGED
        elif name in CONTROLS:
            reason[i] = f"not adversarial{margin_text(margin)} with random sign noise of this budget (a control)"
        else:
            reason[i] = (f"not adversarial{margin_text(margin)} after {steps} step{'s' if steps != 1 else ''} "
                         f"of {LABELS[name]}")
    return AttackResult(
        adversarial=adversarial.cpu(),
        success=success.cpu(),
        attacked=lab.attacked.cpu(),
        iterations=torch.where(lab.attacked, steps, 0).cpu(),
        clean_label=lab.clean.cpu(),
        adv_label=adv_label.cpu(),
        true_label=lab.true.cpu(),
        target_label=lab.target.cpu() if lab.target is not None else None,
        seconds=time.perf_counter() - start,
        extras={"eps": float(getattr(attack, "eps", DEFAULT_EPS))},
        reason=reason,
        margin=margin,
    )
