"""Algorithm 1: MND adversarial image generation.

``generate(model, x, labels, config=...)`` starts at Z = X and minimises
eq. (1), ``L_adv(Z) + L_pqp(Z, X)``, image by image in a batch: each image
stops the moment its 8-bit version is adversarial, and finished images leave
the batch. The returned images are exactly what a PNG file holds, and
success is always decided on them, never on the float iterate.

The settings come from :mod:`mnd.core.config`:

>>> from mnd.core.config import config_for
>>> cfg = config_for("mnd", task="imagenet", targeted=True)
>>> cfg.betas, cfg.r, cfg.step_size, cfg.max_iter
((2.0, 0.1, 2.0), 0.0625, 0.0001, 1000)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from mnd.core import boosters, losses
from mnd.core.config import AttackConfig
from mnd.core.descent import Adam, descent_step
from mnd.core.judge import (  # noqa: F401 (the success rule's names, re-exported from their old home)
    NOT_ATTACKED_MISCLASSIFIED,
    NOT_ATTACKED_NON_FINITE,
    NOT_ATTACKED_ONE_CLASS,
    NOT_ATTACKED_TARGET_IS_TRUE,
    UNCHANGED,
    Labels,
    MarginView,
    combined,
    is_adversarial,
    judged_logits,
    margin_text,
    prepare_labels,
    with_margin,
)
from mnd.core.pixels import quantize


@dataclass
class AttackResult:
    """Outcome of one attack on a batch. All tensors have N rows, on the CPU.

    Attributes:
        adversarial: (N, C, H, W) 8-bit-exact, finite images in [0, 1].
            Failures hold their best attempt; images not attacked hold the
            clean image.
        success: the 8-bit image is adversarial in float32 and differs from
            the clean image (False where not attacked).
        attacked: False for images that cannot be attacked (the model
            already gets them wrong, its clean output is not finite, or there
            is no other class to reach): they are left out of success rates,
            never counted as free successes.
        iterations: gradient steps taken (0 where not attacked).
        clean_label: the model's prediction on the clean image.
        adv_label: the model's prediction on ``adversarial``.
        true_label: the label attacked away from (ground truth, or the clean
            prediction when no ground truth was given).
        target_label: the eq. (5) target when targeted, else None.
        seconds: wall time of the whole batch.
        extras: method-specific values (e.g. ``eps`` of an anchor).
        margin: the logit margin success required (:func:`is_adversarial`; 0: the paper's argmax).
        reason: per image, why it is not a success ("" for a success): not
            attacked and why, not adversarial after the iteration budget,
            non-finite values, or an output equal to the input. Empty
            strings when not given.
    """

    adversarial: torch.Tensor
    success: torch.Tensor
    attacked: torch.Tensor
    iterations: torch.Tensor
    clean_label: torch.Tensor
    adv_label: torch.Tensor
    true_label: torch.Tensor
    target_label: torch.Tensor | None
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)
    reason: list[str] = field(default_factory=list)
    margin: float = 0.0

    def __post_init__(self) -> None:
        if not self.reason:
            self.reason = [""] * len(self)
        if len(self.reason) != len(self):
            raise ValueError(f"{len(self.reason)} reasons for {len(self)} images")

    def __len__(self) -> int:
        return int(self.success.shape[0])


STOPPED_NON_FINITE_LOGITS = "non-finite logits or iterate"


STOPPED_NON_FINITE_GRADIENT = "non-finite loss or gradient"
"""How the reason of an image stopped for non-finite values begins (float32 only)."""


def objective(
    model: nn.Module,
    z: torch.Tensor,
    reference: losses.CleanReference,
    goal: torch.Tensor,
    config: AttackConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (1) per image: ``L_adv(Z) + L_pqp(Z, X)``. Returns (loss, logits).

    The logits are :func:`mnd.core.judge.judged_logits` (an ensemble's members,
    (N, M, classes)); eq. (3)/(4) reads their mean. With the transfer
    boosters of ``config`` (``diversity``, ``translation``) the adversarial
    term's model sees :func:`mnd.core.boosters.boosted` Z, drawn with
    ``generator`` (seeded 0 when None); the perceptual term sees Z.

    ``reference`` holds the clean batch X and its cached statistics. With
    ``config.straight_through`` the model and the perceptual loss see the
    8-bit image while gradients pass to Z unchanged, so the logits also
    decide success.
    """
    # quantize(z) + (z - z) is exactly the 8-bit image, with d seen / d z = 1.
    seen = quantize(z).detach() + (z - z.detach()) if config.straight_through else z
    shown = seen
    if config.diversity or config.translation:
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        shown = boosters.boosted(seen, diversity=config.diversity, translation=config.translation, generator=generator)
    logits = judged_logits(model, shown)
    adv = losses.adversarial_loss(combined(logits), goal, targeted=config.targeted, r=config.r)
    return adv + perceptual_term(seen, reference, config), logits


def perceptual_term(z: torch.Tensor, reference: losses.CleanReference, config: AttackConfig) -> torch.Tensor:
    """Eq. (7) per image, ``L_pqp(Z, X)``, with the weights and norms of ``config`` and X's cached statistics."""
    return losses.perceptual_loss(z, reference.x, betas=config.betas, deviation=config.deviation,
                                  gradient=config.gradient, reduction=config.reduction, l2_form=config.l2_form,
                                  reference=reference)


@dataclass(frozen=True)
class StepRecord:
    """What one iteration of Algorithm 1 saw, for an observer of :func:`generate`.

    Given once per iteration, after the 8-bit images were classified and
    before the step; tensors have one row per image still running and must
    not be changed. An image handed to float32 (``amp``) is seen again at the
    same iteration, by its float32 check.

    Attributes:
        rows: (k,) the images' rows in the batch.
        iterations: (k,) gradient steps each has taken (t of eq. 21).
        iterate: (k, C, H, W) the iterate Z^t.
        image: (k, C, H, W) its 8-bit version, which was classified.
        goal: (k,) the label the loss uses (the target when targeted).
        logits: (k, classes) the model's float32 outputs on ``image`` (an ensemble's member mean; those
            of the low-precision pass under ``amp``, except where it said
            adversarial: those are re-checked in float32).
        adv_loss: (k,) eq. (3) or (4) on ``logits``.
        adversarial: (k,) the image stops here as a success.
    """

    rows: torch.Tensor
    iterations: torch.Tensor
    iterate: torch.Tensor
    image: torch.Tensor
    goal: torch.Tensor
    logits: torch.Tensor
    adv_loss: torch.Tensor
    adversarial: torch.Tensor


Observer = Callable[[StepRecord], None]


@dataclass(eq=False)
class _Running:
    """The images still iterating and everything kept per image, one row each.

    Attributes:
        rows: (k,) their rows in the batch.
        z: (k, C, H, W) the iterate, always finite.
        steps: (k,) gradient steps taken.
        adam: Adam's state (None for plain gradient descent).
        goal: (k,) the label the loss uses.
        reference: the clean images' cached statistics.
        last_image: (k, C, H, W) the 8-bit image last classified (-1: none yet).
        last_logits: (k, classes) its float32 logits.
    """

    rows: torch.Tensor
    z: torch.Tensor
    steps: torch.Tensor
    adam: Adam | None
    goal: torch.Tensor
    reference: losses.CleanReference
    last_image: torch.Tensor
    last_logits: torch.Tensor

    @classmethod
    def start(cls, x: torch.Tensor, lab: Labels, rows: torch.Tensor, z: torch.Tensor, steps: torch.Tensor,
              adam: Adam | None, *, at_clean: bool) -> _Running:
        """Images ``rows`` of the batch ``x`` at iterate ``z``; ``at_clean``: Z = X, whose logits are known."""
        last_image = z.clone() if at_clean else torch.full_like(z, -1.0)
        return cls(rows, z, steps, adam, lab.goal[rows], losses.CleanReference(x[rows]), last_image, lab.logits[rows])

    @classmethod
    def joined(cls, parts: list[_Running], x: torch.Tensor, lab: Labels) -> _Running:
        """Several sets of images as one, each image classified anew."""
        rows, z, steps = (torch.cat([getattr(p, k) for p in parts]) for k in ("rows", "z", "steps"))
        adam = Adam.joined([p.adam for p in parts if p.adam is not None]) if parts[0].adam is not None else None
        return cls.start(x, lab, rows, z, steps, adam, at_clean=False)

    def keep(self, rows: torch.Tensor) -> _Running:
        """Only the images at ``rows`` (indices into this state)."""
        return _Running(
            self.rows[rows], self.z[rows], self.steps[rows], self.adam.keep(rows) if self.adam is not None else None,
            self.goal[rows], self.reference.subset(rows), self.last_image[rows], self.last_logits[rows],
        )

    def classify(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """Float32 logits of the 8-bit ``image``; the model sees only the rows that changed.

        An 8-bit image that did not change since it was last classified
        (early on, most of them: Adam moves pixels 1e-4 a step) is not
        classified again.
        """
        changed = (image != self.last_image).flatten(1).any(1).nonzero().squeeze(1)
        if changed.numel():
            self.last_logits = self.last_logits.clone()
            self.last_logits[changed] = judged_logits(model, image[changed])
            self.last_image = image
        return self.last_logits


@dataclass
class _Outputs:
    """What the batch returns, filled in as images finish (batch rows)."""

    adversarial: torch.Tensor
    best_loss: torch.Tensor
    success: torch.Tensor
    iterations: torch.Tensor
    reason: list[str]

    @classmethod
    def start(cls, x: torch.Tensor, lab: Labels) -> _Outputs:
        """Every image at its clean start, its reason the reason it is not attacked."""
        n = x.shape[0]
        return cls(
            adversarial=x.clone(),
            best_loss=torch.full((n,), float("inf"), device=x.device),
            success=torch.zeros(n, dtype=torch.bool, device=x.device),
            iterations=torch.zeros(n, dtype=torch.long, device=x.device),
            reason=list(lab.reasons) or [""] * n,
        )


@dataclass(eq=False)
class _Check:
    """The verdict on the 8-bit images of the running images, one row each."""

    logits: torch.Tensor  # (k, classes) float32
    adv_loss: torch.Tensor  # (k,) eq. (3) or (4)
    done: torch.Tensor  # adversarial in float32
    rejected: torch.Tensor  # adversarial in low precision only
    broken: torch.Tensor  # a non-finite 8-bit image
    bad: torch.Tensor  # non-finite logits or 8-bit image, not done


def _low_precision(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def _non_finite(*tensors: torch.Tensor) -> torch.Tensor:
    """Rows (dim 0) in which any of the tensors holds a NaN or inf.

    A row's sum, accumulated in float64, is NaN or infinite exactly when the
    row holds a NaN or an inf (float32 values cannot add up beyond float64's
    range): one reduction instead of four element-wise passes.
    """
    bad = torch.zeros(tensors[0].shape[0], dtype=torch.bool, device=tensors[0].device)
    for t in tensors:
        bad |= ~torch.isfinite(t.detach().reshape(t.shape[0], -1).sum(1, dtype=torch.float64))
    return bad


def _check(model: nn.Module, image: torch.Tensor, logits: torch.Tensor, goal: torch.Tensor, config: AttackConfig,
           *, low_precision: bool) -> _Check:
    """Is each 8-bit image adversarial? In low precision a yes is re-checked in float32 at once."""
    broken = _non_finite(image)  # never happens unless an update overflowed; never an output
    done = is_adversarial(logits, goal, targeted=config.targeted, margin=config.margin) & ~broken
    rejected = torch.zeros_like(done)
    if low_precision and bool(done.any()):
        hits = done.nonzero().squeeze(1)
        with torch.no_grad():
            logits = logits.clone()
            logits[hits] = judged_logits(model, image[hits])
        done = is_adversarial(logits, goal, targeted=config.targeted, margin=config.margin) & ~broken
        rejected[hits] = ~done[hits]
    adv_loss = losses.adversarial_loss(combined(logits), goal, targeted=config.targeted, r=config.r)
    bad = (_non_finite(logits) | broken) & ~done
    return _Check(logits, adv_loss, done, rejected, broken, bad)


def _keep_best(out: _Outputs, running: _Running, image: torch.Tensor, check: _Check) -> None:
    """Record each image's outcome so far: a success, or its best attempt (lowest L_adv)."""
    rows = running.rows
    better = (check.done | (torch.isfinite(check.adv_loss) & (check.adv_loss < out.best_loss[rows]))) & ~check.broken
    out.adversarial[rows] = torch.where(better.view(-1, 1, 1, 1), image, out.adversarial[rows])
    out.best_loss[rows] = torch.where(better, check.adv_loss, out.best_loss[rows])
    out.iterations[rows] = running.steps
    out.success[rows] = check.done


def _observe(observer: Observer, running: _Running, image: torch.Tensor, check: _Check | None,
             config: AttackConfig) -> None:
    """Hand the iteration to the observer; without a check, Z = X and its clean logits are known."""
    if check is None:
        logits = combined(running.last_logits)
        adv_loss = losses.adversarial_loss(logits, running.goal, targeted=config.targeted, r=config.r)
        done = torch.zeros_like(running.rows, dtype=torch.bool)
    else:
        logits, adv_loss, done = combined(check.logits), check.adv_loss, check.done
    observer(StepRecord(running.rows, running.steps, running.z, image, running.goal, logits, adv_loss, done))


def _set_aside(running: _Running, mask: torch.Tensor, why: str, out: _Outputs, low_precision: bool,
               where: str) -> list[_Running]:
    """The ``mask`` images, handed back to continue in float32 (low precision), else stopped as failures."""
    if not bool(mask.any()):
        return []
    if low_precision:
        return [running.keep(mask.nonzero().squeeze(1))]
    for i, k in zip(running.rows[mask].tolist(), running.steps[mask].tolist()):
        out.reason[i] = f"{why} at iteration {k} {where}: stopped as a failure (best finite attempt kept)"
    return []


def _forward(model: nn.Module, running: _Running, config: AttackConfig, autocast: Any,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. (1) at the iterate, ready for its gradient (eq. 20): (z, loss, logits)."""
    z = running.z.detach().requires_grad_(True)
    with autocast:
        loss, logits = objective(model, z, running.reference, running.goal, config, generator)
    return z, loss, logits


def _iterate(
    model: nn.Module,
    running: _Running,
    out: _Outputs,
    config: AttackConfig,
    *,
    low_precision: bool,
    at_clean: bool,
    bar: Any,
    observer: Observer | None,
    region: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> list[_Running]:
    """Algorithm 1 on the ``running`` images until each is adversarial or out of steps.

    Each iteration: classify the 8-bit image (with ``straight_through``, by
    the forward pass of eq. (1)), stop the images that are adversarial or out
    of steps, take the gradient of eq. (1) (eq. 20) and one step of eq. (21).

    In low precision an image whose check says adversarial is re-checked in
    float32 at once, and an image whose logits, loss or gradient are not
    finite is not updated: both are handed back (returned) to continue in
    float32 from where they are. In float32, non-finite values stop the image
    as a failure that keeps its best finite attempt, with a reason.

    Args:
        running: the images to run and their state.
        out: the batch's outputs, updated in place.
        at_clean: every image is at Z = X, known not to be adversarial (no
            check before the first step); else every image is classified first.
        observer: called once per iteration (see :class:`StepRecord`).
        region: the pixels each step may change (see :func:`generate`), None: all.
    """
    dtype = _low_precision(running.z.device)
    autocast = torch.autocast(running.z.device.type, dtype=dtype) if low_precision else contextlib.nullcontext()
    where = f"in {str(dtype).removeprefix('torch.')}" if low_precision else "in float32"
    handed: list[_Running] = []
    known_clean = at_clean and not config.straight_through
    while running.rows.numel():
        image = quantize(running.z)
        z = loss = check = None
        if config.straight_through:  # one forward pass: the 8-bit image decides success and gives the gradient
            z, loss, logits = _forward(model, running, config, autocast)
            check = _check(model, image, logits.detach().float(), running.goal, config, low_precision=low_precision)
        elif not known_clean:
            with torch.no_grad(), autocast:
                logits = running.classify(model, image)
            check = _check(model, image, logits, running.goal, config, low_precision=low_precision)
        known_clean = False
        if check is not None:
            _keep_best(out, running, image, check)
        if observer is not None:
            _observe(observer, running, image, check, config)

        stop = running.steps >= config.max_iter
        if check is not None:
            stop = stop | check.done | check.rejected | check.bad
        z_rows: torch.Tensor | slice = slice(None)  # the rows of z that are still running
        if bool(stop.any()):  # a host sync, as is the changed-rows lookup
            if check is not None:
                handed += _set_aside(running, check.rejected, "not adversarial in float32", out, low_precision, where)
                handed += _set_aside(running, check.bad, STOPPED_NON_FINITE_LOGITS, out, low_precision, where)
            if loss is not None:
                loss, z_rows = loss[~stop], ~stop
            running = running.keep((~stop).nonzero().squeeze(1))
            if not running.rows.numel():
                break

        if loss is None:
            z, loss, _ = _forward(model, running, config, autocast, generator)
        (grad,) = torch.autograd.grad(loss.sum(), z)  # eq. (20)
        grad = grad[z_rows]
        bad = _non_finite(loss, grad)
        if bool(bad.any()):
            handed += _set_aside(running, bad, STOPPED_NON_FINITE_GRADIENT, out, low_precision, where)
            grad = grad[~bad]
            running = running.keep((~bad).nonzero().squeeze(1))
            if not running.rows.numel():
                break
        running.z = descent_step(running.z, grad, step_size=config.step_size, adam=running.adam)
        if region is not None:  # the projection also holds Z = X outside the region
            rows = region if region.shape[0] == 1 else region[running.rows]
            running.z = torch.where(rows, running.z, running.reference.x)
        running.steps = running.steps + 1
        bar.update(1)
    return handed


def _conclude(model: nn.Module, x: torch.Tensor, lab: Labels, out: _Outputs, config: AttackConfig) -> tuple[
        torch.Tensor, torch.Tensor]:
    """The final float32 check of every returned image: (success, adversarial label); fills the reasons."""
    with torch.no_grad():
        final_logits = judged_logits(model, out.adversarial)
    changed = (out.adversarial != x).flatten(1).any(1)
    success = (out.success & is_adversarial(final_logits, lab, targeted=config.targeted, margin=config.margin)
               & lab.attacked & changed)
    for i in (lab.attacked & ~success).nonzero().flatten().tolist():
        if out.reason[i]:
            continue
        if not bool(changed[i]):
            out.reason[i] = UNCHANGED
        elif bool(out.success[i]):
            out.reason[i] = "the final float32 check does not find it adversarial"
        else:
            out.reason[i] = f"not adversarial{margin_text(config.margin)} after {int(out.iterations[i])} iterations"
    return success, combined(final_logits).argmax(1)


def _check_region(region: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """``region`` as a bool tensor on ``x``'s device, after checking it fits the batch (see :func:`generate`)."""
    if region is None:
        return None
    n, c, h, w = x.shape
    if region.ndim != 4 or region.shape[0] not in (1, n) or region.shape[1] not in (1, c) or region.shape[2:] != (h, w):
        raise ValueError(f"region must have shape (1 or {n}, 1 or {c}, {h}, {w}), got {tuple(region.shape)}")
    return region.to(device=x.device, dtype=torch.bool)


def generate(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    config: AttackConfig | None = None,
    observer: Observer | None = None,
    region: torch.Tensor | None = None,
) -> AttackResult:
    """Generate MND images for a batch (Algorithm 1).

    Z starts at X. Each iteration takes one step of eq. (21) on eq. (1) (with
    Adam by default, :func:`descent_step`), projects Z into [0, 1], and checks
    the 8-bit image; an image stops the moment it is adversarial and leaves
    the batch, so finished images cost nothing. Images still not adversarial
    after ``max_iter`` steps keep their best attempt (lowest adversarial loss
    on the 8-bit image) and are reported as failures.

    Honesty guards: no image is attacked towards its true label (see
    :func:`prepare_labels`); a non-finite iterate never becomes an output (an
    image whose logits, loss or gradient are not finite stops as a failure
    with its best finite attempt, or with ``amp`` continues in float32); at
    the end every returned image is classified once more in float32, and
    ``success`` is what that check says, never for an output equal to its
    input. ``reason`` says why each failure failed.

    Args:
        model: returns logits for (N, 3, H, W) inputs in [0, 1]; its
            parameters should be frozen (``mnd.models.freeze``).
        x: clean images in [0, 1] (N, 3, H, W); they are quantized to 8 bits first.
        labels: ground-truth class indices (N,), or None to attack the clean
            prediction.
        config: the settings; default the paper's ImageNet non-targeted MND.
        observer: called once per iteration with a :class:`StepRecord` (what
            :mod:`mnd.experiments.trace` records); nothing extra is computed without one.
        region: (1 or N, 1 or C, H, W) bool, the pixels the attack may change
            (not in the paper; default: all). The feasible set becomes
            {Z in [0, 1] : Z = X outside the region}: after each step the other
            pixels are set back to their clean 8-bit values, so they never
            change, while the loss still sees them (``mnd protect`` optimises
            the pixels around the faces of a photo this way).
    """
    config = config or AttackConfig()
    device = next((p.device for p in model.parameters()), x.device)
    x = quantize(x.detach().to(device))
    region = _check_region(region, x)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    start = time.perf_counter()
    lab = prepare_labels(model, x, labels, targeted=config.targeted)
    out = _Outputs.start(x, lab)
    rows = lab.attacked.nonzero().squeeze(1)
    z = x[rows].clone()
    adam = Adam.start(z, config.step_size) if config.optimizer == "adam" else None
    running = _Running.start(x, lab, rows, z, torch.zeros_like(rows), adam, at_clean=True)
    bar = tqdm(total=config.max_iter, desc="mnd", unit="it", disable=not config.progress, leave=False)
    generator = torch.Generator().manual_seed(0)  # the boosters' draws: the same run gives the same image
    handed = _iterate(model, running, out, config, low_precision=config.amp, at_clean=True, bar=bar, observer=observer,
                      region=region, generator=generator)
    if handed:  # amp: images that continue in float32
        rest = _Running.joined(handed, x, lab)
        _iterate(model, rest, out, config, low_precision=False, at_clean=False, bar=bar, observer=observer,
                 region=region, generator=generator)
    bar.close()
    success, adv_label = _conclude(model, x, lab, out, config)
    extras = {"float32_fallback": int(sum(len(part.rows) for part in handed))} if config.amp else {}
    return AttackResult(
        adversarial=out.adversarial.contiguous().cpu(),
        success=success.cpu(),
        attacked=lab.attacked.cpu(),
        iterations=out.iterations.cpu(),
        clean_label=lab.clean.cpu(),
        adv_label=adv_label.cpu(),
        true_label=lab.true.cpu(),
        target_label=lab.target.cpu() if lab.target is not None else None,
        seconds=time.perf_counter() - start,
        extras=extras,
        reason=out.reason,
        margin=config.margin,
    )
