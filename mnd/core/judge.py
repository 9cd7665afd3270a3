"""Who is attacked, towards what, and when an image counts as adversarial (the success rule of every method).

:func:`prepare_labels` gives the clean predictions, the label attacked away
from and the eq. (5) target; :func:`is_adversarial` is the one success rule
(the paper's argmax, or a logit margin); :class:`MarginView` makes any attack
margin-aware. For an ensemble surrogate (:class:`mnd.models.nets.Ensemble`)
:func:`judged_logits` gives every member's logits, shape (N, M, classes), and
:func:`is_adversarial` then asks every member to be fooled; :func:`combined`
gives the logits the loss and the labels use (the members' mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mnd.core import losses
from mnd.core.pixels import quantize


def judged_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Float32 logits that decide success: (N, classes), or (N, M, classes) for an ensemble's M members.

    An ensemble is any module with a ``member_logits`` method
    (:class:`mnd.models.nets.Ensemble`); gradients flow when enabled.
    """
    member_logits = getattr(model, "member_logits", None)
    return (member_logits(x) if member_logits is not None else model(x)).float()


def combined(logits: torch.Tensor) -> torch.Tensor:
    """The logits the loss and the labels use: an ensemble's member mean (what its forward returns), else as is."""
    return logits.mean(1) if logits.ndim == 3 else logits

NOT_ATTACKED_MISCLASSIFIED = "already misclassified: not attacked"


NOT_ATTACKED_ONE_CLASS = "the model has a single class: no other class to reach, not attacked"


NOT_ATTACKED_TARGET_IS_TRUE = (
    "the eq. (5) target (least-likely class) is the true label: no target to reach, not attacked"
)


NOT_ATTACKED_NON_FINITE = "the model's output on the clean image is not finite (NaN or inf): not attacked"


UNCHANGED = "the 8-bit output equals the input: not a success"


def margin_text(margin: float) -> str:
    """`` by a logit margin of M`` for a failure's reason, empty for the paper's margin 0."""
    return f" by a logit margin of {margin:g}" if margin else ""


@dataclass(frozen=True)
class Labels:
    """Who is attacked and towards what (see :func:`prepare_labels`).

    ``reasons`` says, per image, why it is not attacked ("" where it is).
    """

    clean: torch.Tensor
    true: torch.Tensor
    target: torch.Tensor | None
    attacked: torch.Tensor
    logits: torch.Tensor
    reasons: tuple[str, ...] = ()

    @property
    def goal(self) -> torch.Tensor:
        """The label the loss uses: the target when targeted, else the true label."""
        return self.target if self.target is not None else self.true


@torch.no_grad()
def prepare_labels(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None, *, targeted: bool) -> Labels:
    """Clean predictions, the label to attack away from, and the eq. (5) target.

    Without ground truth the clean prediction stands in. An image is not
    attacked when its clean prediction differs from its ground truth, when
    the model's clean output is not finite, when the model has a single
    class, or (targeted) when the eq. (5) target is the true label (all
    outputs equal): the goal of an attack is never the true label.
    """
    logits = judged_logits(model, quantize(x))
    clean = combined(logits).argmax(1)
    true = clean if labels is None else labels.to(clean.device).long().view(-1)
    if true.shape[0] != x.shape[0]:
        raise ValueError(f"{true.shape[0]} labels for {x.shape[0]} images")
    target = losses.least_likely_target(combined(logits)) if targeted else None
    finite = torch.isfinite(logits).flatten(1).all(1)
    checks = [
        (torch.full_like(finite, logits.shape[1] < 2), NOT_ATTACKED_ONE_CLASS),
        (~finite, NOT_ATTACKED_NON_FINITE),
        (clean != true, NOT_ATTACKED_MISCLASSIFIED),
        (target == true if target is not None else torch.zeros_like(finite), NOT_ATTACKED_TARGET_IS_TRUE),
    ]
    reasons = [""] * x.shape[0]
    attacked = torch.ones_like(finite)
    for failed, why in checks:
        for i in failed.nonzero().flatten().tolist():
            reasons[i] = reasons[i] or why
        attacked &= ~failed
    return Labels(clean=clean, true=true, target=target, attacked=attacked, logits=logits, reasons=tuple(reasons))


def is_adversarial(logits: torch.Tensor, labels: Labels | torch.Tensor, *, targeted: bool,
                   margin: float = 0.0) -> torch.Tensor:
    """Non-targeted: the top class is not the true one; targeted: it is the target.

    With ``margin`` > 0 (the attack-strength knob, not in the paper) the win
    must be by at least ``margin`` logits: non-targeted, the best other class
    beats the true one by ``margin``; targeted, the target beats every other
    class by ``margin``. ``margin`` 0 is the paper's rule, the argmax, exactly.
    Rows with a non-finite logit are never adversarial (their top class means nothing).
    ``logits`` of shape (N, M, classes) (an ensemble's members, :func:`judged_logits`):
    adversarial when adversarial for every member.

    >>> u = torch.tensor([[2.0, 3.0, 0.0]])
    >>> [is_adversarial(u, torch.tensor([0]), targeted=False, margin=m).item() for m in (0.0, 1.0, 1.5)]
    [True, True, False]
    """
    goal = labels.goal if isinstance(labels, Labels) else labels
    if logits.ndim == 3:  # an ensemble's members (N, M, classes): every member must be fooled
        members = [is_adversarial(logits[:, m], goal, targeted=targeted, margin=margin) for m in range(logits.shape[1])]
        return torch.stack(members, 1).all(1)
    finite = torch.isfinite(logits).all(1)
    if margin == 0:
        pred = logits.argmax(1)
        return (pred == goal if targeted else pred != goal) & finite
    idx = goal.long().view(-1, 1)
    own = logits.gather(1, idx).squeeze(1)
    best_other = logits.scatter(1, idx, float("-inf")).amax(1)
    lead = own - best_other if targeted else best_other - own
    return (lead >= margin) & finite


class MarginView(nn.Module):
    """``model`` with the goal's logit moved by ``margin`` against the attacker.

    Non-targeted, the true class's logit is raised by ``margin``; targeted, the
    target's is lowered by it. So an attack that stops when its view's argmax
    is adversarial stops only when the real logits meet :func:`is_adversarial`'s
    margin: any attack becomes margin-aware without knowing it. ``goal`` has
    one label per row of the batches the attack passes (it attacks those rows).
    """

    def __init__(self, model: nn.Module, goal: torch.Tensor, margin: float, *, targeted: bool) -> None:
        super().__init__()
        self.model, self.goal, self.margin, self.targeted = model, goal, float(margin), targeted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        shift = torch.zeros_like(logits).scatter(1, self.goal.long().view(-1, 1).to(logits.device), self.margin)
        return logits - shift if self.targeted else logits + shift


def with_margin(model: nn.Module, goal: torch.Tensor, margin: float, *, targeted: bool) -> nn.Module:
    """``model`` itself for ``margin`` 0 (the paper: nothing changes), else its :class:`MarginView`."""
    return model if margin == 0 else MarginView(model, goal, margin, targeted=targeted)
