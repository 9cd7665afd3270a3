"""Protecting a whole photo: the perturbation lives at full resolution, success is decided on the saved file.

``mnd attack`` protects the model's 224x224 input; a person shares the whole
photo. Here the iterate Z is the full-resolution photo, and the classifier
sees it through :class:`ClassifierView`, a differentiable copy of
:func:`mnd.data.prepare_image` (shorter side resized with antialiasing,
centre crop, 8-bit rounding with a straight-through gradient). Algorithm 1
(:func:`mnd.core.attack.generate`, unchanged) then computes its perceptual
loss on the full-resolution photo, and its success check on exactly the
model input that the saved file will give.

The success check is the saved file's: :class:`Verdict` wraps the model so
that, when ``generate`` classifies an 8-bit iterate (without gradients), the
model sees the file as it will be read back (the 8-bit PNG, or the decoded
JPEG at the chosen quality) and then each ``survive`` transform of it (a real
Pillow JPEG or resize, :mod:`mnd.core.robustness`); ``generate`` keeps
iterating until every one of them is adversarial, or the budget ends. With
``survive`` transforms the gradient is, by default, that of the logits
averaged over the plain view and random differentiable stand-ins of the
transforms (kornia's JPEG, an antialiased resize, drawn around the target:
expectation over transformation, :mod:`mnd.core.eot`); ``Settings(eot=False)``
(``--no-eot``) keeps the plain view's gradient and only iterates longer.

After the attack the photo is written (no metadata), read back from disk and
checked again from scratch (:func:`verify`): the report's ``success`` is that
check, never the iterate's.

Face models: :mod:`mnd.protect.faces` (every face of a photo at
once, through the same :class:`Verdict`, :class:`Settings` and report).
"""

from __future__ import annotations

import hashlib
import io
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import functional as TF

from mnd.core import metrics, robustness
from mnd.core.attack import AttackResult, generate, is_adversarial
from mnd.core.judge import combined, judged_logits
from mnd.core.eot import Expectation, StandIn
from mnd.core.config import MAX_ITER_RULE, config_for, valid_diversity, valid_margin, valid_max_iter, valid_translation
from mnd.core.losses import least_likely_target
from mnd.core.pixels import quantize
from mnd.data.imageio import LoadedImage, load_rgb, to_tensor, write_file
from mnd.data.prepare import prepare_image
from mnd.errors import InputError, read_text_file
from mnd.protect.unseen import UNSEEN_COLUMNS, Checked, unseen_columns
from mnd.models.registry import ModelSpec
from mnd.models.registry import spec as model_spec

STRENGTHS_FILE = "protect.toml"
FORMATS = ("png", "jpeg")
Format = Literal["png", "jpeg"]
SUFFIX: dict[str, str] = {"png": ".png", "jpeg": ".jpg"}

REPORT_COLUMNS: list[str] = [
    "image", "model", "targeted", "format", "survive", "success", "survived", *robustness.TRANSFORMS,
    "clean_label", "adv_label", "target_label", "faces", "faces_protected", "criterion", "distances", "psnr", "ssim",
    "width", "height", "iterations", "seconds", "note", "file", "sha256", *UNSEEN_COLUMNS,
]
"""Columns of ``report.csv``: ``success`` is the re-read saved file; ``survived`` after every ``--survive``
transform as well (empty without one); then still adversarial after each transform of
:data:`mnd.core.robustness.TRANSFORMS`; PSNR and SSIM at full resolution. Face models
(:mod:`mnd.protect.faces`) also fill ``faces`` (found on the clean photo),
``faces_protected`` (meeting the criterion on the saved file), ``criterion`` and ``distances``
(per face, space-separated); their labels are identities, one per face. ``file`` and ``sha256``: the
saved file the row describes (its name in the output folder, empty when nothing was written) and the
SHA-256 of its bytes. ``unseen``, ``unseen_fooled``, ``unseen_jpeg75``: the ``--check`` models (each reading the
re-read file through its own preprocessing of the full photo) and whether each one's label changed, on the file
and after JPEG 75 (:mod:`mnd.protect.unseen`)."""


# --- what to survive and how hard to try --------------------------------------------


