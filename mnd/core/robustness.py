"""What sharing does to a saved 8-bit image, and whether it stays adversarial.

Photo-sharing sites rarely keep the file a user uploads: they re-encode it as
JPEG (4:2:0 chroma subsampling, quality 75-95) and often shrink it. The
transforms here are the real ones, on the 8-bit pixels a saved file holds,
each returning the 8-bit pixels a viewer of the shared copy gets:

- ``jpeg95``, ``jpeg85``, ``jpeg75``: Pillow's JPEG encoder (libjpeg) at that
  quality with 4:2:0 chroma subsampling (``subsampling=2``), decoded again.
- ``resize50``: half the width and height and back to the original size, with
  Pillow's bilinear filter both ways (antialiased: when shrinking, Pillow
  widens the filter's support by the scale factor, so the 0.5x step averages
  over a 4x4 neighbourhood; the 2x step is plain bilinear interpolation).
  Pillow works on the 8-bit pixels in fixed point, so the result does not
  depend on the machine's float rounding.

:func:`survival` says, per image and transform, whether the transformed
image is still adversarial for a model.

>>> x = torch.full((1, 3, 16, 16), 0.5)
>>> sorted(TRANSFORMS), TRANSFORMS["jpeg75"](x).shape
(['jpeg75', 'jpeg85', 'jpeg95', 'resize50'], torch.Size([1, 3, 16, 16]))
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Mapping

import numpy as np
import torch
from PIL import Image
from torch import nn

from mnd.core.attack import is_adversarial
from mnd.core.judge import judged_logits
from mnd.core.pixels import quantize

Transform = Callable[[torch.Tensor], torch.Tensor]
"""(N, 3, H, W) images in [0, 1] -> the 8-bit images a viewer of the shared copy gets, same layout."""

CHROMA_420 = 2
"""Pillow's ``subsampling`` value for 4:2:0 (chroma halved both ways), what photo sites use."""


def _to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> an RGB Pillow image of its 8-bit pixels (rounded to the nearest level)."""
    pixels = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")


def _from_pil(im: Image.Image) -> torch.Tensor:
    """An RGB Pillow image -> (3, H, W) float32 in [0, 1] on the 8-bit grid."""
    return torch.from_numpy(np.array(im.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1).float().div(255.0)


def _each(images: torch.Tensor, one: Callable[[Image.Image], Image.Image]) -> torch.Tensor:
    """Apply a Pillow transform to every image of a (N, 3, H, W) batch; the result on the batch's device."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) RGB images, got {tuple(images.shape)}")
    out = [_from_pil(one(_to_pil(image))) for image in images]
    return torch.stack(out).to(images.device) if out else images.detach().clone()


def _encode_jpeg(im: Image.Image, quality: int) -> bytes:
    """Pillow's JPEG of ``im`` at ``quality``, 4:2:0, no metadata: the one encoder setting of this module."""
    buffer = io.BytesIO()
    im.save(buffer, format="JPEG", quality=quality, subsampling=CHROMA_420)
    return buffer.getvalue()


def jpeg_bytes(image: torch.Tensor, quality: int) -> bytes:
    """One (3, H, W) image in [0, 1] encoded by Pillow as JPEG at ``quality``, 4:2:0, no metadata."""
    return _encode_jpeg(_to_pil(image), quality)


