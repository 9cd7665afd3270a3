"""What the paper's two test sets share: their names, the manifest row, the reports and the seeded order.

The selection rule and the names are described in :mod:`mnd.data.testsets`,
which re-exports everything public here; :mod:`mnd.data.imagenet10`,
:mod:`mnd.data.vggface2_10` and :mod:`mnd.data.manifests` build on it.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mnd.data.imageio import IMAGE_SUFFIXES, load_rgb
from mnd.errors import InputError


TestSet = Literal["imagenet10", "vggface2_10"]
"""The paper's two test sets (sections IV-B-1 and IV-C-1), as ``mnd data select`` writes them."""


TESTSETS: tuple[TestSet, ...] = ("imagenet10", "vggface2_10")


Dataset = TestSet
"""Deprecated name of :data:`TestSet`."""




DEFAULT_MANIFESTS: dict[str, Path] = {
    "imagenet10": Path("data/manifests/imagenet10.csv"),
    "vggface2_10": Path("data/manifests/vggface2_10.csv"),
}


MANIFEST_COLUMNS: dict[str, tuple[str, ...]] = {
    "imagenet10": ("synset", "class_index", "class_name", "path", "sha256"),
    "vggface2_10": ("identity", "class_index", "path", "sha256"),
}


@dataclass(frozen=True)
class ImageNetClass:
    """One of the paper's ten ImageNet classes.

    Attributes:
        synset: WordNet ID, the folder name in ILSVRC2012 ``train/`` and
            torchvision-style ``val/``.
        class_index: index in torchvision's (sorted-synset) order, i.e. the
            logit a pretrained classifier gives this class.
        name: the short class name the paper uses.
        ilsvrc2012_id: the class ID in the ILSVRC2012 devkit's ``meta.mat``
            (1..1000), the number used by
            ``ILSVRC2012_validation_ground_truth.txt``. It is NOT
            ``class_index + 1``: the devkit orders classes differently.
    """

    synset: str
    class_index: int
    name: str
    ilsvrc2012_id: int


# The devkit IDs below follow the ILSVRC2012 devkit order (the order of
# map_clsloc.txt: 1 = n02119789 kit fox, 2 = n02100735 English setter, ...,
# 490 = n01751748 sea snake, 1000 = n03255030 dumbbell). They were read from
# that order as published in darknet's data/imagenet.labels.list, whose
# first 1000 lines are the devkit order, and agree with the known anchors
# above. When the user's devkit meta.mat is present it is used instead
# (see read_devkit_ids), so a wrong table here cannot go unnoticed there.
IMAGENET10: tuple[ImageNetClass, ...] = (
    ImageNetClass("n01440764", 0, "tench", 449),
    ImageNetClass("n01443537", 1, "goldfish", 450),
    ImageNetClass("n01484850", 2, "great white shark", 442),
    ImageNetClass("n01491361", 3, "tiger shark", 443),
    ImageNetClass("n01494475", 4, "hammerhead", 444),
    ImageNetClass("n01496331", 5, "electric ray", 445),
    ImageNetClass("n01498041", 6, "stingray", 446),
    ImageNetClass("n01514668", 7, "cock", 383),
    ImageNetClass("n01514859", 8, "hen", 384),
    ImageNetClass("n01518878", 9, "ostrich", 385),
)


_BY_SYNSET: dict[str, ImageNetClass] = {c.synset: c for c in IMAGENET10}


_SYNSET_RE = re.compile(r"^n\d{8}$")


_IDENTITY_RE = re.compile(r"^n\d{6}$")


_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


GROUND_TRUTH_NAME = "ILSVRC2012_validation_ground_truth.txt"


LABEL_FILE_NAMES = (GROUND_TRUTH_NAME, "LOC_val_solution.csv", "val.txt", "labels.txt")


@dataclass(frozen=True)
class ManifestRow:
    """One selected image.

    Attributes:
        label: the ImageNet synset or the VGGFace2 identity (``n000123``).
        class_index: torchvision class index (ImageNet), or 0..9 within the
            ten chosen identities, in sorted identity order (VGGFace2).
        path: POSIX path relative to the image folder (the split folder,
            e.g. ``val/``): ``n01440764/ILSVRC2012_val_00000293.JPEG``,
            ``ILSVRC2012_val_00000293.JPEG`` (flat layout) or
            ``n000123/0001_01.jpg``.
        sha256: hex SHA-256 of the file's bytes.
        class_name: the class name (ImageNet); empty for VGGFace2.
    """

    label: str
    class_index: int
    path: str
    sha256: str
    class_name: str = ""