@dataclass(frozen=True)
class Survive:
    """A sharing transform the saved photo must stay adversarial after: ``jpeg:Q`` or ``resize:S``."""

    kind: Literal["jpeg", "resize"]
    value: float

    @property
    def name(self) -> str:
        """As written on the command line, e.g. ``jpeg:75``."""
        return f"jpeg:{int(self.value)}" if self.kind == "jpeg" else f"resize:{self.value:g}"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The real transform (Pillow) of (N, 3, H, W) 8-bit images."""
        if self.kind == "jpeg":
            return robustness.jpeg(images, int(self.value))
        return robustness.resize(images, self.value)


RESIZE_MIN = 0.1
"""The smallest ``resize:S`` scale: a tenth of each side (a 4000x3000 photo shared as a 400x300 thumbnail)."""


def parse_survive(text: str, where: str = "--survive") -> Survive:
    """``jpeg:Q`` (Q an integer 1-100) or ``resize:S`` (:data:`RESIZE_MIN` <= S < 1) as a :class:`Survive`.

    >>> parse_survive("jpeg:75").name, parse_survive("resize:0.5").name
    ('jpeg:75', 'resize:0.5')
    """
    kind, _, value = str(text).partition(":")
    try:
        if kind == "jpeg" and value.isascii() and value.isdigit() and 1 <= int(value) <= 100:
            return Survive("jpeg", int(value))
        if kind == "resize" and RESIZE_MIN <= float(value) < 1:
            return Survive("resize", float(value))
    except ValueError:
        pass
    raise InputError(where, f"{text!r}: expected jpeg:Q (Q an integer from 1 to 100) or resize:S (S from "
                     f"{RESIZE_MIN:g} to below 1)")


@dataclass(frozen=True)
class Strength:
    """One level of ``--strength``: the iteration budget, the transforms to survive and the logit margin.

    A level made for models it never saw (``max``) also names its surrogate
    ``model`` (an ensemble, ``a+b``), the transfer boosters ``diversity`` and
    ``translation`` (:mod:`mnd.core.boosters`) and a larger ``step_size``.
    """

    name: str
    max_iter: int
    survive: tuple[Survive, ...]
    margin: float = 0.0
    model: str | None = None
    diversity: float = 0.0
    translation: int = 0
    step_size: float | None = None


LEVEL_KEYS = ("max_iter", "survive", "margin", "model", "diversity", "translation", "step_size")
"""The keys a strength level may set."""


def _level_value(where: str, name: str, key: str, value: Any) -> Any:
    """One optional key of a level, checked (None when absent)."""
    if value is None:
        return None
    rules = {
        "model": (lambda v: isinstance(v, str), "a model name (an ensemble as a+b)"),
        "diversity": (valid_diversity, "a probability from 0 to 1"),
        "translation": (valid_translation, "0 or an odd kernel size from 3 to 31"),
        "step_size": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1,
                      "a number above 0, at most 1"),
    }
    valid, rule = rules[key]
    if not valid(value):
        raise InputError(where, f"[{name}] {key} = {value!r}: must be {rule}")
    if key == "model":
        try:
            model_spec(value)
        except InputError as exc:
            raise InputError(where, f"[{name}] model = {value!r}: {exc.problem}") from None
    return value


def load_strengths(path: str | Path | None = None) -> dict[str, Strength]:
    """The strength levels of a TOML file (default: the packaged ``protect.toml``); every key is checked."""
    where = str(path) if path is not None else STRENGTHS_FILE
    try:
        text = read_text_file(path, "strength levels") if path is not None else resources.files("mnd.presets").joinpath(
            STRENGTHS_FILE).read_text()
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(where, f"cannot read the strength levels ({exc})") from None
    levels: dict[str, Strength] = {}
    for name, table in data.items():
        if not isinstance(table, dict) or set(table) - set(LEVEL_KEYS):
            raise InputError(where, f"[{name}] must be a table with {', '.join(LEVEL_KEYS)} only")
        margin = table.get("margin", 0.0)
        if not valid_margin(margin):
            raise InputError(where, f"[{name}] margin = {margin!r}: must be a number >= 0")
        budget, survive = table.get("max_iter", 1000), table.get("survive", [])
        if not valid_max_iter(budget):
            raise InputError(where, f"[{name}] max_iter = {budget!r}: must be {MAX_ITER_RULE}")
        if not isinstance(survive, list):
            raise InputError(where, f"[{name}] survive = {survive!r}: must be a list")
        extra = {key: _level_value(where, name, key, table.get(key))
                 for key in ("model", "diversity", "translation", "step_size")}
        levels[name] = Strength(name, budget, tuple(parse_survive(s, f"{where} [{name}]") for s in survive),
                                float(margin), **{k: v for k, v in extra.items() if v is not None})
    return levels


@dataclass(frozen=True)
class OutputFormat:
    """How the protected photo is saved: lossless PNG, or JPEG at a quality with 4:2:0 subsampling."""

    kind: Format = "png"
    quality: int = 90

    @property
    def suffix(self) -> str:
        return SUFFIX[self.kind]

    @property
    def name(self) -> str:
        return "png" if self.kind == "png" else f"jpeg:{self.quality}"

    def encode(self, image: torch.Tensor) -> bytes:
        """The file's bytes for a (3, H, W) image in [0, 1]: pixels only, no metadata of any kind."""
        if self.kind == "jpeg":
            return robustness.jpeg_bytes(image, self.quality)
        pixels = image.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels), mode="RGB").save(buffer, format="PNG")
        return buffer.getvalue()

    def as_read_back(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) 8-bit images as the saved files will read back (a JPEG's decoded pixels)."""
        return robustness.jpeg(images, self.quality) if self.kind == "jpeg" else quantize(images)


# --- the model's view of a full-resolution photo -------------------------------------


class ClassifierView(nn.Module):
    """:func:`mnd.data.prepare_image`, differentiable: full-resolution photos -> the classifier's inputs.

    The shorter side is resized to ``spec.resize`` (bilinear, antialiased;
    skipped when it already has that size), the centre ``spec.input_size``
    square is cut and rounded to the 8-bit grid with a straight-through
    gradient, so on an 8-bit photo the value is the model input that
    ``prepare_image`` gives for the saved file, and gradients reach every
    full-resolution pixel.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.resize, self.size = spec.resize, spec.input_size

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h, w = z.shape[-2:]
        if min(h, w) < self.size:
            raise ValueError(f"image is {w}x{h}, smaller than the model's {self.size}x{self.size} input")
        y = TF.resize(z, self.resize, antialias=True) if min(h, w) != self.resize else z
        y = TF.center_crop(y, [self.size, self.size])
        return quantize(y).detach() + (y - y.detach())


class Verdict(nn.Module):
    """``model(view(z))`` for :func:`mnd.core.attack.generate`, whose success check is the shared file's.

    With gradients (the attack's loss) this is the model on the view of the
    iterate. Without gradients, before the first gradient step (``generate``
    reads the clean labels), the same. Without gradients after it (the
    success checks of ``generate``), the logits returned are those of the
    first of [the saved file as read back, each ``survive`` transform of it]
    that is not adversarial, or the saved file's when all are: so ``generate``
    declares success only when all are adversarial. One image at a time.

    Args:
        model: the classifier (inputs in [0, 1]).
        view: the model's preprocessing (:class:`ClassifierView`).
        goal: (1,) the label attacked away from (non-targeted) or the target.
        targeted: which criterion.
        read_back: the saved file's pixels as read back (:meth:`OutputFormat.as_read_back`).
        survive: the transforms the saved file must survive (:class:`Survive`, or any
            function of (N, 3, H, W) 8-bit images).
        standins: differentiable stand-ins whose random draws the gradient is averaged over
            (:class:`mnd.core.eot.Expectation`; ``samples`` draws each, seeded by ``seed``).
    """

    def __init__(self, model: nn.Module, view: nn.Module, goal: torch.Tensor, *, targeted: bool,
                 read_back: Callable[[torch.Tensor], torch.Tensor],
                 survive: Sequence[Callable[[torch.Tensor], torch.Tensor]] = (),
                 standins: Sequence[StandIn] = (), samples: int = 1, seed: int = 0, margin: float = 0.0) -> None:
        super().__init__()
        self.model, self.view = model, view
        self.register_buffer("goal", goal.detach().long().view(-1), persistent=False)
        self.targeted, self.read_back, self.survive, self.margin = targeted, read_back, tuple(survive), margin
        self.gradient = Expectation(model, standins, view=view, samples=samples, seed=seed)
        self.armed = False

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.armed = True
            return self.gradient(z)  # with stand-ins: the EOT average
        if not self.armed:  # the clean labels: every member's logits for an ensemble, as in the checks
            return judged_logits(self.model, self.view(z))
        if z.shape[0] != 1:
            raise ValueError(f"the verdict checks one image at a time, got {z.shape[0]}")
        saved = self.read_back(z).to(z.device)
        first = judged_logits(self.model, self.view(saved))
        if not bool(is_adversarial(first, self.goal, targeted=self.targeted, margin=self.margin)[0]):
            return first
        for transform in self.survive:
            logits = judged_logits(self.model, self.view(transform(saved.cpu()).to(z.device)))
            if not bool(is_adversarial(logits, self.goal, targeted=self.targeted, margin=self.margin)[0]):
                return logits
        return first


# --- one photo --------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How ``mnd protect`` protects each photo."""

    targeted: bool = False
    output: OutputFormat = field(default_factory=OutputFormat)
    survive: tuple[Survive, ...] = ()
    max_iter: int = 1000
    progress: bool = False
    criterion: Literal["verify", "identify"] | None = None
    """Face models only (:mod:`mnd.protect.faces`); None for classifiers."""
    eot: bool = True
    """With ``survive``: follow the gradient through random differentiable stand-ins of the transforms as well
    (expectation over transformation, :mod:`mnd.core.eot`); False: the plain image's gradient only."""
    eot_samples: int = 1
    """Draws of each stand-in per iteration."""
    margin: float = 0.0
    """The logit lead success needs, on the saved file and after each ``survive`` transform (0: any win;
    the attack-strength knob, not in the paper)."""
    diversity: float = 0.0
    """Input diversity of the gradient (:mod:`mnd.core.boosters`; 0: off)."""
    translation: int = 0
    """Translation-invariant gradient: Gaussian kernel side (0: off)."""
    step_size: float | None = None
    """Adam's step (None: the hyper-parameter file's, the paper's 1e-4)."""
    check: tuple[str, ...] = ()
    """The unseen models (``--check``) that read each saved file (:mod:`mnd.protect.unseen`)."""

    def standins(self) -> tuple[StandIn, ...]:
        """The differentiable stand-ins of the ``survive`` transforms the gradient goes through (none without EOT)."""
        return tuple(StandIn(s.kind, float(s.value)) for s in self.survive) if self.eot else ()


@dataclass(frozen=True)
class Goal:
    """The clean photo's label, the label attacked away from or towards, and the target (targeted)."""

    clean: int
    goal: int
    target: int | None


@torch.no_grad()
def clean_goal(model: nn.Module, view: nn.Module, photo: torch.Tensor, targeted: bool) -> Goal:
    """The clean prediction and, targeted, the least-likely class of eq. (5), on the photo's model input."""
    logits = model(view(quantize(photo[None]))).float()
    clean = int(logits.argmax(1))
    target = int(least_likely_target(logits)) if targeted else None
    return Goal(clean, target if target is not None else clean, target)


def attack_photo(model: nn.Module, spec: ModelSpec, photo: torch.Tensor, settings: Settings,
                 device: str | torch.device = "cpu") -> tuple[AttackResult, Goal]:
    """Algorithm 1 on a full-resolution (3, H, W) photo; success means the saved file (and its survive transforms).

    Returns:
        The attack's result (its ``adversarial`` is the full-resolution 8-bit
        photo) and the labels.
    """
    view = ClassifierView(spec)
    x = photo.to(device)
    goal = clean_goal(model, view, x, settings.targeted)
    verdict = Verdict(model, view, torch.tensor([goal.goal], device=device), targeted=settings.targeted,
                      read_back=settings.output.as_read_back, survive=settings.survive,
                      standins=settings.standins(), samples=settings.eot_samples, margin=settings.margin)
    boost: dict[str, Any] = {"diversity": settings.diversity, "translation": settings.translation}
    if settings.step_size is not None:
        boost["step_size"] = settings.step_size
    config = config_for("mnd", task=spec.task, targeted=settings.targeted, max_iter=settings.max_iter,
                        progress=settings.progress, straight_through=False, margin=settings.margin, **boost)
    return generate(verdict, x[None], torch.tensor([goal.clean], device=device), config=config), goal


Stage = Callable[[Path, bytes], Path]
"""Writes a photo file's bytes for its final path and returns where to read them back from (for example a
staged temporary file, :meth:`mnd.data.outputs.OutputFolder.stage`, published later with the photo's row)."""


def write_photo(image: torch.Tensor, path: str | Path, output: OutputFormat, stage: Stage | None = None
                ) -> tuple[Path, str]:
    """Write the (3, H, W) protected photo, pixels only (no EXIF, GPS, ICC profile or text).

    Without ``stage`` the file is written atomically at ``path``; with it,
    ``stage`` writes it. Returns the path to read the written bytes back from
    and their SHA-256.
    """
    data = output.encode(image)
    written = stage(Path(path), data) if stage is not None else write_file(path, data)
    return written, hashlib.sha256(data).hexdigest()


@torch.no_grad()
def verify(model: nn.Module, spec: ModelSpec, path: str | Path, clean: torch.Tensor, goal: Goal, settings: Settings,
           device: str | torch.device = "cpu", checked: Sequence[Checked] = ()) -> dict[str, Any]:
    """Everything the report says about a saved file, computed from the file re-read from disk.

    ``success``: the file, preprocessed exactly as :func:`mnd.data.prepare_image`
    does, is adversarial and differs from the clean photo; ``survived``:
    also after each ``survive`` transform (None without one); then survival
    after each :data:`mnd.core.robustness.TRANSFORMS`, and PSNR/SSIM between
    the saved and the clean photo at full resolution (SSIM as
    :func:`mnd.core.metrics.ssim`); the unseen-model columns of ``checked``
    (:func:`checked_views`), each reading the re-read file and the clean photo
    through its own preprocessing.
    """
    loaded = load_rgb(path)
    saved = to_tensor(loaded.pixels)[None]
    target = torch.tensor([goal.goal])
    view = ClassifierView(spec)
    logits = judged_logits(model, prepare_image(loaded, spec)[None].to(device)).cpu()
    success = bool(is_adversarial(logits, target, targeted=settings.targeted)[0]) and differs(saved, clean)
    survived = None
    if settings.survive:
        kept = robustness.survival(model, saved, target, target, settings.targeted, view=view,
                                   transforms={s.name: s for s in settings.survive})
        survived = success and all(bool(v[0]) for v in kept.values())
    shared = robustness.survival(model, saved, target, target, settings.targeted, view=view)
    return {
        "success": success,
        "survived": survived,
        **{name: success and bool(v[0]) for name, v in shared.items()},
        "clean_label": goal.clean,
        "adv_label": int(combined(logits).argmax(1)),
        "target_label": goal.target,
        **file_columns(saved, clean),
        **unseen_columns(checked, clean[None].cpu(), saved)[0],
    }


def checked_views(checked: Sequence[Checked]) -> list[Checked]:
    """Each checked classifier reading full-resolution photos through its own preprocessing (:class:`ClassifierView`)."""
    return [Checked(c.name, c.model, ClassifierView(model_spec(c.name))) for c in checked]


def differs(saved: torch.Tensor, clean: torch.Tensor) -> bool:
    """Whether the (1, 3, H, W) saved file's pixels differ from the (3, H, W) clean photo's 8-bit pixels."""
    return bool((saved != quantize(clean[None].cpu())).any())


def file_columns(saved: torch.Tensor, clean: torch.Tensor) -> dict[str, Any]:
    """The report's quality and size of a (1, 3, H, W) saved file against the (3, H, W) clean photo, at full
    resolution: PSNR, SSIM (:mod:`mnd.core.metrics`), width and height."""
    return {
        "psnr": float(metrics.psnr(saved, clean[None].cpu())[0]),
        "ssim": float(metrics.ssim(saved, clean[None].cpu())[0]),
        "width": int(saved.shape[-1]),
        "height": int(saved.shape[-2]),
    }


def protect_photo(model: nn.Module, spec: ModelSpec, photo: LoadedImage, path: str | Path, settings: Settings,
                  device: str | torch.device = "cpu", *, stage: Stage | None = None,
                  checked: Sequence[Checked] = ()) -> dict[str, Any]:
    """Protect one photo, write it to ``path`` (or ``stage`` it) and return its report row, checked on the
    file re-read from disk."""
    start = time.perf_counter()
    clean = to_tensor(photo.pixels)
    result, goal = attack_photo(model, spec, clean, settings, device)
    written, digest = write_photo(result.adversarial[0], path, settings.output, stage)
    row = verify(model, spec, written, clean, goal, settings, device, checked_views(checked))
    row.update(file=Path(path).name, sha256=digest)
    return report_row(photo, spec, settings, row, result, [photo.note, result.reason[0]], start)


def photo_columns(photo: LoadedImage, spec: ModelSpec, settings: Settings) -> dict[str, Any]:
    """The report's first columns: which photo, which model, and how it was asked to be protected."""
    return {"image": Path(photo.path).name, "model": spec.name, "targeted": settings.targeted,
            "format": settings.output.name, "survive": " ".join(s.name for s in settings.survive)}


def report_row(photo: LoadedImage, spec: ModelSpec, settings: Settings, checked: dict[str, Any], result: AttackResult,
               notes: Sequence[str | None], start: float) -> dict[str, Any]:
    """One row of ``report.csv``: the photo, the settings, what the re-read file ``checked`` gave, the attack's cost.

    ``notes`` are joined (empty ones left out), plus a warning when the attack
    succeeded on its iterate but not on the saved file read back.
    """
    notes = [n for n in notes if n]
    if result.success[0] and not checked["success"]:
        notes.append("adversarial during the attack but not as re-read from the saved file")
    return {
        **photo_columns(photo, spec, settings),
        **checked,
        "iterations": int(result.iterations[0]),
        "seconds": round(time.perf_counter() - start, 2),
        "note": "; ".join(notes),
    }

