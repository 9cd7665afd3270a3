"""The attack's settings: eq. (7)'s weights, the ablation variants of Tables I/II/VI/VII and the hyper-parameter file."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import tomllib

from mnd.core.losses import L2_FORMS, REDUCTIONS, L2Form, Norm, Reduction
from mnd.errors import InputError, read_text_file

Task = Literal["imagenet", "faces"]
"""``imagenet``: logits over the 1000 ImageNet classes; ``faces``: over identities (or face embeddings)."""

TASKS: tuple[Task, ...] = ("imagenet", "faces")


Optimizer = Literal["adam", "gd"]


Term = Literal["deviation", "ssim", "gradient"]


TERMS: tuple[Term, ...] = ("deviation", "ssim", "gradient")


OPTIMIZERS: tuple[Optimizer, ...] = ("adam", "gd")


NORMS: tuple[Norm, ...] = ("l1", "l2")


SETTINGS = ("non-targeted", "targeted")


def _is_number(value: Any) -> bool:
    """A finite real number, not a bool (numpy scalars count)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def valid_margin(value: Any) -> bool:
    """The rule for the attack-strength margin everywhere it is given: a finite number >= 0, not a bool."""
    return _is_number(value) and value >= 0


def _is_count(value: Any) -> bool:
    """An integer from 0 to :data:`MAX_ITER`, not a bool (numpy integers count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value <= MAX_ITER


def valid_diversity(value: Any) -> bool:
    """A probability from 0 to 1 (:attr:`AttackConfig.diversity`)."""
    return _is_number(value) and 0 <= value <= 1


def valid_translation(value: Any) -> bool:
    """0 (off) or an odd kernel side from 3 to 31 (:attr:`AttackConfig.translation`)."""
    return isinstance(value, int) and not isinstance(value, bool) and (value == 0 or (3 <= value <= 31 and value % 2))


MAX_ITER = 1_000_000
"""The largest iteration budget anywhere (the paper's is 1000; a million MND iterations of a 224 px image take
about a day on a CPU core)."""


def valid_max_iter(value: Any) -> bool:
    """The rule for an iteration budget a user gives (option, hyper-parameter file, preset, strength level):
    an integer from 1 to :data:`MAX_ITER`, not a bool.

    >>> valid_max_iter(1000), valid_max_iter(0), valid_max_iter(10**20), valid_max_iter(True)
    (True, False, False, False)
    """
    return _is_count(value) and value >= 1


MAX_ITER_RULE = f"an integer from 1 to {MAX_ITER}"

SEED_MAX = 2**32 - 1
"""The largest seed (numpy's seeding accepts 0 .. 2**32 - 1)."""

BATCH_MAX = 4096
"""The largest number of images attacked together."""

THREADS_MAX = 1024
"""The largest number of CPU threads a run may ask for."""


@dataclass(frozen=True)
class AttackConfig:
    """Settings of one MND run (Algorithm 1). Defaults: ImageNet, non-targeted, full MND.

    Attributes:
        targeted: eq. (4) towards the least-likely class of eq. (5), else eq. (3).
        betas: (beta1, beta2, beta3) of eq. (7).
        r: power of eq. (4).
        deviation: norm of the deviation term, eq. (8) "l1" or eq. (9) "l2".
        gradient: norm of the gradient term, eq. (18) "l1" or eq. (19) "l2".
        reduction: form of the l1 norms: "mean" (default, mean absolute value)
            or "sum" (literal eqs. 8 and 18).
        l2_form: form of the l2 norms: "rms" (default, root mean square),
            "mse" (mean of squares) or "sum" (literal eqs. 9 and 19,
            ``sqrt(sum of squares)``); see :mod:`mnd.core.losses`.
        optimizer: "adam" (default) or "gd", plain gradient descent of eq. (21).
        step_size: alpha of eq. (21), the paper's learning rate 1e-4.
        max_iter: the paper's 1000.
        straight_through: evaluate the loss at the 8-bit image with a
            straight-through gradient, so one forward pass per iteration serves
            both the update and the success check.
        channels_last: run the model on channels-last tensors (faster
            convolutions on some GPUs).
        amp: mixed precision (float16 on CUDA, bfloat16 on CPU) for the
            model's forward passes. An image whose low-precision check says
            adversarial is re-checked in float32 at once and keeps iterating,
            in float32, if that check disagrees; an image whose logits, loss
            or gradient become non-finite (NaN or inf, e.g. a float16
            overflow) continues in float32 from its last finite iterate
            (``extras["float32_fallback"]`` counts both). Success is always
            decided in float32. On CPU, bfloat16 is several times slower than
            float32, not faster: 3.4 s against 0.75 s an iteration (4.6x) on
            EfficientNet-Lite0, batch 4, one thread of an AMD EPYC; about 10x
            on another CPU. Use it on CUDA only.
        progress: show a tqdm bar over iterations.
        margin: the attack-strength knob (not in the paper): success needs
            the best other logit to beat the true one (non-targeted), or the
            target to beat every other (targeted), by at least ``margin``;
            the attack runs until it does. 0 is the paper's argmax rule.
        diversity: transfer booster (not in the paper; :mod:`mnd.core.boosters`): the
            probability that the model of the adversarial term sees a randomly
            shrunk and padded copy of Z at a step (DI2FGSM's input diversity); 0: off.
        translation: transfer booster: side of the Gaussian kernel that smooths
            the adversarial term's gradient (TI's translation invariance), odd,
            3 to 31; 0: off. Neither booster changes the perceptual loss or the
            success check, which always reads the plain 8-bit image.
    """

    targeted: bool = False
    betas: tuple[float, float, float] = (100.0, 100.0, 100.0)
    r: float = 1.0
    deviation: Norm = "l1"
    gradient: Norm = "l1"
    reduction: Reduction = "mean"
    l2_form: L2Form = "rms"
    optimizer: Optimizer = "adam"
    step_size: float = 1e-4
    max_iter: int = 1000
    straight_through: bool = False
    channels_last: bool = False
    amp: bool = False
    progress: bool = False
    margin: float = 0.0
    diversity: float = 0.0
    translation: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be 'adam' or 'gd', got {self.optimizer!r}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be 'mean' or 'sum', got {self.reduction!r}")
        if self.l2_form not in L2_FORMS:
            raise ValueError(f"l2_form must be 'rms', 'mse' or 'sum', got {self.l2_form!r}")
        for name in ("deviation", "gradient"):
            if getattr(self, name) not in NORMS:
                raise ValueError(f"{name} must be 'l1' or 'l2', got {getattr(self, name)!r}")
        if not _is_count(self.max_iter):
            raise ValueError(f"max_iter must be an integer from 0 to {MAX_ITER}, got {self.max_iter!r}")
        if not _is_number(self.step_size) or self.step_size <= 0:
            raise ValueError(f"step_size must be a number > 0, got {self.step_size!r}")
        if not _is_number(self.r) or self.r <= 0:
            raise ValueError(f"r must be a number > 0, got {self.r!r}")
        if not valid_margin(self.margin):
            raise ValueError(f"margin must be a number >= 0, got {self.margin!r}")
        if len(self.betas) != 3 or not all(_is_number(b) for b in self.betas):
            raise ValueError(f"betas must be three numbers, got {self.betas!r}")
        if not valid_diversity(self.diversity):
            raise ValueError(f"diversity must be a probability from 0 to 1, got {self.diversity!r}")
        if not valid_translation(self.translation):
            raise ValueError(f"translation must be 0 or an odd kernel size from 3 to 31, got {self.translation!r}")
        if self.straight_through and (self.diversity or self.translation):
            raise ValueError("the transfer boosters (diversity, translation) cannot be combined with straight_through, "
                             "whose one forward pass also decides success on the plain image")

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


_CHOICES: dict[str, tuple[str, ...]] = {"optimizer": OPTIMIZERS, "reduction": REDUCTIONS, "l2_form": L2_FORMS}


_FLAGS = ("straight_through", "channels_last", "amp", "progress")


DEFAULT_KEYS: tuple[str, ...] = ("step_size", "max_iter", "margin", "diversity", "translation", *_CHOICES, *_FLAGS)
"""Keys a hyper-parameter file's [defaults] table may set (AttackConfig fields)."""


TASK_KEYS = ("betas", "r")


VARIANT_KEYS = ("label", "terms", "deviation", "gradient")


def _unknown(where: str, table: str, keys: Any, known: tuple[str, ...]) -> None:
    for key in keys:
        if key not in known:
            raise InputError(where, f"unknown key {key!r} in [{table}]; known: {', '.join(known)}")


def _check_default(where: str, key: str, value: Any) -> None:
    """One [defaults] value, with an error that names the key, the value and the file."""
    problem = None
    if key in _CHOICES and value not in _CHOICES[key]:
        problem = f"one of {', '.join(map(repr, _CHOICES[key]))}"
    elif key in _FLAGS and not isinstance(value, bool):
        problem = "true or false"
    elif key == "max_iter" and not valid_max_iter(value):
        problem = MAX_ITER_RULE
    elif key == "step_size" and (not _is_number(value) or value <= 0):
        problem = "a number > 0"
    elif key == "margin" and not valid_margin(value):
        problem = "a number >= 0"
    elif key == "diversity" and not valid_diversity(value):
        problem = "a probability from 0 to 1"
    elif key == "translation" and not valid_translation(value):
        problem = "0 or an odd kernel size from 3 to 31"
    if problem:
        raise InputError(where, f"[defaults] {key} = {value!r}: must be {problem}")


def _check_task(where: str, table: str, spec: Any) -> None:
    if not isinstance(spec, dict):
        raise InputError(where, f"[{table}] must be a table")
    _unknown(where, table, spec, TASK_KEYS)
    if "betas" not in spec:
        raise InputError(where, f"[{table}] has no betas (three numbers, e.g. betas = [100.0, 100.0, 100.0])")
    betas = spec["betas"]
    if not isinstance(betas, list) or len(betas) != 3 or not all(_is_number(b) for b in betas):
        raise InputError(where, f"[{table}] betas = {betas!r}: must be three numbers")
    if "r" in spec and (not _is_number(spec["r"]) or spec["r"] <= 0):
        raise InputError(where, f"[{table}] r = {spec['r']!r}: must be a number > 0")


def _check_variant(where: str, name: str, spec: Any) -> None:
    table = f"variants.{name}"
    if not isinstance(spec, dict):
        raise InputError(where, f"[{table}] must be a table")
    _unknown(where, table, spec, VARIANT_KEYS)
    terms = spec.get("terms", [])
    if not isinstance(terms, list) or any(t not in TERMS for t in terms):
        raise InputError(where, f"[{table}] terms = {terms!r}: must be a list of {', '.join(map(repr, TERMS))}")
    for key in ("deviation", "gradient"):
        if key in spec and spec[key] not in NORMS:
            raise InputError(where, f"[{table}] {key} = {spec[key]!r}: must be 'l1' or 'l2'")
    if "label" in spec and not isinstance(spec["label"], str):
        raise InputError(where, f"[{table}] label = {spec['label']!r}: must be a string")


def validate_hparams(data: dict[str, Any], where: str | Path) -> None:
    """Check a parsed hyper-parameter file; every problem is an InputError naming ``where``.

    Unknown keys (a misspelt ``step_sise``), values of the wrong type or out
    of range, unknown choices and a missing ``betas`` are all errors, so a
    typo never silently falls back to a default.
    """
    where = str(where)
    _unknown(where, "top level", data, ("defaults", "tasks", "variants"))
    for key in ("defaults", "tasks", "variants"):
        if not isinstance(data.get(key), dict):
            raise InputError(where, f"missing the [{key}] table")
    _unknown(where, "defaults", data["defaults"], DEFAULT_KEYS)
    for key, value in data["defaults"].items():
        _check_default(where, key, value)
    _unknown(where, "tasks", data["tasks"], TASKS)
    for task, settings in data["tasks"].items():
        if not isinstance(settings, dict):
            raise InputError(where, f"[tasks.{task}] must be a table")
        _unknown(where, f"tasks.{task}", settings, SETTINGS)
        for setting, spec in settings.items():
            _check_task(where, f"tasks.{task}.{setting}", spec)
    for name, spec in data["variants"].items():
        _check_variant(where, name, spec)


def load_hparams(path: str | Path | None = None) -> dict[str, Any]:
    """Read and validate the hyper-parameter file (the packaged one when ``path`` is None)."""
    if path is None:
        text = resources.files("mnd.presets").joinpath(HPARAMS_FILE).read_text()
        where = HPARAMS_FILE
    else:
        where = str(path)
        text = read_text_file(path, "hyper-parameter file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(where, f"not valid TOML ({exc})") from None
    validate_hparams(data, where)
    return data


def _variants(data: dict[str, Any]) -> dict[str, Variant]:
    """The variants of a validated hyper-parameter file."""
    return {
        name: Variant(
            name=name,
            label=spec.get("label", name),
            terms=tuple(spec.get("terms", ())),
            deviation=spec.get("deviation", "l1"),
            gradient=spec.get("gradient", "l1"),
        )
        for name, spec in data["variants"].items()
    }


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

    Everything read from a file is validated first (:func:`validate_hparams`):
    its problems are InputErrors naming the file. ``overrides`` are checked
    by AttackConfig (ValueError: they come from code, not from a file).

    Args:
        variant: a key of VARIANTS (or of the ``hparams`` file's variants).
        task: ``imagenet`` (Tables I, II) or ``faces`` (Tables VI, VII).
        targeted: the targeted setting.
        hparams: another hyper-parameter file in the packaged file's format.
        **overrides: AttackConfig fields to change (e.g. ``max_iter=50``,
            ``l2_form="mse"``).
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
