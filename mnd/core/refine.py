"""MND + refinement: Algorithm 1, then a search along the decision boundary (ours, not the paper's).

Algorithm 1 (:func:`mnd.core.attack.generate`) stops at its first 8-bit
adversarial iterate. That iterate lies just past the decision boundary, but
wherever Adam's nearly uniform steps took it, so many values carry a small
change. ``mnd_refine`` keeps MND's perceptual loss and walks along the
boundary from there, towards images it rates better:

1. run MND unchanged, and keep the float iterate Z at which each image
   succeeded (:class:`SuccessIterates`, an observer of ``generate``);
2. for ``steps`` more steps, minimise ``L_pqp(Z, X) + [not adversarial] L_adv(Z)``
   (:func:`refine_loss`): while the 8-bit image is adversarial, only eq. (7)
   acts and pulls Z back towards X; once it is not, eq. (3) or (4) pushes
   it out again. Each step has a fixed size in root-mean-square pixel
   change, decaying to zero on a cosine (:func:`step_size_at`,
   :func:`normalized_step`), so the adversarial push concentrates on the
   pixels with the largest gradient while the perceptual pull acts on all:
   small changes return to the clean value and the change gets sparser;
3. return, per image, the best adversarial 8-bit iterate seen, MND's own
   output included (:func:`keep_better`): highest PSNR, or lowest L_pqp.

Success is decided on the 8-bit image at every step and once more at the
end; an image whose refined output does not pass that final check returns
MND's output. Images MND did not turn adversarial are returned as MND left
them. The classifier sees the 8-bit image with a straight-through gradient
(one forward pass a step serves the check and the gradient); the perceptual
loss sees the float iterate, so its pull acts on changes below half a level too.

The knobs live in a small data file (:data:`REFINE_FILE`, checked keys):

>>> load_refine()
RefineConfig(steps=100, step_size=0.0005, keep='psnr')
"""

from __future__ import annotations

import math
import time
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mnd.core import losses, metrics
from mnd.core.attack import AttackResult, StepRecord, generate, is_adversarial, perceptual_term
from mnd.core.judge import combined, judged_logits
from mnd.core.config import MAX_ITER, AttackConfig
from mnd.core.pixels import quantize
from mnd.errors import InputError, read_text_file

Keep = Literal["psnr", "perceptual"]

KEEPS: tuple[Keep, ...] = ("psnr", "perceptual")

REFINE_FILE = "refine.toml"
"""The packaged knobs of the refinement (``mnd/presets/refine.toml``)."""

REFINE_KEYS = ("steps", "step_size", "keep")


@dataclass(frozen=True)
class RefineConfig:
    """The refinement's knobs.

    Attributes:
        steps: refinement steps after MND's success (each one forward and
            backward pass of the images that succeeded).
        step_size: the first step's root-mean-square pixel change (in [0, 1]
            units); it decays to 0 on a cosine over ``steps``.
        keep: which adversarial 8-bit iterate is returned: the highest
            ``"psnr"`` or the lowest ``"perceptual"`` loss (eq. 7).
    """

    steps: int = 100
    step_size: float = 5e-4
    keep: Keep = "psnr"

    def __post_init__(self) -> None:
        problem = _problem("steps", self.steps) or _problem("step_size", self.step_size) or _problem("keep", self.keep)
        if problem:
            raise ValueError(problem)


def _problem(key: str, value: Any) -> str:
    """Why one knob's value is wrong ("" where it is fine)."""
    if key == "steps" and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ITER):
        return f"steps = {value!r}: must be an integer from 0 to {MAX_ITER}"
    if key == "step_size" and (isinstance(value, bool) or not isinstance(value, (int, float))
                               or not math.isfinite(value) or value <= 0):
        return f"step_size = {value!r}: must be a number > 0"
    if key == "keep" and value not in KEEPS:
        return f"keep = {value!r}: must be one of {', '.join(map(repr, KEEPS))}"
    return ""