@dataclass(frozen=True)
class Skipped:
    """A candidate the selection passed over, and why."""

    path: Path
    reason: str


@dataclass
class Selection:
    """What a selection chose, what it skipped, and where it looked.

    Attributes:
        testset: ``imagenet10`` or ``vggface2_10``.
        folder: the image folder the manifest paths are relative to.
        layout: how the folder was read (``folders``, ``flat:<labels file>``,
            ``identities``).
        seed: the seed of the rule.
        rows: the chosen images, sorted by class index then path.
        skipped: unreadable images, images without a face, and identities
            given up, in the order met.
    """

    testset: TestSet
    folder: Path
    layout: str
    seed: int
    rows: list[ManifestRow] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def summary(self) -> str:
        """One line: how many were chosen and how many skipped, by reason."""
        counts: dict[str, int] = {}
        for item in self.skipped:
            kind = item.reason.split(":", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
        classes = len({row.label for row in self.rows})
        text = f"selected {len(self.rows)} images from {classes} classes (seed {self.seed}, {self.layout})"
        if counts:
            text += "; skipped " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        else:
            text += "; skipped none"
        return text


@dataclass
class CheckReport:
    """The result of checking a local copy against a manifest.

    Attributes:
        manifest: the manifest checked.
        folder: the image folder the paths were resolved in.
        matched: rows whose file was found with the recorded SHA-256.
        missing: rows whose file was not found (with the places tried).
        changed: rows whose file differs, with the SHA-256 found.
    """

    manifest: Path
    folder: Path
    matched: int = 0
    missing: list[tuple[ManifestRow, list[Path]]] = field(default_factory=list)
    changed: list[tuple[ManifestRow, Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every row was found unchanged."""
        return not self.missing and not self.changed

    def lines(self) -> list[str]:
        """Human-readable lines: one per problem, then a summary."""
        out = [f"missing: {row.path} ({row.label}); looked for {', '.join(map(str, tried))}"
               for row, tried in self.missing]
        out += [f"changed: {found} ({row.label}): sha256 {actual}, manifest says {row.sha256}"
                for row, found, actual in self.changed]
        total = self.matched + len(self.missing) + len(self.changed)
        out.append(f"{self.matched} of {total} images match {self.manifest}; "
                   f"{len(self.missing)} missing, {len(self.changed)} changed")
        return out


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes.

    Raises:
        InputError: the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror or exc})") from None
    return digest.hexdigest()


def seeded_order(names: Iterable[str], key: str) -> list[str]:
    """``names`` sorted, then shuffled by ``random.Random(key)``: the selection order.

    >>> seeded_order(["c", "a", "b"], "mnd:demo:0:x") == seeded_order(["b", "c", "a"], "mnd:demo:0:x")
    True
    """
    order = sorted(names)
    random.Random(key).shuffle(order)
    return order


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _image_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if _is_image(p))


def _require_folder(root: str | Path) -> Path:
    root = Path(root)
    if not root.exists():
        raise InputError(root, "no such folder")
    if not root.is_dir():
        raise InputError(root, "is a file, expected a folder")
    return root


def _split_folder(root: Path, split: str | None) -> Path:
    """``root/split`` when it is a folder, else ``root`` itself."""
    if split and (root / split).is_dir():
        return root / split
    return root


def _readable(path: Path) -> str | None:
    """None when ``path`` decodes as an image, else the reason it does not."""
    try:
        load_rgb(path)
    except InputError as exc:
        return exc.problem
    return None


def _unreadable_reason(path: Path) -> str | None:
    """None when ``path`` decodes, else ``"unreadable: <why>"`` (a skip reason)."""
    reason = _readable(path)
    return None if reason is None else f"unreadable: {reason}"



def _take(folder: Path, order: Sequence[str], count: int,
          accept: Callable[[Path], str | None], skipped: list[Skipped]) -> list[str]:
    """Walk ``order``; keep the first ``count`` names ``accept`` passes (None), record the rest."""
    chosen: list[str] = []
    for name in order:
        if len(chosen) == count:
            break
        reason = accept(folder / name)
        if reason is None:
            chosen.append(name)
        else:
            skipped.append(Skipped(folder / name, reason))
    return chosen
