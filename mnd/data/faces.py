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
  for :class:`mnd.models.dlib_resnet.DlibResNet`, placed from MTCNN's eye centres
  (dlib's own landmark model is not used).
- :func:`gallery_from_folder`: a :class:`mnd.models.gallery.Gallery` enrolled from a
  folder of photos, cut as the model's spec says.

facenet-pytorch (MTCNN) is an optional dependency (installed with
``--no-deps``, see ``requirements-nodeps.txt``): it is imported when a face is
first detected, so this module imports without it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from mnd.data.imageio import list_images, load_rgb
from mnd.errors import InputError
from mnd.models.dlib_resnet import CHIP_SIZE, FIVE_POINT_TEMPLATE, ChipDetails, chip_details_from_points, extract_chip
from mnd.models.facenet import FACENET_SIZE
from mnd.models.gallery import Gallery, Metric
from mnd.models.registry import ModelSpec

MIN_FACE_SIZE = 20  # MTCNN's default smallest face, in pixels


# --- detection and crops -----------------------------------------------------


FaceCutter = Callable[..., Any]
"""``cut(pixels, min_prob=..., where=...)``: the faces of an (H, W, 3) uint8 photo,
most prominent first, as an object whose ``faces`` is an (N, 3, S, S) tensor in
[0, 1] (:class:`mnd.data.faces.FaceCrops`); raises InputError when there is none."""


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
    :func:`mnd.models.facenet.inception_resnet_v1_vggface2`).

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
        a :class:`mnd.models.dlib_resnet.ChipDetails`.
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
    :func:`mnd.models.dlib_resnet.extract_chip`.

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

    See :meth:`mnd.models.gallery.Gallery.from_folder` (the arguments, the errors).
    """
    return enroll_folder(model, folder, crop=functools.partial(cut_faces, spec=spec), metric=metric,
                               scale=scale, threshold=threshold, min_prob=min_prob)


MIN_IDENTITIES = 2
"""A gallery names at least two people: with one, "not the true identity" and
"the least-likely identity" have no meaning (every face is that one person)."""


def check_identity_count(folder: str | Path, identities: Sequence[str], minimum: int = MIN_IDENTITIES) -> None:
    """Raise InputError naming ``folder`` when it has fewer than ``minimum`` identities."""
    if len(identities) < minimum:
        found = f"only {identities[0]!r}" if len(identities) == 1 else str(len(identities))
        why = " (with one person there is no other identity to be mistaken for)" if len(identities) == 1 else ""
        raise InputError(
            folder, f"a face gallery needs at least {minimum} identities (sub-folders of photos), found {found}{why}"
        )


def gallery_photos(folder: str | Path, *, min_identities: int = MIN_IDENTITIES) -> dict[str, list[Path]]:
    """The photos of each identity of a gallery folder, checked without reading any image.

    ``folder`` holds one sub-folder per identity (hidden ones are skipped),
    each holding photos. The command line calls this before loading a model,
    so a bad gallery is reported at once.

    Args:
        folder: the gallery folder.
        min_identities: fewer identity folders than this is an error.

    Returns:
        identity name -> its photo paths (sorted), identities sorted by name.

    Raises:
        InputError: naming the folder: missing, a file, no identity
            sub-folders, a sub-folder without photos, too few identities.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(folder, "gallery folder not found")
    if not folder.is_dir():
        raise InputError(folder, "gallery is a file, expected a folder with one sub-folder of photos per identity")
    try:
        people = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        out = {person.name: list_images([person]) for person in people}
    except OSError as exc:
        where = getattr(exc, "filename", None) or folder
        raise InputError(where, f"cannot read the gallery ({exc.strerror or exc})") from None
    if not out:
        raise InputError(folder, "no identity sub-folders (expected <folder>/<identity>/<photos>)")
    for person, photos in out.items():
        if not photos:
            raise InputError(folder / person, "no photos in this identity folder")
    check_identity_count(folder, list(out), min_identities)
    return out


def enroll_folder(model: nn.Module, folder: str | Path, *, crop: FaceCutter, metric: Metric = "cosine",
                scale: float = 10.0, threshold: float | None = None, min_prob: float = 0.9) -> Gallery:
    """Enroll one identity per sub-folder of ``folder`` (its name is the label).

    Each photo contributes its most prominent face (the first ``crop`` gives:
    MTCNN's largest). :func:`gallery_from_folder` calls this with the crop the
    model's spec chooses.

    Args:
        model: the embedding network.
        folder: holds ``<identity>/<photo>`` files.
        crop: ``crop(pixels, min_prob=..., where=...)``, see :data:`FaceCutter`.
        metric, scale, threshold: see :class:`Gallery`.
        min_prob: MTCNN probability threshold, passed to ``crop``.

    Raises:
        InputError: missing folder, no identity folders, a folder without
            photos, a photo without a face, or fewer than two identities.
    """
    folder = Path(folder)
    people = gallery_photos(folder, min_identities=1)
    gallery = Gallery(model, metric=metric, scale=scale, threshold=threshold)
    for person, photos in people.items():
        chips = [crop(load_rgb(p).pixels, min_prob=min_prob, where=p).faces[:1] for p in photos]
        gallery.enroll(person, torch.cat(chips))
    check_identity_count(folder, gallery.identities)
    return gallery
