"""Faces in photos: MTCNN detection and the crop each face model takes, chosen in one place.

The paper (section IV-C) detects and crops faces with facenet-pytorch's MTCNN
(160x160); dlib's descriptor network takes its own aligned 150x150 chips.
Which cut a model takes is part of its :class:`mnd.models.ModelSpec`
(``face_crop``), and :func:`cut_faces` is the one function that applies it:
the command line, the experiment grid, the gallery and the VGGFace2 test-set
selection all cut faces through it.

- :func:`cut_faces`: every face of a photo as the model ``spec`` expects it.
- :func:`mtcnn_crops`: every face as a square MTCNN crop (facenet-pytorch's
  ``extract_face``), in [0, 1], no prewhitening.
- :func:`dlib_face_chips`: 150x150 chips aligned like dlib's ``get_face_chip``
  for :class:`mnd.dlib_resnet.DlibResNet`, placed from MTCNN's eye centres
  (dlib's own landmark model is not used).
- :func:`gallery_from_folder`: a :class:`mnd.gallery.Gallery` enrolled from a
  folder of photos, cut as the model's spec says.

facenet-pytorch (MTCNN) is an optional dependency (installed with
``--no-deps``, see ``requirements-nodeps.txt``): it is imported when a face is
first detected, so this module imports without it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from mnd.dlib_resnet import CHIP_SIZE, FIVE_POINT_TEMPLATE, ChipDetails, chip_details_from_points, extract_chip
from mnd.errors import InputError
from mnd.facenet import FACENET_SIZE
from mnd.gallery import Gallery, Metric
from mnd.models import ModelSpec

MIN_FACE_SIZE = 20  # MTCNN's default smallest face, in pixels


# --- detection and crops -----------------------------------------------------


@dataclass(frozen=True)
class FaceCrops:
    """Faces found in one photo, largest first (MTCNN's order with ``select_largest``).

    Attributes:
        faces: (N, 3, S, S) crops, RGB float in [0, 1].
        boxes: (N, 4) detection boxes (x1, y1, x2, y2) in photo pixels.
        probs: (N,) MTCNN face probabilities.
        landmarks: (N, 5, 2) MTCNN points (x, y): eye on the image's left, eye
            on the image's right, nose tip, mouth corner left, mouth corner right.
    """

    faces: torch.Tensor
    boxes: torch.Tensor
    probs: torch.Tensor
    landmarks: torch.Tensor

    def __len__(self) -> int:
        return int(self.faces.shape[0])


ImageLike = np.ndarray | Image.Image


def _as_pil(image: ImageLike, where: str | Path) -> Image.Image:
    """An RGB PIL image from a PIL image or an (H, W), (H, W, 3) or (H, W, 4) uint8 array."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise InputError(where, f"expected 8-bit pixels (uint8), got an array of {image.dtype}")
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)):
            return Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
        raise InputError(where, f"expected an (H, W, 3) RGB array, got shape {image.shape}")
    raise InputError(where, f"expected a numpy array or PIL image, got {type(image).__name__}")


@functools.lru_cache(maxsize=1)
def _mtcnn() -> nn.Module:
    from facenet_pytorch import MTCNN  # optional dependency (module docstring); P/R/O-net weights ship in it

    return MTCNN(keep_all=True, post_process=False, select_largest=True, min_face_size=MIN_FACE_SIZE, device="cpu")


def detect_faces(image: ImageLike, *, min_prob: float = 0.9,
                 where: str | Path = "image") -> tuple[Image.Image, np.ndarray, np.ndarray, np.ndarray]:
    """Run MTCNN on a photo.

    Args:
        image: RGB photo, (H, W, 3) uint8 array or PIL image.
        min_prob: drop detections less probable than this.
        where: the photo's name, for error messages.

    Returns:
        (the photo as RGB PIL image, boxes (N, 4), probs (N,), landmarks (N, 5, 2)),
        largest face first, N >= 1.

    Raises:
        InputError: no face (or the photo is smaller than MTCNN's 20-pixel minimum face).
    """
    pil = _as_pil(image, where)
    if min(pil.size) < MIN_FACE_SIZE:
        raise InputError(where, f"no face found: the image ({pil.width}x{pil.height}) is smaller than "
                                f"MTCNN's minimum face size of {MIN_FACE_SIZE} pixels")
    boxes, probs, points = _mtcnn().detect(pil, landmarks=True)
    if boxes is None:
        raise InputError(where, "no face found by MTCNN")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
    keep = probs >= min_prob
    if not keep.any():
        raise InputError(where, f"no face found with probability >= {min_prob} "
                                f"(best MTCNN candidate: {probs.max():.3f})")
    return pil, boxes[keep], probs[keep], points[keep]


