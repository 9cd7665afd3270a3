"""Where the faces of a photo are and how each is cut as a face model takes it, differentiably.

:func:`find_faces` detects every face with MTCNN (the same detection and
placement as :func:`mnd.data.faces.cut_faces`) and returns how each is cut:
dlib's aligned chip (:class:`DlibCut`) or the MTCNN box resized
(:class:`BoxCut`). :class:`FaceView` turns photos into their face crops with
gradients reaching exactly the faces' footprints (:class:`Box`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnd.core.pixels import quantize
from mnd.data.faces import detect_faces, dlib_chip_details_from_eyes
from mnd.models.dlib_resnet import CHIP_SIZE, ChipDetails, chip_box, extract_chip
from mnd.models.registry import ModelSpec


# --- boxes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """The pixels ``left <= x < right``, ``top <= y < bottom`` of a photo."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def grown(self, pixels: int, height: int, width: int) -> Box:
        """``pixels`` more on every side, clipped to a ``height`` x ``width`` photo."""
        return Box(max(self.left - pixels, 0), max(self.top - pixels, 0), min(self.right + pixels, width),
                   min(self.bottom + pixels, height))

    def aligned(self, step: int, height: int, width: int) -> Box:
        """Widened to multiples of ``step`` (or the photo's edge).

        >>> Box(17, 3, 40, 50).aligned(16, 60, 45)
        Box(left=16, top=0, right=45, bottom=60)
        """
        return Box(self.left // step * step, self.top // step * step, min(-(-self.right // step) * step, width),
                   min(-(-self.bottom // step) * step, height))

    def of(self, image: torch.Tensor) -> torch.Tensor:
        """These pixels of ``image`` (..., H, W), a view."""
        return image[..., self.top : self.bottom, self.left : self.right]

    def shifted(self, left: int, top: int) -> Box:
        """The same pixels in the coordinates of a crop whose first pixel is (left, top)."""
        return Box(self.left - left, self.top - top, self.right - left, self.bottom - top)

    @staticmethod
    def union(boxes: Sequence[Box]) -> Box:
        """The smallest box holding every box."""
        return Box(min(b.left for b in boxes), min(b.top for b in boxes), max(b.right for b in boxes),
                   max(b.bottom for b in boxes))


# --- how each face is cut -------------------------------------------------------------


class FaceCut(Protocol):
    """One face's crop as a function of the photo: differentiable, reading only its footprint."""

    size: int

    def footprint(self, height: int, width: int) -> Box:
        """The pixels of a ``height`` x ``width`` photo the crop reads (every other pixel has no effect)."""
        ...

    def __call__(self, pixels: torch.Tensor, left: int, top: int) -> torch.Tensor:
        """The (3, size, size) crop from ``pixels``, the footprint's (3, h, w) pixels whose first is (left, top)."""
        ...


@dataclass(frozen=True)
class DlibCut:
    """dlib's aligned chip (:func:`mnd.models.dlib_resnet.extract_chip`, continuous, ``quantize=False``),
    computed in float32 (a large face's pyramid costs half the time of float64; chips differ by ~1e-7)."""

    details: ChipDetails
    size: int = CHIP_SIZE
    precision: torch.dtype = torch.float32

    def footprint(self, height: int, width: int) -> Box:
        box = chip_box(self.details, height, width)
        if box is None:
            raise ValueError(f"the face chip {self.details.rect} lies outside the {width}x{height} photo")
        left, top, right, bottom = box
        return Box(left, top, right + 1, bottom + 1)

    def __call__(self, pixels: torch.Tensor, left: int, top: int) -> torch.Tensor:
        l, t, r, b = self.details.rect
        local = ChipDetails((l - left, t - top, r - left, b - top), self.details.angle, self.details.rows,
                            self.details.cols)
        return extract_chip(pixels, local, quantize=False, precision=self.precision)


@dataclass(frozen=True)
class BoxCut:
    """The MTCNN box resized to ``size``: facenet-pytorch's ``extract_face`` (no margin), whose Pillow bilinear
    resize (antialiased when shrinking) is torch's antialiased bilinear here, within a few 8-bit levels;
    rounded to 8 bits with a straight-through gradient, as Pillow's crop is."""

    box: Box
    size: int

    def footprint(self, height: int, width: int) -> Box:
        b = self.box
        return Box(max(b.left, 0), max(b.top, 0), min(b.right, width), min(b.bottom, height))

    def __call__(self, pixels: torch.Tensor, left: int, top: int) -> torch.Tensor:
        crop = F.interpolate(pixels[None], size=(self.size, self.size), mode="bilinear", align_corners=False,
                             antialias=True)[0]
        return quantize(crop).detach() + (crop - crop.detach())


@dataclass(frozen=True)
class Faces:
    """The faces found on a clean photo, largest first: how each is cut, and MTCNN's probabilities."""

    cuts: tuple[FaceCut, ...]
    probs: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.cuts)


def find_faces(pixels: np.ndarray, spec: ModelSpec, *, where: str | Path = "image", min_prob: float = 0.9) -> Faces:
    """Every face MTCNN finds in an (H, W, 3) uint8 photo, cut as the model ``spec`` takes it.

    The same detection and placement as :func:`mnd.data.faces.cut_faces`:
    ``dlib_chip`` models get dlib's chip placed from MTCNN's eye centres
    (:func:`mnd.data.faces.dlib_chip_details_from_eyes`), other face models
    the MTCNN box resized to their input size.

    Raises:
        InputError: no face found.
    """
    _, boxes, probs, points = detect_faces(pixels, min_prob=min_prob, where=where)
    height, width = pixels.shape[:2]
    cuts: list[FaceCut] = []
    for box, eyes in zip(boxes, points):
        if spec.face_crop == "dlib_chip":
            cuts.append(DlibCut(dlib_chip_details_from_eyes(eyes[0], eyes[1], CHIP_SIZE)))
        else:  # extract_face's integer box, clipped to the photo
            cuts.append(BoxCut(Box(int(max(box[0], 0)), int(max(box[1], 0)), int(min(box[2], width)),
                                   int(min(box[3], height))), spec.input_size))
    return Faces(tuple(cuts), tuple(float(p) for p in probs))


class FaceView(nn.Module):
    """A photo (or a crop of it) -> the crops of its faces: (N, 3, h, w) -> (N * K, 3, S, S), image by image.

    Each face's footprint is cut from the input first (a view), so the cost
    does not depend on the photo's size; gradients reach exactly the
    footprints' pixels.

    Args:
        cuts: the K faces, in photo coordinates.
        height, width: the photo's size.
        left, top: the photo pixel that is the input's first (a crop's origin).
    """

    def __init__(self, cuts: Sequence[FaceCut], height: int, width: int, left: int = 0, top: int = 0) -> None:
        super().__init__()
        if not cuts:
            raise ValueError("a face view needs at least one face")
        self.cuts = tuple(cuts)
        self.left, self.top = left, top
        self.footprints = tuple(cut.footprint(height, width) for cut in self.cuts)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or z.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) photos, got {tuple(z.shape)}")
        crops = [cut(box.shifted(self.left, self.top).of(image), box.left, box.top)
                 for image in z for cut, box in zip(self.cuts, self.footprints)]
        return torch.stack(crops)


__all__ = ["Box", "BoxCut", "DlibCut", "FaceCut", "FaceView", "Faces", "find_faces"]
