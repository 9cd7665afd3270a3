"""dlib's face chip in PyTorch: ``get_face_chip(img, shape, 150, 0.25)``, the input of dlib's face ResNet.

:func:`face_chip_details` fits the similarity transform from the 5 landmarks
onto dlib's template (:data:`mnd.models.dlib_format.FIVE_POINT_TEMPLATE`) and
:func:`extract_chip` samples the chip bilinearly, with dlib's
``pyramid_down<2>`` when the face is more than twice the chip size (spec,
section 5.1). In ``quantize=True`` mode it emulates dlib's 8-bit arithmetic;
otherwise it is differentiable with respect to the photo.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mnd.models.dlib_format import CHIP_SIZE, FIVE_POINT_TEMPLATE


@dataclass(frozen=True)
class ChipDetails:
    """dlib's ``chip_details``: a rotated window of the photo mapped onto a rows x cols chip.

    Attributes:
        rect: (left, top, right, bottom) of the unrotated window, in pixels (inclusive corners).
        angle: rotation of the window about its centre, in radians.
        rows: chip height.
        cols: chip width.
    """

    rect: tuple[float, float, float, float]
    angle: float
    rows: int = CHIP_SIZE
    cols: int = CHIP_SIZE


def similarity_transform(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``source`` onto ``target``.

    Umeyama's closed form (IEEE TPAMI 13(4), 1991, eqs. 34-43), as dlib's
    ``find_similarity_transform``.

    Args:
        source: (K, 2) points, K >= 2.
        target: (K, 2) points.

    Returns:
        (M, t) with ``target ≈ source @ M.T + t``; M is (2, 2), t is (2,).

    >>> m, t = similarity_transform(np.array([[0., 0.], [1., 0.]]), np.array([[1., 1.], [1., 3.]]))
    >>> np.round(m, 6).tolist(), np.round(t, 6).tolist()
    ([[0.0, -2.0], [2.0, 0.0]], [1.0, 1.0])
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or source.shape[0] < 2:
        raise ValueError(f"need two matching (K >= 2, 2) point sets, got {source.shape} and {target.shape}")
    mean_s, mean_t = source.mean(axis=0), target.mean(axis=0)
    ds, dt = source - mean_s, target - mean_t
    var_s = float((ds**2).sum(axis=1).mean())
    cov = dt.T @ ds / len(source)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    if d[1] <= 1e-12 * d[0]:
        # Rank-deficient (e.g. two points): det(cov) is round-off, decide by the
        # orientation of u and v, or a spurious reflection creeps in.
        reflect = np.linalg.det(u) * np.linalg.det(vt) < 0
    else:
        reflect = np.linalg.det(cov) < 0
    if reflect:
        s[1, 1] = -1.0
    rotation = u @ s @ vt
    scale = float(np.trace(np.diag(d) @ s)) / var_s if var_s != 0 else 1.0
    m = scale * rotation
    return m, mean_t - m @ mean_s


def face_chip_details(landmarks: np.ndarray | Sequence[Sequence[float]], size: int = CHIP_SIZE,
                      padding: float = 0.25) -> ChipDetails:
    """dlib's ``get_face_chip_details`` for the 5-point landmark model (spec section 5.2).

    Args:
        landmarks: (5, 2) points (x, y) in dlib's order: corners of the eye on
            the image's right (outer, inner), of the other eye (outer, inner),
            base of the nose.
        size: chip side.
        padding: margin around the template, as a fraction of the face.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"need (5, 2) landmarks in dlib's 5-point order, got shape {points.shape}")
    template = (padding + np.asarray(FIVE_POINT_TEMPLATE)) / (2 * padding + 1) * size
    return chip_details_from_points(template, points, size)


def chip_details_from_points(chip_points: np.ndarray, image_points: np.ndarray, size: int = CHIP_SIZE) -> ChipDetails:
    """The chip whose points ``chip_points`` land on ``image_points`` (least-squares similarity)."""
    m, t = similarity_transform(chip_points, image_points)
    px, py = m[:, 0]
    angle = math.atan2(py, px)
    scale = math.hypot(px, py)
    cx, cy = m @ np.array([size / 2.0, size / 2.0]) + t
    half = (size * scale - 1) / 2
    return ChipDetails((cx - half, cy - half, cx + half, cy + half), angle, size, size)