def check_quality(quality: int) -> None:
    """Raise ValueError unless ``quality`` is a JPEG quality Pillow accepts (an integer 1 to 100)."""
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be an integer from 1 to 100, got {quality!r}")


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Each image through Pillow's JPEG encoder at ``quality`` with 4:2:0 subsampling, decoded again.

    Args:
        images: (N, 3, H, W) in [0, 1]; first rounded to 8 bits, as a saved file holds them.
        quality: 1 to 100 (Pillow's scale; sites use 75-95).

    Returns:
        (N, 3, H, W) float32 on the 8-bit grid: the decoded JPEG.
    """
    check_quality(quality)

    def one(im: Image.Image) -> Image.Image:
        with Image.open(io.BytesIO(_encode_jpeg(im, quality))) as decoded:
            decoded.load()
            return decoded.convert("RGB")

    return _each(images, one)


def resize(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Each image resized by ``scale`` and back to its own size, Pillow's bilinear filter both ways.

    The small side is ``round(scale * side)`` (at least 1 pixel). Shrinking is
    antialiased (Pillow's support grows with the reduction), so this is what a
    site that serves a smaller copy and a viewer that enlarges it again show.

    Args:
        images: (N, 3, H, W) in [0, 1]; first rounded to 8 bits.
        scale: between 0 and 1 (exclusive); 0.5 halves each side.

    Returns:
        (N, 3, H, W) float32 on the 8-bit grid.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < 1:
        raise ValueError(f"resize scale must be a number between 0 and 1, got {scale!r}")

    def one(im: Image.Image) -> Image.Image:
        small = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        return im.resize(small, Image.Resampling.BILINEAR).resize(im.size, Image.Resampling.BILINEAR)

    return _each(images, one)


TRANSFORMS: dict[str, Transform] = {
    "jpeg95": functools.partial(jpeg, quality=95),
    "jpeg85": functools.partial(jpeg, quality=85),
    "jpeg75": functools.partial(jpeg, quality=75),
    "resize50": functools.partial(resize, scale=0.5),
}
"""The sharing transforms every result row reports, by column name."""


@torch.no_grad()
def survival(
    model: nn.Module,
    adversarial: torch.Tensor,
    clean_label: torch.Tensor,
    target_label: torch.Tensor | None,
    targeted: bool,
    *,
    view: Callable[[torch.Tensor], torch.Tensor] | None = None,
    transforms: Mapping[str, Transform] | None = None,
) -> dict[str, torch.Tensor]:
    """Is each image still adversarial after each sharing transform?

    Non-targeted: the model's top class on the transformed image differs from
    ``clean_label`` (the label attacked away from: the ground truth, or the
    clean prediction); targeted: it is ``target_label``. Non-finite logits
    are never adversarial. This does not look at whether the untransformed
    image was adversarial: combine with the attack's ``success`` for "still
    adversarial".

    Args:
        model: takes (N, 3, S, S) in [0, 1], returns logits.
        adversarial: (N, 3, H, W) saved 8-bit images in [0, 1].
        clean_label: (N,) the label attacked away from (``AttackResult.true_label``).
        target_label: (N,) the target when targeted (``AttackResult.target_label``), else None.
        targeted: which criterion.
        view: what turns a transformed image into the model's input (default:
            none, the image is the input; for a full-resolution photo, its
            preprocessing).
        transforms: name -> transform (default :data:`TRANSFORMS`).

    Returns:
        name -> (N,) bool on the CPU, in the order of ``transforms``.
    """
    if targeted and target_label is None:
        raise ValueError("a targeted survival check needs target_label")
    goal = (target_label if targeted else clean_label).detach().cpu().long().view(-1)
    if goal.shape[0] != adversarial.shape[0]:
        raise ValueError(f"{goal.shape[0]} labels for {adversarial.shape[0]} images")
    device = next((p.device for p in model.parameters()), adversarial.device)
    out: dict[str, torch.Tensor] = {}
    for name, transform in (TRANSFORMS if transforms is None else transforms).items():
        shared = quantize(transform(adversarial.detach().cpu())).to(device)
        seen = view(shared) if view is not None else shared
        logits = judged_logits(model, seen).cpu()
        out[name] = is_adversarial(logits, goal, targeted=targeted)
    return out


def survival_columns(survived: Mapping[str, torch.Tensor], success: torch.Tensor) -> list[dict[str, bool]]:
    """Per image, ``{name: still adversarial}``: survived the transform and was a success before it.

    >>> survival_columns({"jpeg75": torch.tensor([True, True])}, torch.tensor([True, False]))
    [{'jpeg75': True}, {'jpeg75': False}]
    """
    n = int(success.shape[0])
    return [{name: bool(kept[i]) and bool(success[i]) for name, kept in survived.items()} for i in range(n)]
