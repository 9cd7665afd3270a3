"""Differentiable stand-ins of sharing transforms, and expectation over transformation (not in the paper).

The real transforms of :mod:`mnd.core.robustness` (Pillow's JPEG, Pillow's
resize) have no gradient. To make a perturbation that survives them, the
attack follows the gradient through stand-ins that behave like them and are
differentiable, drawn at random around the setting to survive (expectation
over transformation, EOT):

- :func:`jpeg_standin`: kornia's differentiable JPEG
  (``kornia.enhance.jpeg_codec_differentiable``: colour conversion, 4:2:0
  chroma subsampling, DCT, quantisation with a smooth rounding, as Pillow's
  encoder does with real rounding), at a quality drawn within
  :data:`JPEG_SPREAD` of the target;
- :func:`resize_standin`: antialiased bilinear shrinking and bilinear
  enlarging back (as Pillow's resize), at a scale drawn within
  :data:`SCALE_SPREAD` (relative) of the target.

:class:`Expectation` averages a model's logits over the untouched image and
``samples`` draws of every stand-in. Averaging logits (not losses) keeps the
attack engine unchanged: it sees one model. Success is never decided on a
stand-in: the caller checks the real transforms of the saved file.

>>> x = torch.rand(1, 3, 32, 32)
>>> resize_standin(x, 0.5).shape, jpeg_standin(x, 75).shape
(torch.Size([1, 3, 32, 32]), torch.Size([1, 3, 32, 32]))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

JPEG_SPREAD = 10.0
"""A stand-in JPEG's quality is drawn uniformly from target ± this (kept within 1-99)."""

SCALE_SPREAD = 0.1
"""A stand-in resize's scale is drawn uniformly from target x (1 ± this) (kept within 0.05-0.95)."""


def jpeg_standin(images: torch.Tensor, quality: float) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] through kornia's differentiable JPEG at ``quality`` (1-99), same layout."""
    from kornia.enhance import jpeg_codec_differentiable  # imported here: kornia loads slowly, only EOT needs it

    q = torch.full((images.shape[0],), float(quality), device=images.device, dtype=images.dtype)
    return jpeg_codec_differentiable(images.clamp(0, 1), q).clamp(0, 1)


def resize_standin(images: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] shrunk by ``scale`` (antialiased bilinear) and enlarged back (bilinear), differentiable."""
    h, w = images.shape[-2:]
    small = (max(1, round(h * scale)), max(1, round(w * scale)))
    down = F.interpolate(images, size=small, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


@dataclass(frozen=True)
class StandIn:
    """A transform to survive, ``jpeg`` at a quality or ``resize`` at a scale, drawn at random around it."""

    kind: Literal["jpeg", "resize"]
    value: float

    def draw(self, generator: torch.Generator) -> float:
        """A quality (or scale) around the target: uniform within :data:`JPEG_SPREAD` (or :data:`SCALE_SPREAD`)."""
        u = float(torch.rand((), generator=generator)) * 2 - 1
        if self.kind == "jpeg":
            return min(99.0, max(1.0, self.value + u * JPEG_SPREAD))
        return min(0.95, max(0.05, self.value * (1 + u * SCALE_SPREAD)))

    def apply(self, images: torch.Tensor, value: float) -> torch.Tensor:
        """The stand-in at ``value`` (a drawn quality or scale)."""
        return jpeg_standin(images, value) if self.kind == "jpeg" else resize_standin(images, value)


class Expectation(nn.Module):
    """Logits averaged over the image and random stand-ins of the transforms to survive (EOT).

    ``forward(z)`` with gradients enabled returns the mean of ``model(view(z))``
    and of ``model(view(t(z)))`` for ``samples`` random draws of each stand-in
    ``t``; without gradients, ``model(view(z))`` alone (a success check is the
    caller's, on the real transforms).

    Args:
        model: the classifier (inputs in [0, 1]).
        view: what the model sees of ``z`` (identity, or a differentiable preprocessing).
        standins: the transforms to survive.
        samples: draws per stand-in and forward pass (at least 1).
        seed: seeds the draws, so a run is repeatable.
    """

    def __init__(self, model: nn.Module, standins: Sequence[StandIn], *, view: Callable[[torch.Tensor], torch.Tensor]
                 | None = None, samples: int = 1, seed: int = 0) -> None:
        super().__init__()
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        self.model = model
        self.view = view if view is not None else (lambda z: z)
        self.standins = tuple(standins)
        self.samples = samples
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.model(self.view(z))
        if not torch.is_grad_enabled() or not self.standins:
            return logits
        total, count = logits, 1
        for standin in self.standins:
            for _ in range(self.samples):
                total = total + self.model(self.view(standin.apply(z, standin.draw(self.generator))))
                count += 1
        return total / count
