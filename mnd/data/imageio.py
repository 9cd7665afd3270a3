"""Reading photos and writing results safely.

Every reader raises :class:`mnd.errors.InputError` naming the file; every
writer writes to a temporary name beside the target and renames it, so a
crash never leaves a half-written file and never destroys an older one.
Written files get the permissions the umask gives a new file (0644 under
umask 022) and carry no metadata.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import stat
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from mnd.errors import InputError, check_regular_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".gif")


@dataclass(frozen=True)
class LoadedImage:
    """An RGB photo as 8-bit pixels, with a note when it had to be converted."""

    path: Path
    pixels: np.ndarray  # (H, W, 3) uint8
    note: str | None = None


def _pixel_limit() -> int | None:
    """Pillow's decompression-bomb limit: images above it are refused (None: no limit)."""
    limit = Image.MAX_IMAGE_PIXELS
    return 2 * int(limit) if limit else None


def _bomb(path: Path, pixels: int, size: str = "") -> InputError:
    """The error for an image whose header claims too many pixels."""
    limit = _pixel_limit()
    return InputError(
        path,
        f"image claims {size or pixels} pixels, more than the {limit} pixels Pillow decodes safely "
        "(a decompression bomb, or a broken header)",
    )


def _check_size(path: Path, width: int, height: int) -> None:
    """Refuse an image whose header claims more pixels than Pillow's limit, before decoding it."""
    limit = _pixel_limit()
    if limit is not None and width * height > limit:
        raise _bomb(path, width * height, f"{width}x{height}")


def _to_rgb(im: Image.Image) -> tuple[np.ndarray, str | None]:
    """8-bit RGB pixels of an opened image, and a note when it had to be converted."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or wide.max() > 255 else 255.0
        gray = np.clip(np.round(wide / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2), f"converted {mode} (16-bit) to 8-bit RGB"
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8).copy(), None
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        converted = Image.alpha_composite(white, rgba).convert("RGB")
        note = f"converted {mode} to RGB (transparency composited on white)"
    else:
        converted = im.convert("RGB")
        note = f"converted {mode} to RGB"
    return np.asarray(converted, dtype=np.uint8).copy(), note


def _make_upright(im: Image.Image) -> list[str]:
    """Apply the EXIF orientation in place; a note when the metadata cannot be read."""
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except Exception as exc:  # noqa: BLE001 - malformed metadata from any camera: keep the stored pixels
        return [f"EXIF orientation unreadable, used as stored ({exc.__class__.__name__})"]
    return []


def load_rgb(path: str | Path) -> LoadedImage:
    """Read ``path`` as 8-bit RGB, upright.

    The EXIF orientation (a phone photo stored sideways) is applied, so the
    pixels are the photo as a viewer shows it. Grayscale, RGBA, palette and
    16-bit images are converted and the returned ``note`` says so; so does a
    photo large enough for Pillow's decompression-bomb warning (which is not
    printed). Files that are not images, are truncated, or claim more pixels
    than Pillow will decode raise InputError naming the file.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder, expected an image file")
    check_regular_file(path)
    notes: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_size(path, *im.size)
                im.load()
                notes += _make_upright(im)
                pixels, note = _to_rgb(im)
        for w in caught:
            if issubclass(w.category, Image.DecompressionBombWarning):
                width, height = pixels.shape[1], pixels.shape[0]
                notes.insert(0, f"large image ({width}x{height} = {width * height} pixels, over Pillow's "
                                f"warning limit of {Image.MAX_IMAGE_PIXELS}): decoding it takes much memory")
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    except Image.DecompressionBombError as exc:  # raised by Image.open, from the header alone
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        if claimed is None:
            raise InputError(path, f"refused as a possible decompression bomb ({exc})") from None
        raise _bomb(path, int(claimed.group(1))) from None
    except UnidentifiedImageError:
        raise InputError(path, "not an image file (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(path, f"unreadable or truncated image ({exc})") from None
    if note:
        notes.append(note)
    return LoadedImage(path, pixels, "; ".join(notes) or None)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.array(pixels, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div(255.0)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounding to the nearest level."""
    return image.detach().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


_UMASK_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _umask_by_swapping() -> int:
    """The umask where /proc does not say it: set and restore it, once, under a lock."""
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    return _umask_by_swapping()


def temporary_beside(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path`` (``.<name>.XXXXXXXX.tmp``), open, with the permissions ``path``
    has, or for a new file those the umask gives (0644 under umask 022), as ``open`` would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        permissions = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        permissions = 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, permissions)
    return fd, tmp


def naming(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` when it names no file (a full disk or a file size limit while writing)."""
    if exc.filename is None:
        return type(exc)(exc.errno, exc.strerror or str(exc), str(path))
    return exc


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: object) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it onto ``path`` on success only.

    The file gets the permissions of the file it replaces, or, for a new
    file, those the umask gives (0644 under umask 022), as ``open`` would.
    An error while writing names ``path`` (never the temporary file).
    """
    path = Path(path)
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:  # type: ignore[call-overload]
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise naming(exc, path) from None
        raise


def png_bytes(image: torch.Tensor) -> bytes:
    """A (3, H, W) [0, 1] image as the bytes of an 8-bit RGB PNG with no metadata."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def write_file(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_open`)."""
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return path


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write a (3, H, W) [0, 1] image as an 8-bit RGB PNG, atomically, with no metadata."""
    return write_file(path, png_bytes(image))


def check_writable_dir(folder: str | Path, what: str = "output folder") -> Path | None:
    """Create ``folder`` if needed and prove a file can be written in it.

    A probe file is created and removed, so an unwritable output is found
    before any work starts, not after.

    Returns:
        The top-most folder this call created (``folder`` or one of its
        parents), or None when ``folder`` existed: give it to
        :func:`remove_created` if the run ends up writing nothing.

    Raises:
        InputError: naming ``folder``: a file is in the way, a parent is not
            a folder, or the folder cannot be created or written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, f"{what} exists and is a file")
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    top = missing[-1] if missing else None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_created(folder, top)
        raise InputError(folder, f"cannot create the {what} ({exc.strerror or exc})") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".mnd-probe.", suffix=".tmp", dir=folder)
    except OSError as exc:
        remove_created(folder, top)
        raise InputError(folder, f"cannot write in the {what} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)
    return top


def remove_created(folder: str | Path, top: Path | None) -> None:
    """Remove the empty folders from ``folder`` up to ``top`` (what :func:`check_writable_dir` created)."""
    if top is None:
        return
    for path in [Path(folder), *Path(folder).parents]:
        try:
            path.rmdir()
        except OSError:
            return
        if path == top:
            return


def list_images(paths: list[str | Path]) -> list[Path]:
    """Expand files and folders (one level, sorted) into image paths.

    Raises:
        InputError: a folder that cannot be listed.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            try:
                out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file()))
            except OSError as exc:
                raise InputError(p, f"cannot list this folder ({exc.strerror or exc})") from None
        else:
            out.append(p)
    return out