def mtcnn_crops(image: ImageLike, *, size: int = FACENET_SIZE, margin: int = 0, min_prob: float = 0.9,
                where: str | Path = "image") -> FaceCrops:
    """Every face in a photo as a square crop, the paper's facenet-pytorch pipeline.

    The crop is MTCNN's box (plus ``margin`` pixels of the output size),
    resized bilinearly by PIL, exactly as facenet-pytorch's ``extract_face``
    does, but returned in [0, 1] without its (x - 127.5) / 128
    standardization (that lives inside
    :func:`mnd.facenet.inception_resnet_v1_vggface2`).

    Args:
        image: RGB photo, (H, W, 3) uint8 array or PIL image.
        size: crop side (160 for InceptionResnetV1).
        margin: margin around the box, in pixels of the crop (facenet-pytorch's meaning).
        min_prob: drop detections less probable than this.
        where: the photo's name, for error messages.

    Raises:
        InputError: no face found.
    """
    from facenet_pytorch import extract_face  # optional dependency (module docstring)

    pil, boxes, probs, points = detect_faces(image, min_prob=min_prob, where=where)
    faces = torch.stack([extract_face(pil, box, size, margin) for box in boxes]).div(255.0)
    return FaceCrops(faces.clamp(0, 1), torch.from_numpy(boxes).float(), torch.from_numpy(probs).float(),
                     torch.from_numpy(points).float())


def dlib_chip_details_from_eyes(left_eye: Sequence[float], right_eye: Sequence[float], size: int = 150,
                                padding: float = 0.25) -> ChipDetails:
    """dlib's face-chip window placed from two eye centres (image-left eye first).

    dlib fits its 5-point template (four eye corners and the base of the
    nose) to its own landmarks. MTCNN gives eye centres and a nose tip
    instead, so only the eyes are used: each eye centre is matched to the
    mean of the template's two corners of that eye. On the reference photos
    this puts the descriptor within 0.08-0.17 (Euclidean) of dlib's own
    pipeline, against 0.26-0.50 for a resized MTCNN box (book/reading-notes.md).

    Returns:
        a :class:`mnd.dlib_resnet.ChipDetails`.
    """
    template = (padding + np.asarray(FIVE_POINT_TEMPLATE)) / (2 * padding + 1) * size
    chip_eyes = np.stack([(template[2] + template[3]) / 2, (template[0] + template[1]) / 2])
    image_eyes = np.asarray([left_eye, right_eye], dtype=np.float64)
    return chip_details_from_points(chip_eyes, image_eyes, size)


def dlib_face_chips(image: ImageLike, *, min_prob: float = 0.9, quantize: bool = True,
                    where: str | Path = "image") -> FaceCrops:
    """Every face in a photo as a 150x150 chip for dlib's descriptor network.

    Faces are found by MTCNN and aligned like dlib's ``get_face_chip`` (see
    :func:`dlib_chip_details_from_eyes`), sampled by
    :func:`mnd.dlib_resnet.extract_chip`.

    Args:
        image: RGB photo, (H, W, 3) uint8 array or PIL image.
        min_prob: drop detections less probable than this.
        quantize: emulate dlib's 8-bit sampling (True) or stay continuous.
        where: the photo's name, for error messages.

    Raises:
        InputError: no face found.
    """
    pil, boxes, probs, points = detect_faces(image, min_prob=min_prob, where=where)
    photo = torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255.0)
    chips = [extract_chip(photo, dlib_chip_details_from_eyes(p[0], p[1], CHIP_SIZE), quantize=quantize)
             for p in points]
    return FaceCrops(torch.stack(chips), torch.from_numpy(boxes).float(), torch.from_numpy(probs).float(),
                     torch.from_numpy(points).float())


# --- the one choice: which cut a model takes -------------------------------------------


def cut_faces(image: ImageLike, spec: ModelSpec, *, where: str | Path = "image", min_prob: float = 0.9) -> FaceCrops:
    """Every face in a photo, cut as the model ``spec`` takes it, most prominent (largest) first.

    ``spec.face_crop`` chooses: ``dlib_chip`` gives :func:`dlib_face_chips`
    (150x150, dlib's alignment); ``mtcnn`` (and a model that is no face model,
    given faces anyway) gives :func:`mtcnn_crops` of ``spec.input_size``.

    Args:
        image: RGB photo, (H, W, 3) uint8 array or PIL image.
        spec: the model the faces are for.
        where: the photo's name, for error messages.
        min_prob: drop detections less probable than this.

    Raises:
        InputError: no face found.

    >>> from mnd import models
    >>> cut_faces(np.zeros((8, 8, 3), np.uint8), models.spec("dlib_resnet_v1"), where="tiny.png")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mnd.errors.InputError: tiny.png: no face found: the image (8x8) is smaller than MTCNN's minimum face size...
    """
    if spec.face_crop == "dlib_chip":
        return dlib_face_chips(image, min_prob=min_prob, where=where)
    return mtcnn_crops(image, size=spec.input_size, min_prob=min_prob, where=where)


def gallery_from_folder(model: nn.Module, spec: ModelSpec, folder: str | Path, *, metric: Metric = "cosine",
                        scale: float = 10.0, threshold: float | None = None, min_prob: float = 0.9) -> Gallery:
    """Enroll one identity per sub-folder of ``folder``, each face cut by :func:`cut_faces` for ``spec``.

    See :meth:`mnd.gallery.Gallery.from_folder` (the arguments, the errors).
    """
    return Gallery.from_folder(model, folder, crop=functools.partial(cut_faces, spec=spec), metric=metric,
                               scale=scale, threshold=threshold, min_prob=min_prob)
