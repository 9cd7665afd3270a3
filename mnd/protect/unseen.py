"""Unseen-model checks: does an image fool models that never gave it a gradient?

A checked model (``--check MODEL``, a preset's ``unseen = [...]``) only reads
images: its label on the saved file is compared with its own label on the
original, and again after a JPEG at quality 75 of the saved file (the
robustness columns' JPEG, :func:`mnd.core.robustness.jpeg`). "Fooled" means the
label changed, in both settings (a targeted image that moves another model
off its label transfers, even if not to the target). Three row columns hold
the verdicts, one value per checked model, in the order given
(:data:`UNSEEN_COLUMNS`); :func:`unseen_of` reads them back.

A check never differentiates its model: everything runs under
``torch.no_grad`` on frozen models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mnd import models
from mnd.core import robustness
from mnd.core.judge import combined, judged_logits
from mnd.core.pixels import quantize
from mnd.errors import InputError

UNSEEN_COLUMNS = ("unseen", "unseen_fooled", "unseen_jpeg75")
"""``unseen``: the checked models' names; ``unseen_fooled``: 1/0 per model, its label on the saved file differs
from its label on the original; ``unseen_jpeg75``: the same after JPEG 75 of the saved file. Values joined by
``;``, in one order; empty when no model was checked."""

SEP = ";"

JPEG_QUALITY = 75

CAVEAT = ("a model that was not checked may still read the photo correctly: these checks say only what the models "
          "named here read")
"""What every summary of unseen-model checks says in words."""


@dataclass
class Checked:
    """A model that reads the images and never gives a gradient.

    ``view`` turns an 8-bit image (N, 3, H, W) into the model's input (default:
    the image itself, for a model that reads the same tensor as the attacked one).
    """

    name: str
    model: nn.Module
    view: Callable[[torch.Tensor], torch.Tensor] | None = None
    _originals: dict[str, int] = field(default_factory=dict, repr=False)  # an original's label, by its 8-bit digest

    @torch.no_grad()
    def labels(self, images: torch.Tensor) -> torch.Tensor:
        """(N,) the model's top class on each 8-bit image, on the CPU."""
        device = next((p.device for p in self.model.parameters()), images.device)
        seen = quantize(images.detach()).to(device)
        seen = self.view(seen) if self.view is not None else seen
        return combined(judged_logits(self.model, seen)).argmax(1).cpu()


    def original_labels(self, images: torch.Tensor) -> torch.Tensor:
        """:meth:`labels` of originals, each read once (a grid checks every method's image against the same original).

        >>> import torch
        >>> c = Checked("m", torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)))
        >>> x = torch.rand(2, 3, 2, 2)
        >>> bool((c.original_labels(x) == c.labels(x)).all()), len(c._originals)
        (True, 2)
        """
        pixels = quantize(images.detach()).cpu()
        keys = [hashlib.sha1((pixel * 255).round().to(torch.uint8).numpy().tobytes()).hexdigest() for pixel in pixels]
        missing = [i for i, key in enumerate(keys) if key not in self._originals]
        if missing:
            for i, label in zip(missing, self.labels(pixels[missing]).tolist()):
                self._originals[keys[i]] = int(label)
        return torch.tensor([self._originals[key] for key in keys])


def check_names(names: Iterable[str], attacked: str, *, where: str = "--check",
                same_input_as: models.ModelSpec | None = None, task: str | None = None) -> list[str]:
    """The checked models' names, refused with one line when they cannot be checked.

    A checked model may not be the attacked model or one of its ensemble's
    members (it would not be unseen), may not repeat, must be registered,
    and must be a classifier that returns labels (an ImageNet model, or a face
    classifier over identities). With ``same_input_as`` (``mnd attack``, whose
    saved file is the attacked model's input), it must read the same input size
    and task; with ``task`` (``mnd protect``, where each model reads the
    full photo its own way), the same task: ImageNet classifiers for a
    classifier, face classifiers for a face model (each finds the faces itself).

    Raises:
        InputError: naming ``where`` and the model.
    """
    out: list[str] = []
    attacked_members = set(models.members(attacked))
    for name in names:
        if name in out:
            raise InputError(where, f"{name} is checked twice")
        if name in attacked_members:
            raise InputError(where, f"{name} is the attacked model (or a member of its ensemble), so it is not "
                             "unseen; check another model")
        if len(models.members(name)) > 1:
            raise InputError(where, f"{name}: check one model at a time (repeat {where})")
        spec = models.spec(name)
        if spec.embedding:
            raise InputError(where, f"{name} returns embeddings, not labels; it cannot be checked here")
        if task is not None and spec.task != task:
            raise InputError(where, f"{name} reads {spec.task} inputs and the attacked model {task} ones; check a "
                             f"{task} model")
        if same_input_as is not None and (spec.task, spec.input_size) != (same_input_as.task, same_input_as.input_size):
            raise InputError(where, f"{name} reads {spec.input_size} px {spec.task} inputs, the attacked model "
                             f"{same_input_as.name} {same_input_as.input_size} px {same_input_as.task} ones: "
                             "mnd attack checks only models that read the saved file as it is")
        out.append(name)
    return out


