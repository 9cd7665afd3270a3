"""Algorithm 1: MND adversarial image generation.

``generate(model, x, labels, config=...)`` starts at Z = X and minimises
eq. (1), ``L_adv(Z) + L_pqp(Z, X)``, image by image in a batch: each image
stops the moment its 8-bit version is adversarial, and finished images leave
the batch. The returned images are exactly what a PNG file holds, and
success is always decided on them, never on the float iterate.

>>> cfg = config_for("mnd", task="imagenet", targeted=True)
>>> cfg.betas, cfg.r, cfg.step_size, cfg.max_iter
((2.0, 0.1, 2.0), 0.0625, 0.0001, 1000)
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from mnd import losses
from mnd.errors import InputError
from mnd.losses import Norm, Reduction

Optimizer = Literal["adam", "gd"]
Task = Literal["imagenet", "faces"]
Term = Literal["deviation", "ssim", "gradient"]
TERMS: tuple[Term, ...] = ("deviation", "ssim", "gradient")


@dataclass(frozen=True)
class AttackConfig:
    """Settings of one MND run (Algorithm 1). Defaults: ImageNet, non-targeted, full MND.

    Attributes:
        targeted: eq. (4) towards the least-likely class of eq. (5), else eq. (3).
        betas: (beta1, beta2, beta3) of eq. (7).
        r: power of eq. (4).
        deviation: norm of the deviation term, eq. (8) "l1" or eq. (9) "l2".
        gradient: norm of the gradient term, eq. (18) "l1" or eq. (19) "l2".
        reduction: "mean" (default) or "sum" (literal) reduction of the norms.
        optimizer: "adam" (default) or "gd", plain gradient descent of eq. (21).
        step_size: alpha of eq. (21), the paper's learning rate 1e-4.
        max_iter: the paper's 1000.
        straight_through: evaluate the loss at the 8-bit image with a
            straight-through gradient, so one forward pass per iteration serves
            both the update and the success check.
        channels_last: run the model on channels-last tensors (faster
            convolutions on some GPUs).
        amp: mixed precision (float16 on CUDA, bfloat16 on CPU) for the
            model's forward passes; success is re-checked in float32 at the end.
        progress: show a tqdm bar over iterations.
    """

    targeted: bool = False
    betas: tuple[float, float, float] = (100.0, 100.0, 100.0)
    r: float = 1.0
    deviation: Norm = "l1"
    gradient: Norm = "l1"
    reduction: Reduction = "mean"
    optimizer: Optimizer = "adam"
    step_size: float = 1e-4
    max_iter: int = 1000
    straight_through: bool = False
    channels_last: bool = False
    amp: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "gd"):
            raise ValueError(f"optimizer must be 'adam' or 'gd', got {self.optimizer!r}")
        if self.reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {self.reduction!r}")
        for name in ("deviation", "gradient"):
            if getattr(self, name) not in ("l1", "l2"):
                raise ValueError(f"{name} must be 'l1' or 'l2', got {getattr(self, name)!r}")
        if self.max_iter < 0 or self.step_size <= 0:
            raise ValueError("max_iter must be >= 0 and step_size > 0")
        if len(self.betas) != 3:
            raise ValueError(f"betas must have three values, got {self.betas!r}")

    def replace(self, **changes: Any) -> AttackConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Variant:
    """One ablation setting of section IV-A-2: which terms of eq. (7) are kept."""

    name: str
    label: str
    terms: tuple[Term, ...]
    deviation: Norm = "l1"
    gradient: Norm = "l1"

    def mask(self, betas: tuple[float, float, float]) -> tuple[float, float, float]:
        """``betas`` with the dropped terms set to zero."""
        b1, b2, b3 = (float(b) if term in self.terms else 0.0 for b, term in zip(betas, TERMS))
        return (b1, b2, b3)


HPARAMS_FILE = "hparams.toml"


def load_hparams(path: str | Path | None = None) -> dict[str, Any]:
    """Read the hyper-parameter file (the packaged one when ``path`` is None)."""
    if path is None:
        text = resources.files("mnd.presets").joinpath(HPARAMS_FILE).read_text()
        where = HPARAMS_FILE
    else:
        where = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise InputError(path, f"cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(where, f"not valid TOML ({exc})") from None
    for key in ("defaults", "tasks", "variants"):
        if key not in data:
            raise InputError(where, f"missing the [{key}] table")
    return data


def _variants(data: dict[str, Any]) -> dict[str, Variant]:
    out = {}
    for name, spec in data["variants"].items():
        terms = tuple(spec.get("terms", ()))
        unknown = set(terms) - set(TERMS)
        if unknown:
            raise InputError(HPARAMS_FILE, f"variant {name}: unknown terms {sorted(unknown)}")
        out[name] = Variant(
            name=name,
            label=spec.get("label", name),
            terms=terms,  # type: ignore[arg-type]
            deviation=spec.get("deviation", "l1"),
            gradient=spec.get("gradient", "l1"),
        )
    return out


VARIANTS: dict[str, Variant] = _variants(load_hparams())
"""The seven ablation settings: no_norm, l2, l1, ssim, l2_ssim, l1_ssim, mnd."""


def config_for(
    variant: str = "mnd",
    *,
    task: Task = "imagenet",
    targeted: bool = False,
    hparams: str | Path | None = None,
    **overrides: Any,
) -> AttackConfig:
    """The paper's configuration for a variant, task and setting.

    Args:
        variant: a key of VARIANTS (or of the ``hparams`` file's variants).
        task: ``imagenet`` (Tables I, II) or ``faces`` (Tables VI, VII).
        targeted: the targeted setting.
        hparams: another hyper-parameter file in the packaged file's format.
        **overrides: AttackConfig fields to change (e.g. ``max_iter=50``).
    """
    data = load_hparams(hparams)
    variants = _variants(data) if hparams is not None else VARIANTS
    if variant not in variants:
        raise InputError("--method", f"unknown MND variant {variant!r}; known: {', '.join(variants)}")
    setting = "targeted" if targeted else "non-targeted"
    try:
        task_params = data["tasks"][task][setting]
    except KeyError:
        raise InputError(hparams or HPARAMS_FILE, f"no [tasks.{task}.{setting}] table") from None
    v = variants[variant]
    betas = tuple(float(b) for b in task_params["betas"])
    params: dict[str, Any] = dict(data["defaults"])
    params.update(
        targeted=targeted,
        betas=v.mask(betas),  # type: ignore[arg-type]
        r=float(task_params.get("r", 1.0)),
        deviation=v.deviation,
        gradient=v.gradient,
    )
    params.update(overrides)
    return AttackConfig(**params)


# --- shared by MND and the anchors ------------------------------------------------


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Project onto the feasible set: [0, 1] on the 8-bit grid (what a PNG holds)."""
    return x.clamp(0, 1).mul(255).round().div(255)


@dataclass
class AttackResult:
    """Outcome of one attack on a batch. All tensors have N rows, on the CPU.

    Attributes:
        adversarial: (N, C, H, W) 8-bit-exact images in [0, 1]. Failures hold
            their best attempt; images already misclassified hold the clean image.
        success: the 8-bit image is adversarial (False where not attacked).
        attacked: False for images the model already got wrong: they are left
            out of success rates, never counted as free successes.
        iterations: gradient steps taken (0 where not attacked).
        clean_label: the model's prediction on the clean image.
        adv_label: the model's prediction on ``adversarial``.
        true_label: the label attacked away from (ground truth, or the clean
            prediction when no ground truth was given).
        target_label: the eq. (5) target when targeted, else None.
        seconds: wall time of the whole batch.
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

    def __len__(self) -> int:
        return int(self.success.shape[0])


@dataclass(frozen=True)
class Labels:
    """Who is attacked and towards what (see :func:`prepare_labels`)."""

    clean: torch.Tensor
    true: torch.Tensor
    target: torch.Tensor | None
    attacked: torch.Tensor
    logits: torch.Tensor

    @property
    def goal(self) -> torch.Tensor:
        """The label the loss uses: the target when targeted, else the true label."""
        return self.target if self.target is not None else self.true


@torch.no_grad()
def prepare_labels(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None, *, targeted: bool) -> Labels:
    """Clean predictions, the label to attack away from, and the eq. (5) target.

    Without ground truth the clean prediction stands in. An image whose clean
    prediction differs from its ground truth is not attacked.
    """
    logits = model(quantize(x))
    clean = logits.argmax(1)
    true = clean if labels is None else labels.to(clean.device).long().view(-1)
    if true.shape[0] != x.shape[0]:
        raise ValueError(f"{true.shape[0]} labels for {x.shape[0]} images")
    target = losses.least_likely_target(logits) if targeted else None
    return Labels(clean=clean, true=true, target=target, attacked=clean == true, logits=logits)


def is_adversarial(logits: torch.Tensor, labels: Labels | torch.Tensor, *, targeted: bool) -> torch.Tensor:
    """Non-targeted: the top class is not the true one; targeted: it is the target."""
    goal = labels.goal if isinstance(labels, Labels) else labels
    pred = logits.argmax(1)
    return pred == goal if targeted else pred != goal


# --- Algorithm 1 ----------------------------------------------------------------------


class _Adam:
    """Adam on a batch of images, whose state rows can be dropped with the images."""

    def __init__(self, like: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.m = torch.zeros_like(like)
        self.v = torch.zeros_like(like)
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps
        self.t = 0

    def step(self, z: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        self.t += 1
        self.m.mul_(self.b1).add_(grad, alpha=1 - self.b1)
        self.v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        m_hat = self.m / (1 - self.b1**self.t)
        v_hat = self.v / (1 - self.b2**self.t)
        return z - self.lr * m_hat / (v_hat.sqrt() + self.eps)

    def keep(self, rows: torch.Tensor) -> None:
        self.m, self.v = self.m[rows], self.v[rows]


def objective(
    model: nn.Module,
    z: torch.Tensor,
    reference: losses.CleanReference,
    goal: torch.Tensor,
    config: AttackConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (1) per image: ``L_adv(Z) + L_pqp(Z, X)``. Returns (loss, logits).

    ``reference`` holds the clean batch X and its cached statistics. With
    ``config.straight_through`` the model and the perceptual loss see the
    8-bit image while gradients pass to Z unchanged, so the logits also
    decide success.
    """
    # quantize(z) + (z - z) is exactly the 8-bit image, with d seen / d z = 1.
    seen = quantize(z).detach() + (z - z.detach()) if config.straight_through else z
    logits = model(seen)
    adv = losses.adversarial_loss(logits.float(), goal, targeted=config.targeted, r=config.r)
    pqp = losses.perceptual_loss(
        seen,
        reference.x,
        betas=config.betas,
        deviation=config.deviation,
        gradient=config.gradient,
        reduction=config.reduction,
        reference=reference,
    )
    return adv + pqp, logits


def generate(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    config: AttackConfig | None = None,
) -> AttackResult:
    """Generate MND images for a batch (Algorithm 1).

    Z starts at X. Each iteration takes one step of eq. (21) on eq. (1) (with
    Adam by default), projects Z into [0, 1], and checks the 8-bit image;
    an image stops the moment it is adversarial and leaves the batch, so
    finished images cost nothing. Images still not adversarial after
    ``max_iter`` steps keep their best attempt (lowest adversarial loss on
    the 8-bit image) and are reported as failures. At the end every returned
    image is classified once more in float32 and ``success`` is what that
    final check says.

    Args:
        model: returns logits for (N, 3, H, W) inputs in [0, 1]; its
            parameters should be frozen (``mnd.models.freeze``).
        x: clean images in [0, 1] (N, 3, H, W); they are quantized to 8 bits first.
        labels: ground-truth class indices (N,), or None to attack the clean
            prediction.
        config: the settings; default the paper's ImageNet non-targeted MND.
    """
    config = config or AttackConfig()
    device = next((p.device for p in model.parameters()), x.device)
    x = quantize(x.detach().to(device))
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    start = time.perf_counter()
    lab = prepare_labels(model, x, labels, targeted=config.targeted)
    n = x.shape[0]

    adversarial = x.clone()
    best_loss = torch.full((n,), float("inf"), device=device)
    success = torch.zeros(n, dtype=torch.bool, device=device)
    iterations = torch.zeros(n, dtype=torch.long, device=device)

    active = lab.attacked.nonzero().squeeze(1)  # batch indices of the images still running
    goal = lab.goal[active]
    z = x[active].clone()
    reference = losses.CleanReference(x[active])
    adam = _Adam(z, config.step_size) if config.optimizer == "adam" else None
    # The 8-bit image last classified and its logits: an image whose 8-bit version did
    # not change since (early on, most of them: Adam moves pixels 1e-4 a step) is not
    # classified again.
    last_q, last_logits = z.clone(), lab.logits[active]
    autocast = (
        torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)
        if config.amp
        else contextlib.nullcontext()
    )

    def record(q_logits: torch.Tensor, zq: torch.Tensor, steps: int) -> torch.Tensor:
        """Store finished and best 8-bit images; return the rows that are done."""
        done = is_adversarial(q_logits, goal, targeted=config.targeted)
        adv_loss = losses.adversarial_loss(q_logits.float(), goal, targeted=config.targeted, r=config.r)
        better = done | (adv_loss < best_loss[active])
        adversarial[active] = torch.where(better.view(-1, 1, 1, 1), zq, adversarial[active])
        best_loss[active] = torch.where(better, adv_loss, best_loss[active])
        iterations[active] = steps
        success[active] = done
        return done

    bar = tqdm(total=config.max_iter, desc="mnd", unit="it", disable=not config.progress, leave=False)
    for step in range(config.max_iter + 1):
        final = step == config.max_iter
        grad = None
        done = None
        if config.straight_through:
            # One forward pass: the 8-bit image decides success and gives the gradient.
            z.requires_grad_(not final)
            with torch.set_grad_enabled(not final), autocast:
                loss, logits = objective(model, z, reference, goal, config)
            done = record(logits.detach(), quantize(z.detach()), step)
            if not final:
                (grad,) = torch.autograd.grad(loss[~done].sum(), z)
        elif step > 0:  # Z0 = X is known not to be adversarial
            with torch.no_grad(), autocast:
                zq = quantize(z)
                changed = (zq != last_q).flatten(1).any(1).nonzero().squeeze(1)
                if changed.numel():
                    last_logits = last_logits.clone()
                    last_logits[changed] = model(zq[changed]).to(last_logits.dtype)
                    last_q = zq
                done = record(last_logits, zq, step)
        if done is not None and bool(done.any()):  # a host sync, as is the changed-rows lookup
            keep = (~done).nonzero().squeeze(1)
            active, goal, z, reference = active[keep], goal[keep], z.detach()[keep], reference.subset(keep)
            last_q, last_logits = last_q[keep], last_logits[keep]
            grad = grad[keep] if grad is not None else None
            if adam is not None:
                adam.keep(keep)
        if final or active.numel() == 0:
            break
        if grad is None:
            z.requires_grad_(True)
            with autocast:
                loss, _ = objective(model, z, reference, goal, config)
            (grad,) = torch.autograd.grad(loss.sum(), z)
        with torch.no_grad():
            z = adam.step(z.detach(), grad) if adam is not None else z.detach() - config.step_size * grad
            z = z.clamp(0, 1)
        bar.update(1)
    bar.close()

    with torch.no_grad():
        final_logits = model(adversarial)
    adv_label = final_logits.argmax(1)
    success &= is_adversarial(final_logits, lab, targeted=config.targeted) & lab.attacked
    return AttackResult(
        adversarial=adversarial.contiguous().cpu(),
        success=success.cpu(),
        attacked=lab.attacked.cpu(),
        iterations=iterations.cpu(),
        clean_label=lab.clean.cpu(),
        adv_label=adv_label.cpu(),
        true_label=lab.true.cpu(),
        target_label=lab.target.cpu() if lab.target is not None else None,
        seconds=time.perf_counter() - start,
    )