def _rect_down(rect: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """Map a rectangle one level down dlib's ``pyramid_down<2>`` (``p / 2 - (1.25, 0.75)``)."""
    left, top, right, bottom = rect
    return (left / 2 - 1.25, top / 2 - 0.75, right / 2 - 1.25, bottom / 2 - 0.75)


def _rect_area(rect: tuple[float, float, float, float]) -> float:
    left, top, right, bottom = rect
    if left > right or top > bottom:
        return 0.0
    return (right - left + 1) * (bottom - top + 1)


def _rotate(center: tuple[float, float], point: tuple[float, float], angle: float) -> tuple[float, float]:
    c, s = math.cos(angle), math.sin(angle)
    x, y = point[0] - center[0], point[1] - center[1]
    return (c * x - s * y + center[0], s * x + c * y + center[1])


_PYRAMID_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)
"""dlib's ``pyramid_down<2>`` filter, [1 4 6 4 1] both ways (then / 256)."""


def pyramid_down2(image: torch.Tensor, *, quantize: bool) -> torch.Tensor:
    """One level of dlib's ``pyramid_down<2>`` on (C, H, W) 0..255 values.

    A separable [1 4 6 4 1] filter, keeping output (r, c) at source (2r + 2, 2c + 2),
    size ((H - 3) // 2, (W - 3) // 2); ``quantize`` truncates to integers like
    dlib's 8-bit arithmetic.
    """
    channels, height, width = image.shape
    if height <= 8 or width <= 8:
        raise ValueError(f"image too small for a pyramid level: {height}x{width}")
    out_h, out_w = (height - 3) // 2, (width - 3) // 2
    # Output (r, c) is sum_ij taps[i] taps[j] image[2r + i, 2c + j]: each pass is five strided slices
    # (several times faster than a strided float64 convolution, and exact on dlib's integer values).
    x = sum(tap * image[:, :, k : k + 2 * out_w : 2] for k, tap in enumerate(_PYRAMID_TAPS))
    x = sum(tap * x[:, k : k + 2 * out_h : 2, :] for k, tap in enumerate(_PYRAMID_TAPS))
    x = x / 256.0
    return torch.floor(x) if quantize else x