def load_refine(path: str | Path | None = None) -> RefineConfig:
    """Read and check the refinement's knobs (the packaged file when ``path`` is None).

    The file holds one ``[refine]`` table with ``steps``, ``step_size`` and
    ``keep``; a missing key takes :class:`RefineConfig`'s default.

    Raises:
        InputError: an unreadable file, bad TOML, an unknown key or a bad value, naming the file.
    """
    where = str(path) if path is not None else REFINE_FILE
    try:
        text = (read_text_file(path) if path is not None
                else resources.files("mnd.presets").joinpath(REFINE_FILE).read_text())
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(where, f"cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(where, f"not valid TOML ({exc})") from None
    if set(data) != {"refine"} or not isinstance(data["refine"], dict):
        raise InputError(where, "must hold exactly one [refine] table")
    table = data["refine"]
    for key, value in table.items():
        if key not in REFINE_KEYS:
            raise InputError(where, f"unknown key {key!r} in [refine]; known: {', '.join(REFINE_KEYS)}")
        if problem := _problem(key, value):
            raise InputError(where, f"[refine] {problem}")
    return RefineConfig(**{k: float(v) if k == "step_size" else v for k, v in table.items()})


class SuccessIterates:
    """An observer of :func:`mnd.core.attack.generate`: the float iterate at which each image succeeded."""

    def __init__(self) -> None:
        self.iterates: dict[int, torch.Tensor] = {}

    def __call__(self, record: StepRecord) -> None:
        for i in record.adversarial.nonzero().flatten().tolist():
            self.iterates[int(record.rows[i])] = record.iterate[i].detach().clone()

    def start(self, rows: list[int], fallback: torch.Tensor) -> torch.Tensor:
        """The iterates of ``rows`` as a batch; ``fallback`` (MND's 8-bit output) where none was seen."""
        return torch.stack([self.iterates.get(r, fallback[k]).to(fallback) for k, r in enumerate(rows)])


def step_size_at(step: int, config: RefineConfig) -> float:
    """The cosine schedule: ``step_size * (1 + cos(pi * step / steps)) / 2``, from step_size down towards 0.

    >>> [round(step_size_at(k, RefineConfig(steps=4, step_size=1.0)), 3) for k in range(4)]
    [1.0, 0.854, 0.5, 0.146]
    """
    return config.step_size * (1 + math.cos(math.pi * step / max(config.steps, 1))) / 2


def normalized_step(z: torch.Tensor, grad: torch.Tensor, size: float) -> torch.Tensor:
    """``z - size * grad / rms(grad)`` per image, projected onto [0, 1]; an image with a zero gradient stays.

    >>> normalized_step(torch.full((1, 1, 1, 2), 0.5), torch.tensor([[[[3.0, -3.0]]]]), 0.1)
    tensor([[[[0.4000, 0.6000]]]])
    """
    rms = grad.flatten(1).pow(2).mean(1).sqrt().view(-1, *(1,) * (grad.ndim - 1))
    direction = torch.where(rms > 0, grad / rms.clamp_min(1e-30), torch.zeros_like(grad))
    return (z - size * direction).clamp(0, 1)


def refine_loss(model: nn.Module, z: torch.Tensor, reference: losses.CleanReference, goal: torch.Tensor,
                config: AttackConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``L_pqp(Z, X) + [not adversarial] L_adv(Z)`` per image, and the 8-bit verdict: (loss, image, adversarial).

    The classifier sees the 8-bit image (straight-through gradient), whose
    float32 logits decide ``adversarial`` with the run's margin; eq. (7)
    sees the float iterate Z.
    """
    image = quantize(z).detach()
    logits = judged_logits(model, image + (z - z.detach()))
    adversarial = is_adversarial(logits.detach(), goal, targeted=config.targeted, margin=config.margin)
    adv = losses.adversarial_loss(combined(logits), goal, targeted=config.targeted, r=config.r)
    return perceptual_term(z, reference, config) + torch.where(adversarial, torch.zeros_like(adv), adv), image, adversarial


def quality(image: torch.Tensor, reference: losses.CleanReference, config: AttackConfig, keep: Keep) -> torch.Tensor:
    """What ``keep`` ranks 8-bit images by, lower is better: the mean squared error (PSNR) or eq. (7)."""
    with torch.no_grad():
        if keep == "psnr":
            return (image - reference.x).pow(2).flatten(1).mean(1)
        return perceptual_term(image, reference, config)


def keep_better(best: torch.Tensor, best_quality: torch.Tensor, image: torch.Tensor, image_quality: torch.Tensor,
                adversarial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, ``image`` where it is adversarial and better than ``best``, else ``best``: (best, its quality)."""
    better = adversarial & (image_quality < best_quality)
    return (torch.where(better.view(-1, 1, 1, 1), image, best),
            torch.where(better, image_quality, best_quality))


def refine(model: nn.Module, z: torch.Tensor, start: torch.Tensor, x: torch.Tensor, goal: torch.Tensor,
           config: AttackConfig, refine_config: RefineConfig) -> torch.Tensor:
    """The refinement of images whose 8-bit ``start`` (MND's output) is adversarial: the best 8-bit iterates.

    Args:
        z: (k, C, H, W) the float iterates at MND's success.
        start: (k, C, H, W) MND's 8-bit outputs (adversarial), the first candidates.
        x: (k, C, H, W) the clean images.
        goal: (k,) the label the loss uses (the target when targeted).
        config: MND's settings (eq. 7's weights and norms, eq. 3 or 4, the margin).
        refine_config: the refinement's knobs.
    """
    reference = losses.CleanReference(x)
    best, best_quality = start, quality(start, reference, config, refine_config.keep)
    for step in range(refine_config.steps):
        z = z.detach().requires_grad_(True)
        loss, image, adversarial = refine_loss(model, z, reference, goal, config)
        best, best_quality = keep_better(best, best_quality, image,
                                         quality(image, reference, config, refine_config.keep), adversarial)
        (grad,) = torch.autograd.grad(loss.sum(), z)
        if not bool(torch.isfinite(grad).all()):
            break  # never on a finite model; the best finite candidates stand
        with torch.no_grad():
            z = normalized_step(z, grad, step_size_at(step, refine_config))
    return best


def _final_check(model: nn.Module, refined: torch.Tensor, fallback: torch.Tensor, goal: torch.Tensor,
                 config: AttackConfig) -> torch.Tensor:
    """``refined`` where the float32 model still finds it adversarial (towards or away from ``goal``), else MND's
    ``fallback``."""
    with torch.no_grad():
        logits = judged_logits(model, refined)
    ok = is_adversarial(logits, goal, targeted=config.targeted, margin=config.margin)
    return torch.where(ok.view(-1, 1, 1, 1), refined, fallback)


def generate_refined(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None = None, *,
                     config: AttackConfig | None = None, refine_config: RefineConfig | None = None) -> AttackResult:
    """MND (Algorithm 1, unchanged), then :func:`refine` of each image it turned adversarial.

    The result's ``iterations`` count both phases' gradient steps;
    ``extras["mnd_iterations"]`` holds MND's alone, ``extras["mnd_psnr"]`` the
    PSNR of MND's own output (per image). ``success`` is MND's success, decided
    again on the returned image. The refinement runs in float32 whatever
    ``config.amp`` says.
    """
    config = config or AttackConfig()
    refine_config = refine_config or load_refine()
    start = time.perf_counter()
    seen = SuccessIterates()
    result = generate(model, x, labels, config=config, observer=seen)
    device = next((p.device for p in model.parameters()), x.device)
    clean = quantize(x.detach().to(device))
    # the label eq. (3) or (4) uses, as MND decided it: the target when targeted, else the true label
    goal = (result.target_label if config.targeted else result.true_label).to(device)
    mnd_out = result.adversarial.to(device)
    output, iterations = mnd_out.clone(), result.iterations.clone()
    rows = result.success.nonzero().flatten().to(device)
    if rows.numel() and refine_config.steps:
        z = seen.start(rows.tolist(), mnd_out[rows])
        best = refine(model, z, mnd_out[rows], clean[rows], goal[rows], config, refine_config)
        output[rows] = _final_check(model, best, mnd_out[rows], goal[rows], config)
        iterations[rows.cpu()] += refine_config.steps
    extras = dict(result.extras, mnd_iterations=result.iterations.tolist(),
                  mnd_psnr=metrics.psnr(mnd_out, clean).tolist())
    with torch.no_grad():
        adv_label = combined(judged_logits(model, output)).argmax(1)
    return AttackResult(
        adversarial=output.contiguous().cpu(), success=result.success, attacked=result.attacked,
        iterations=iterations, clean_label=result.clean_label, adv_label=adv_label.cpu(),
        true_label=result.true_label, target_label=result.target_label,
        seconds=time.perf_counter() - start, extras=extras, reason=result.reason, margin=result.margin,
    )
