"""Reading photos and writing results safely.

Every reader raises :class:`mnd.errors.InputError` naming the file; every
writer writes to a temporary name beside the target and renames it, so a
crash never leaves a half-written file and never destroys an older one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".gif")


@dataclass(frozen=True)
class LoadedImage:
    """An RGB photo as 8-bit pixels, with a note when it had to be converted."""

    path: Path
    pixels: np.ndarray  # (H, W, 3) uint8
    note: str | None = None


def load_rgb(path: str | Path) -> LoadedImage:
    """Read ``path`` as 8-bit RGB.

    Grayscale, RGBA, palette and 16-bit images are converted and the returned
    ``note`` says so. Files that are not images or are truncated raise
    InputError naming the file.
    """
    from mnd.errors import InputError

    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a folder, expected an image file")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                wide = np.asarray(im, dtype=np.float64)
                top = 65535.0 if mode.startswith("I;16") or wide.max() > 255 else 255.0
                gray = np.clip(np.round(wide / top * 255.0), 0, 255).astype(np.uint8)
                pixels = np.repeat(gray[..., None], 3, axis=2)
                note = f"converted {mode} (16-bit) to 8-bit RGB"
            elif mode == "RGB":
                pixels = np.asarray(im, dtype=np.uint8).copy()
                note = None
            else:
                if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    converted = Image.alpha_composite(white, rgba).convert("RGB")
                    note = f"converted {mode} to RGB (transparency composited on white)"
                else:
                    converted = im.convert("RGB")
                    note = f"converted {mode} to RGB"
                pixels = np.asarray(converted, dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise InputError(path, "not an image file (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(path, f"unreadable or truncated image ({exc})") from None
    return LoadedImage(path, pixels, note)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.array(pixels, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div(255.0)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounding to the nearest level."""
    return image.detach().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: object) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it onto ``path`` on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:  # type: ignore[call-overload]
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write a (3, H, W) [0, 1] image as an 8-bit RGB PNG, atomically, without timestamps."""
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        Image.fromarray(to_uint8(image), mode="RGB").save(handle, format="PNG")
    return path


def list_images(paths: list[str | Path]) -> list[Path]:
    """Expand files and folders (one level, sorted) into image paths."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file()))
        else:
            out.append(p)
    return out