def _bilinear(image: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """dlib's ``interpolate_bilinear`` at float64 points; 0 where the 2x2 neighbourhood leaves the image."""
    _, height, width = image.shape
    left, top = torch.floor(xs), torch.floor(ys)
    inside = (left >= 0) & (top >= 0) & (left + 1 < width) & (top + 1 < height)
    lr, tb = xs - left, ys - top
    li = left.long().clamp(0, width - 2)
    ti = top.long().clamp(0, height - 2)
    flat = image.reshape(image.shape[0], -1)

    def at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return flat[:, (r * width + c).reshape(-1)].reshape(image.shape[0], *r.shape)

    lr, tb = lr.to(image.dtype), tb.to(image.dtype)
    value = (1 - tb) * ((1 - lr) * at(ti, li) + lr * at(ti, li + 1)) + tb * (
        (1 - lr) * at(ti + 1, li) + lr * at(ti + 1, li + 1))
    return torch.where(inside, value, torch.zeros_like(value))


def chip_box(details: ChipDetails, height: int, width: int) -> tuple[int, int, int, int] | None:
    """The pixels :func:`extract_chip` reads from a ``height`` x ``width`` photo: (left, top, right, bottom), inclusive.

    dlib's box: the rotated window's bounding box, grown by the border its
    pyramid levels need, clipped to the photo and rounded. None when it
    misses the photo (the chip is black). Every other pixel of the photo
    has no effect on the chip (nor gradient from it); a photo cropped to
    this box, with ``details.rect`` shifted by (left, top), gives the same chip.

    >>> chip_box(ChipDetails((10.0, 20.0, 159.0, 169.0), 0.0), 200, 300)
    (8, 18, 161, 171)
    """
    rect = details.rect
    grow, probe = 2.0, _rect_down(rect)
    while _rect_area(probe) > details.rows * details.cols:
        probe = _rect_down(probe)
        grow = grow * 2 + 2
    center = ((rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2)
    corners = [_rotate(center, p, details.angle) for p in
               ((rect[0], rect[1]), (rect[2], rect[1]), (rect[0], rect[3]), (rect[2], rect[3]))]
    box = [min(p[0] for p in corners) - grow, min(p[1] for p in corners) - grow,
           max(p[0] for p in corners) + grow, max(p[1] for p in corners) + grow]
    box = [max(box[0], 0.0), max(box[1], 0.0), min(box[2], width - 1.0), min(box[3], height - 1.0)]
    left, top, right, bottom = (math.floor(v + 0.5) for v in box)  # std::lround of non-negative values
    if left > right or top > bottom:
        return None
    return left, top, right, bottom


def extract_chip(image: torch.Tensor, details: ChipDetails, *, quantize: bool = False,
                 precision: torch.dtype = torch.float64) -> torch.Tensor:
    """dlib's ``extract_image_chip`` with bilinear interpolation.

    Args:
        image: (3, H, W) RGB in [0, 1] (any float dtype; may require grad).
        details: the window to extract, e.g. from :func:`face_chip_details`.
        quantize: emulate dlib on an 8-bit photo: round the input to 0..255
            levels, truncate pyramid levels and the output to integers (no
            gradient). ``False`` keeps everything continuous and differentiable.
        precision: the working dtype of the continuous chip (``quantize=False``):
            float64 (default) or float32, which halves the time and memory of a
            large face's pyramid (chips differ by about 1e-7). ``quantize=True``
            always works in float64, to match dlib's integers exactly.

    Returns:
        (3, rows, cols) chip in [0, 1], dtype of ``image``.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"extract_chip expects a (3, H, W) image, got {tuple(image.shape)}")
    box = chip_box(details, image.shape[1], image.shape[2])
    if box is None:
        return image.new_zeros(3, details.rows, details.cols)
    bl, bt, br, bb = box
    rect = details.rect
    dtype = torch.float64 if quantize else precision
    work = image[:, bt : bb + 1, bl : br + 1].to(dtype) * 255.0  # the box only: a photo may be large
    if quantize:
        work = torch.round(work.detach())
    local = (rect[0] - bl, rect[1] - bt, rect[2] - bl, rect[3] - bt)
    level = -1
    while _rect_area(_rect_down(local)) > details.rows * details.cols:
        level += 1
        local = _rect_down(local)
    for _ in range(level + 1):
        if min(work.shape[1:]) <= 8:  # dlib's pyramid yields an empty level: nothing to sample
            return image.new_zeros(3, details.rows, details.cols)
        work = pyramid_down2(work, quantize=quantize)
    if min(work.shape[1:]) < 2:  # no 2x2 neighbourhood anywhere
        return image.new_zeros(3, details.rows, details.cols)
    # Affine map from chip pixel (c, r) to the source: corners tl, tr, bl of the rotated window.
    center = ((local[0] + local[2]) / 2, (local[1] + local[3]) / 2)
    tl = _rotate(center, (local[0], local[1]), details.angle)
    tr = _rotate(center, (local[2], local[1]), details.angle)
    bl_ = _rotate(center, (local[0], local[3]), details.angle)
    cols, rows = details.cols, details.rows
    ax = ((tr[0] - tl[0]) / (cols - 1), (tr[1] - tl[1]) / (cols - 1))
    ay = ((bl_[0] - tl[0]) / (rows - 1), (bl_[1] - tl[1]) / (rows - 1))
    r = torch.arange(rows, dtype=torch.float64, device=work.device).view(-1, 1)  # sample points in float64
    c = torch.arange(cols, dtype=torch.float64, device=work.device).view(1, -1)
    xs = tl[0] + ax[0] * c + ay[0] * r
    ys = tl[1] + ax[1] * c + ay[1] * r
    chip = _bilinear(work, xs, ys)
    if quantize:
        chip = torch.floor(chip.clamp(0, 255))
    return (chip / 255.0).to(image.dtype)


def face_chip(image: torch.Tensor, landmarks: np.ndarray | Sequence[Sequence[float]], *, size: int = CHIP_SIZE,
              padding: float = 0.25, quantize: bool = False) -> torch.Tensor:
    """dlib's ``get_face_chip(img, shape, size, padding)`` from 5-point landmarks.

    Args:
        image: (3, H, W) RGB in [0, 1].
        landmarks: (5, 2) in dlib's 5-point order (see :func:`face_chip_details`).
        size: chip side (150 for the face descriptor).
        padding: dlib's default 0.25.
        quantize: emulate dlib's 8-bit arithmetic (see :func:`extract_chip`).

    Returns:
        (3, size, size) chip in [0, 1].
    """
    return extract_chip(image, face_chip_details(landmarks, size, padding), quantize=quantize)
