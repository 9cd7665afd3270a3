"""One preprocessing: a photo becomes a model's input (resize the shorter side and centre crop, or a face crop)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import functional as TF

from mnd import models
from mnd.core.pixels import quantize
from mnd.data import faces
from mnd.data.imageio import LoadedImage, load_rgb, to_tensor
from mnd.errors import InputError, ModelUnavailableError
from mnd.models.registry import ModelSpec

VGGFACE2_MODEL = "inception_resnet_v1_vggface2"
"""The paper's face recogniser: the VGGFace2-10 selection keeps photos in which its face crop is found."""


def prepare_image(image: LoadedImage | np.ndarray | str | Path, spec: ModelSpec, *,
                  where: str | Path | None = None) -> torch.Tensor:
    """A photo as a classifier's input: resize the shorter side, centre crop, 8-bit values.

    The protocol of every ImageNet model here: the shorter side is resized to
    ``spec.resize`` (bilinear, antialiased, on the float image; skipped when
    it already has that size), then the centre ``spec.input_size`` square is
    cut and rounded to the 8-bit grid (256 then 224 for VGG19 and
    EfficientNet-Lite0: the usual ImageNet evaluation transform; the paper
    does not state how its ImageNet images were prepared, reading notes,
    section 12). No normalization: the model wrappers normalize. Face models
    take faces instead (:func:`mnd.data.faces.cut_faces`).

    Args:
        image: a loaded photo, (H, W, 3) uint8 pixels, or an image file.
        spec: the model the input is for (``resize``, ``input_size``, ``name``).
        where: the photo's name for error messages (default: its path, or "image").

    Returns:
        (3, S, S) float32 in [0, 1] on the 8-bit grid, S = ``spec.input_size``.

    Raises:
        InputError: not (H, W, 3) uint8 pixels, or a photo smaller than the model's input.

    >>> prepare_image(np.zeros((300, 400, 3), np.uint8), models.spec("vgg19")).shape
    torch.Size([3, 224, 224])
    """
    if isinstance(image, LoadedImage):
        pixels, where = image.pixels, image.path if where is None else where
    elif isinstance(image, (str, Path)):
        pixels, where = load_rgb(image).pixels, image if where is None else where
    else:
        pixels = image
    where = "image" if where is None else where
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        got = f"{pixels.shape} {pixels.dtype}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise InputError(where, f"expected (H, W, 3) uint8 pixels, got {got}")
    h, w = pixels.shape[:2]
    if min(h, w) < spec.input_size:
        raise InputError(
            where, f"image is {w}x{h}, smaller than the {spec.input_size}x{spec.input_size} that {spec.name} needs"
        )
    t = to_tensor(pixels)
    if min(h, w) != spec.resize:
        t = TF.resize(t, spec.resize, antialias=True)
    return quantize(TF.center_crop(t, [spec.input_size, spec.input_size]))


def vggface2_face(path: str | Path) -> torch.Tensor:
    """The face of a photo file as the paper's recogniser takes it: MTCNN, 160 x 160 (:func:`mnd.data.faces.cut_faces`).

    The cropper of the VGGFace2-10 selection (:func:`select_vggface2_10`).
    When several faces are found, the one with the largest box is kept
    (facenet-pytorch's ``select_largest`` default), ties broken by detection
    probability.

    Args:
        path: an image file.

    Returns:
        (3, 160, 160) float in [0, 1].

    Raises:
        InputError: the file is unreadable, or no face is found.
        ModelUnavailableError: the face detector (facenet-pytorch) is not installed.
    """
    path = Path(path)
    try:
        found = faces.cut_faces(load_rgb(path).pixels, models.spec(VGGFACE2_MODEL), where=str(path))
    except ImportError as exc:
        raise ModelUnavailableError(f"the face detector is not available ({exc})") from None
    crops = found.faces
    if len(crops) == 0:
        raise InputError(path, "no face found")
    boxes = torch.as_tensor(np.asarray(found.boxes, dtype=np.float64)).reshape(len(crops), -1)
    areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).tolist()
    probs = [float(p) for p in np.asarray(found.probs, dtype=np.float64).reshape(-1)]
    best = max(range(len(crops)), key=lambda i: (areas[i], probs[i] if i < len(probs) else 0.0))
    return torch.as_tensor(crops[best]).float()
