"""The embedded sample set: nine natural colour photographs that installed packages ship (see ``data/SOURCES.md``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mnd.data.imageio import atomic_open, load_rgb
from mnd.errors import InputError


@dataclass(frozen=True)
class EmbeddedImage:
    """A natural photograph shipped inside an installed package.

    Attributes:
        name: short name (``astronaut`` ... ``grace_hopper``).
        pixels: (H, W, 3) uint8 RGB.
        source: the package and function or file it comes from.
        licence: the licence as the package documents it.
    """

    name: str
    pixels: np.ndarray
    source: str
    licence: str


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data  # heavy: the sample-photo packages load only when a photo is asked for

        return getattr(skimage.data, name)()

    return load


def _motorcycle() -> np.ndarray:
    import skimage.data  # heavy (see _skimage)

    return skimage.data.stereo_motorcycle()[0]


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image  # heavy (see _skimage)

        return load_sample_image(filename)

    return load


def _grace_hopper() -> np.ndarray:
    from matplotlib.cbook import get_sample_data  # heavy (see _skimage)

    with get_sample_data("grace_hopper.jpg") as handle, Image.open(handle) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


_EMBEDDED: dict[str, tuple[Callable[[], np.ndarray], str, str]] = {
    "astronaut": (_skimage("astronaut"), "scikit-image skimage.data.astronaut() (NASA, Eileen Collins)",
                  "public domain (no known copyright restrictions; NASA)"),
    "chelsea": (_skimage("chelsea"), "scikit-image skimage.data.chelsea() (Chelsea the cat)",
                "CC0 (photographer Stefan van der Walt)"),
    "coffee": (_skimage("coffee"), "scikit-image skimage.data.coffee() (Pikolo Espresso Bar)",
               "CC0 (photographer Rachel Michetti)"),
    "rocket": (_skimage("rocket"), "scikit-image skimage.data.rocket() (SpaceX, DSCOVR launch on Falcon 9)",
               "public domain (released by SpaceX)"),
    "china": (_sklearn("china.jpg"), "scikit-learn sklearn.datasets.load_sample_image('china.jpg') (Flickr)",
              "CC BY 2.0 (Flickr user danielbuechele)"),
    "flower": (_sklearn("flower.jpg"), "scikit-learn sklearn.datasets.load_sample_image('flower.jpg') (Flickr)",
               "CC BY 2.0 (Flickr user vultilion; scikit-learn's README names danielbuechele)"),
    "motorcycle": (_motorcycle, "scikit-image skimage.data.stereo_motorcycle()[0] (left view, Middlebury 2014 stereo)",
                   "as scikit-image ships it: the Middlebury 2014 stereo benchmark (Scharstein et al., GCPR 2014), "
                   "no licence stated in the package"),
    "hubble": (_skimage("hubble_deep_field"), "scikit-image skimage.data.hubble_deep_field() (NASA, Hubble eXtreme Deep Field)",
               "public domain (NASA)"),
    "grace_hopper": (_grace_hopper, "matplotlib matplotlib.cbook.get_sample_data('grace_hopper.jpg')",
                     "public domain (US Navy photograph; matplotlib PR #1599)"),
}


EMBEDDED_NAMES: tuple[str, ...] = tuple(_EMBEDDED)


def embedded_images(names: Iterable[str] | None = None) -> list[EmbeddedImage]:
    """Load the embedded sample photographs from the installed packages (no download).

    Args:
        names: which ones (default all nine, in :data:`EMBEDDED_NAMES` order).

    Raises:
        InputError: an unknown name.

    >>> [im.name for im in embedded_images(["chelsea"])], embedded_images(["chelsea"])[0].pixels.shape
    (['chelsea'], (300, 451, 3))
    """
    chosen = list(EMBEDDED_NAMES if names is None else names)
    unknown = [n for n in chosen if n not in _EMBEDDED]
    if unknown:
        raise InputError(", ".join(unknown), f"unknown embedded image; choose from {', '.join(EMBEDDED_NAMES)}")
    out = []
    for name in chosen:
        load, source, licence = _EMBEDDED[name]
        pixels = np.ascontiguousarray(load(), dtype=np.uint8)
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise InputError(source, f"expected an RGB photo, got shape {pixels.shape}")
        out.append(EmbeddedImage(name, pixels, source, licence))
    return out


def _kept_or_refused(path: Path, pixels: np.ndarray) -> bool:
    """True when ``path`` already holds exactly ``pixels`` (left as it is), False when it is absent.

    Raises:
        InputError: naming ``path``: anything else is there (another image, a
            file that is no image, a folder).
    """
    if not os.path.lexists(path):
        return False
    refuse = "mnd data embedded never overwrites a file: move it away or choose another --out folder"
    if path.is_dir():
        raise InputError(path, f"is a folder; {refuse}")
    try:
        same = np.array_equal(load_rgb(path).pixels, pixels)
    except InputError as exc:
        raise InputError(path, f"exists and is not this embedded photo: {exc.problem}; {refuse}") from None
    if not same:
        raise InputError(path, f"exists and holds other pixels than this embedded photo; {refuse}")
    return True


def export_embedded(folder: str | Path, names: Iterable[str] | None = None) -> list[Path]:
    """Write the embedded photographs as ``<folder>/<name>.png`` (atomically, no timestamps).

    Never overwrites a file. A ``<name>.png`` already there that holds
    exactly the photo's pixels (a rerun) is left as it is; anything else at
    that path is refused before any photo is written.

    Returns:
        The paths of the photos, written now or already there, in
        :data:`EMBEDDED_NAMES` order (or ``names`` order).

    Raises:
        InputError: an unknown name, ``folder`` is a file, or a
            ``<name>.png`` there holds something else (naming that file).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "is a file, expected a folder")
    images = embedded_images(names)
    kept = {image.name for image in images if _kept_or_refused(folder / f"{image.name}.png", image.pixels)}
    paths = []
    for image in images:
        path = folder / f"{image.name}.png"
        if image.name not in kept:
            with atomic_open(path, "wb") as handle:
                Image.fromarray(image.pixels).save(handle, format="PNG")
        paths.append(path)
    return paths