def load_checked(names: Sequence[str], device: str = "cpu") -> list[Checked]:
    """Each checked model, frozen, on ``device``, reading the image as it is."""
    return [Checked(name, models.freeze(models.load(name).to(device))) for name in names]


def fooled(checked: Checked, clean: torch.Tensor, saved: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) bool twice: the label on ``saved`` differs from the label on ``clean``; the same after JPEG 75."""
    before = checked.original_labels(clean)
    after = checked.labels(saved)
    shared = checked.labels(robustness.jpeg(saved.detach().cpu(), JPEG_QUALITY))
    return after != before, shared != before


def _join(values: Iterable[Any]) -> str:
    return SEP.join(str(v) for v in values)


def columns_of(names: Sequence[str], plain: Sequence[bool | None], jpeg: Sequence[bool | None]) -> dict[str, str]:
    """One image's :data:`UNSEEN_COLUMNS` from per-model verdicts (None: not measured, written empty)."""
    flag = lambda v: "" if v is None else int(bool(v))  # noqa: E731
    return {"unseen": _join(names), "unseen_fooled": _join(flag(v) for v in plain),
            "unseen_jpeg75": _join(flag(v) for v in jpeg)} if names else dict.fromkeys(UNSEEN_COLUMNS, "")


def unseen_columns(checked: Sequence[Checked], clean: torch.Tensor, saved: torch.Tensor) -> list[dict[str, str]]:
    """The :data:`UNSEEN_COLUMNS` of each image (empty strings without checked models).

    Args:
        checked: the models to check.
        clean: (N, 3, H, W) the originals as the views expect them.
        saved: (N, 3, H, W) the saved files, read back.
    """
    n = saved.shape[0]
    if not checked:
        return [dict.fromkeys(UNSEEN_COLUMNS, "") for _ in range(n)]
    verdicts = [fooled(c, clean, saved) for c in checked]
    names = [c.name for c in checked]
    return [columns_of(names, [bool(p[i]) for p, _ in verdicts], [bool(j[i]) for _, j in verdicts]) for i in range(n)]


def _flags(text: str, n: int) -> list[bool | None]:
    parts = text.split(SEP) if text else []
    return [None if i >= len(parts) or parts[i] not in ("0", "1") else parts[i] == "1" for i in range(n)]


def unseen_of(row: Mapping[str, Any]) -> dict[str, tuple[bool | None, bool | None]]:
    """model -> (fooled on the saved file, fooled after JPEG 75) from a row's columns ({} when none checked).

    >>> unseen_of({"unseen": "a;b", "unseen_fooled": "1;0", "unseen_jpeg75": "0;0"})
    {'a': (True, False), 'b': (False, False)}
    """
    text = str(row.get("unseen") or "")
    if not text or text == "nan":
        return {}
    names = text.split(SEP)
    plain = _flags(str(row.get("unseen_fooled") or ""), len(names))
    jpeg = _flags(str(row.get("unseen_jpeg75") or ""), len(names))
    return {name: (plain[i], jpeg[i]) for i, name in enumerate(names)}


def unseen_summary(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per checked model, "fooled on k/n saved files, j/n after JPEG 75", then :data:`CAVEAT` ([] if none)."""
    counts: dict[str, list[int]] = {}
    for row in rows:
        for name, (plain, jpeg) in unseen_of(row).items():
            c = counts.setdefault(name, [0, 0, 0])
            c[0] += 1
            c[1] += bool(plain)
            c[2] += bool(jpeg)
    if not counts:
        return []
    lines = [f"{name} (not attacked): fooled on {k}/{n} saved files, {j}/{n} after JPEG 75"
             for name, (n, k, j) in counts.items()]
    return lines + [CAVEAT]


__all__ = ["CAVEAT", "JPEG_QUALITY", "SEP", "UNSEEN_COLUMNS", "Checked", "check_names", "columns_of", "fooled",
           "load_checked",
           "unseen_columns", "unseen_of", "unseen_summary"]
