"""The paper's two test sets, chosen reproducibly, and a sample set that needs no download.

Section IV-B-1 of the paper tests 100 ImageNet images, 10 from each of the
classes 0-9 (tench ... ostrich); section IV-C-1 tests 100 VGGFace2 images, 10
from each of 10 identities. The paper does not say which images. This module
picks them with a seeded, documented rule from the user's own copy of each
data set and writes the choice to a manifest CSV (with the SHA-256 of every
file), so that another person with the same copy gets the same images and can
verify them with :func:`check_manifest`.

The selection rule (both data sets):
    Candidates of a class are its image files, sorted by file name. They are
    put in a seeded order with ``random.Random(key).shuffle`` where ``key`` is
    the string ``"mnd:<dataset>:<seed>:<label>"`` (string seeds hash through
    SHA-512, so the order does not depend on ``PYTHONHASHSEED`` or the
    platform). The first ``k`` files in that order that can be used (they
    decode; for faces, a face is found) are taken; the others are skipped and
    reported, never dropped silently. Because the rule works on file names,
    the ImageNet validation set selects the same 100 images whether it is kept
    flat (``val/ILSVRC2012_val_*.JPEG``) or in synset folders.

The embedded sample set is seven natural photographs that installed packages
ship (scikit-image, scikit-learn, matplotlib); see ``data/SOURCES.md``.

Names: a *test set* (:data:`TestSet`) is ``imagenet10`` or ``vggface2_10``, the
paper's selections, named like their manifests (``data/manifests/<testset>.csv``);
``mnd data select imagenet`` and ``mnd data select vggface2`` write them. A
preset's *data set* (``imagenet``, ``faces`` in :mod:`mnd.experiments.grid`) is a results
folder and the ``dataset`` column of ``results.csv``; its ``source`` says where its
images come from: a test set, the embedded photos or a folder.

Every photo becomes a model's input here, in one of two ways, as the model's
:class:`mnd.models.ModelSpec` says: :func:`prepare_image` (resize the shorter
side, centre crop: classifiers) or :func:`mnd.data.faces.cut_faces` (face models).

>>> [c.name for c in IMAGENET10][:3]
['tench', 'goldfish', 'great white shark']
>>> IMAGENET10[0].synset, IMAGENET10[0].ilsvrc2012_id
('n01440764', 449)
"""

from __future__ import annotations

import csv
import hashlib
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from mnd.data.imageio import IMAGE_SUFFIXES, atomic_open, load_rgb
from mnd.data.prepare import vggface2_face
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


def read_devkit_ids(meta_mat: str | Path) -> dict[int, str]:
    """ILSVRC2012_ID -> synset for the 1000 leaf classes of the devkit's ``meta.mat``.

    Raises:
        InputError: the file is not a readable devkit ``meta.mat``.
    """
    import scipy.io  # heavy, and only a devkit's meta.mat needs it

    meta_mat = Path(meta_mat)
    try:
        synsets = scipy.io.loadmat(meta_mat, squeeze_me=True, struct_as_record=False)["synsets"]
        pairs = [(int(s.ILSVRC2012_ID), str(s.WNID)) for s in np.atleast_1d(synsets)]
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise InputError(meta_mat, f"not an ILSVRC2012 devkit meta.mat ({exc})") from None
    return {ident: wnid for ident, wnid in pairs if 1 <= ident <= 1000}


def builtin_devkit_ids() -> dict[int, str]:
    """ILSVRC2012_ID -> synset for the paper's ten classes (see :data:`IMAGENET10`).

    >>> builtin_devkit_ids()[449]
    'n01440764'
    """
    return {c.ilsvrc2012_id: c.synset for c in IMAGENET10}


def _stem(name: str) -> str:
    path = Path(name.strip())
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else path.name


def _parse_ground_truth(lines: list[str], where: Path, ids: dict[int, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        value = int(line)
        if not 1 <= value <= 1000:
            raise InputError(where, f"line {number}: class ID {value} outside 1..1000")
        if value in ids:
            out[f"ILSVRC2012_val_{number:08d}"] = ids[value]
    return out


def _parse_two_column(lines: list[str], where: Path) -> dict[str, str]:
    sorted_index = {c.class_index: c.synset for c in IMAGENET10}
    out: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        parts = line.replace(",", " ").split()
        if len(parts) < 2:
            raise InputError(where, f"line {number}: expected 'filename label', got {line.strip()!r}")
        name, label = parts[0], parts[1]
        if _SYNSET_RE.match(label):
            out[_stem(name)] = label
        elif label.isdigit():
            index = int(label)
            if not 0 <= index <= 999:
                raise InputError(where, f"line {number}: class index {index} outside 0..999")
            if index in sorted_index:
                out[_stem(name)] = sorted_index[index]
        else:
            raise InputError(where, f"line {number}: label {label!r} is neither a synset (n01440764) "
                                    "nor a class index 0..999")
    return out


def _parse_loc_csv(lines: list[str], where: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, row in enumerate(csv.reader(lines[1:]), start=2):
        if not row:
            continue
        if len(row) < 2 or not row[1].split():
            raise InputError(where, f"line {number}: expected 'ImageId,PredictionString'")
        out[_stem(row[0])] = row[1].split()[0]
    return out


def read_val_labels(path: str | Path, devkit_ids: dict[int, str] | None = None) -> dict[str, str]:
    """Read a flat-layout labels file into ``{file stem: synset}``.

    Three formats are recognised from the content:

    * the devkit's ``ILSVRC2012_validation_ground_truth.txt``: one integer per
      line, line ``i`` labelling ``ILSVRC2012_val_{i:08d}``, each an
      ILSVRC2012_ID (1..1000, devkit ``meta.mat`` order). IDs map to synsets
      through ``devkit_ids`` (default: :func:`builtin_devkit_ids`, which knows
      the paper's ten classes; the other IDs are ignored);
    * two columns ``filename label`` (spaces, tabs or a comma), where the
      label is a synset (``n01440764``) or a 0-based class index in sorted
      synset order (torchvision's, as in Caffe's ``val.txt``); indices outside
      the paper's ten classes are ignored;
    * Kaggle's ``LOC_val_solution.csv`` (header ``ImageId,PredictionString``;
      the first token of the prediction string is the synset).

    Args:
        path: the labels file.
        devkit_ids: ILSVRC2012_ID -> synset, for the ground-truth format.

    Returns:
        File stems (name without suffix) mapped to synsets.

    Raises:
        InputError: the file is missing, empty or in none of these formats.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "no such labels file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read labels file ({exc})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError(path, "labels file is empty")
    if lines[0].replace(" ", "").lower().startswith("imageid,predictionstring"):
        return _parse_loc_csv(lines, path)
    if all(line.strip().isdigit() for line in lines):
        return _parse_ground_truth(lines, path, devkit_ids or builtin_devkit_ids())
    return _parse_two_column(lines, path)


def _label_file_candidates(root: Path, folder: Path) -> list[Path]:
    places = [folder, root, root / "ILSVRC2012_devkit_t12" / "data", folder.parent]
    seen: list[Path] = []
    for place in places:
        for name in LABEL_FILE_NAMES:
            candidate = place / name
            if candidate not in seen:
                seen.append(candidate)
    return seen


def _devkit_meta_near(labels: Path, root: Path) -> Path | None:
    """The devkit's meta.mat beside the labels file, in the devkit or in root, if any."""
    for place in (labels.parent, root / "ILSVRC2012_devkit_t12" / "data", root):
        if (place / "meta.mat").is_file():
            return place / "meta.mat"
    return None


def _imagenet_folders_layout(folder: Path) -> dict[str, list[str]] | None:
    """``{synset: [relative paths]}`` when ``folder`` has synset sub-folders, else None."""
    present = [c for c in IMAGENET10 if (folder / c.synset).is_dir()]
    if not present:
        if any(p.is_dir() and _SYNSET_RE.match(p.name) for p in folder.iterdir()):
            return {c.synset: [] for c in IMAGENET10}
        return None
    return {c.synset: [f"{c.synset}/{name}" for name in _image_names(folder / c.synset)]
            if (folder / c.synset).is_dir() else [] for c in IMAGENET10}


def _imagenet_flat_layout(root: Path, folder: Path, labels: Path | None) -> tuple[dict[str, list[str]], str]:
    if labels is None:
        found = [p for p in _label_file_candidates(root, folder) if p.is_file()]
        if not found:
            raise InputError(folder, "flat folder of images but no labels file: expected "
                             f"{' or '.join(LABEL_FILE_NAMES)} in {folder}, {root} or "
                             f"{root / 'ILSVRC2012_devkit_t12' / 'data'} (or pass --labels)")
        labels = found[0]
    meta = _devkit_meta_near(labels, root)
    stem_to_synset = read_val_labels(labels, read_devkit_ids(meta) if meta else None)
    by_class: dict[str, list[str]] = {c.synset: [] for c in IMAGENET10}
    for name in _image_names(folder):
        synset = stem_to_synset.get(_stem(name))
        if synset in by_class:
            by_class[synset].append(name)
    layout = f"flat:{labels}" + (f" (class IDs from {meta})" if meta else "")
    return by_class, layout


def imagenet_candidates(root: str | Path, *, split: str = "val",
                        labels: str | Path | None = None) -> tuple[Path, str, dict[str, list[str]]]:
    """Find the paper's ten classes in an ILSVRC2012 copy.

    Accepted layouts, tried in this order:

    * synset folders: ``root/<split>/n01440764/*.JPEG`` (ILSVRC2012 ``train/``,
      or ``val/`` rearranged as torchvision's ImageNet dataset does), or
      ``root`` itself holding the synset folders;
    * flat: ``root/<split>/ILSVRC2012_val_*.JPEG`` (or ``root`` itself) plus a
      labels file in one of the formats of :func:`read_val_labels`, given as
      ``labels`` or found by name beside the images, in ``root`` or in
      ``root/ILSVRC2012_devkit_t12/data``.

    Returns:
        The image folder, the layout (``folders`` or ``flat:<labels file>``)
        and ``{synset: sorted relative paths}`` for the ten classes.

    Raises:
        InputError: the root does not exist or matches neither layout.
    """
    root = _require_folder(root)
    folder = _split_folder(root, split)
    by_class = _imagenet_folders_layout(folder)
    if by_class is not None:
        return folder, "folders", by_class
    if labels is not None or any(_is_image(p) for p in folder.iterdir()):
        by_class, layout = _imagenet_flat_layout(root, folder, Path(labels) if labels else None)
        return folder, layout, by_class
    raise InputError(root, "not an ILSVRC2012 folder: expected synset sub-folders "
                     f"({split}/n01440764/*.JPEG or n01440764/*.JPEG) or a flat {split}/ folder of "
                     f"ILSVRC2012_val_*.JPEG with a labels file ({', '.join(LABEL_FILE_NAMES)})")


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


def select_imagenet10(root: str | Path, *, seed: int = 0, per_class: int = 10, split: str = "val",
                      labels: str | Path | None = None, progress: bool = True) -> Selection:
    """Choose ``per_class`` images of each of the paper's ten ImageNet classes.

    The rule is the module's: per class, file names sorted, shuffled with
    ``random.Random(f"mnd:imagenet10:{seed}:{synset}")``, the first
    ``per_class`` that decode are taken; undecodable files are skipped and
    listed in ``Selection.skipped`` with the reason ``unreadable: ...``.

    Args:
        root: the ILSVRC2012 folder, or its ``val``/``train`` folder.
        seed: the seed of the rule.
        per_class: images per class (the paper: 10).
        split: the sub-folder to use when ``root`` has one (``val`` or ``train``).
        labels: labels file for the flat layout (found automatically if None).
        progress: show a tqdm progress bar.

    Returns:
        The selection; write it with :func:`write_manifest`.

    Raises:
        InputError: bad root or layout, or a class with fewer than
            ``per_class`` (readable) images.
    """
    if per_class < 1:
        raise InputError("--per-class", f"must be at least 1, got {per_class}")
    folder, layout, by_class = imagenet_candidates(root, split=split, labels=labels)
    short = [(c, len(by_class[c.synset])) for c in IMAGENET10 if len(by_class[c.synset]) < per_class]
    if short:
        detail = "; ".join(f"{c.synset} ({c.name}): {n} found" for c, n in short)
        raise InputError(folder, f"too few images: {per_class} needed per class; {detail}")
    selection = Selection("imagenet10", folder, layout, seed)
    bar = tqdm(total=per_class * len(IMAGENET10), desc="imagenet10: decode+hash", unit="img",
               disable=not progress)
    try:
        for cls in IMAGENET10:
            names = {Path(rel).name: rel for rel in by_class[cls.synset]}
            order = [names[n] for n in seeded_order(names, f"mnd:imagenet10:{seed}:{cls.synset}")]
            before = len(selection.skipped)
            chosen = _take(folder, order, per_class, _unreadable_reason, selection.skipped)
            if len(chosen) < per_class:
                bad = len(selection.skipped) - before
                raise InputError(folder / cls.synset if layout == "folders" else folder,
                                 f"too few readable images for {cls.synset} ({cls.name}): {len(chosen)} "
                                 f"readable found, {per_class} needed ({bad} unreadable skipped)")
            for rel in sorted(chosen):
                selection.rows.append(ManifestRow(cls.synset, cls.class_index, rel,
                                                  sha256_file(folder / rel), cls.name))
                bar.update(1)
    finally:
        bar.close()
    return selection


TEST_SPLIT_PROBLEM = (
    "holds VGGFace2's test identities, which are not among the 8631 training identities the paper's "
    "classifier (InceptionResnetV1, VGGFace2) was trained on: it cannot recognise them, so attacks on them "
    "would measure nothing. The paper draws its 10 identities from the 8631: give the train/ folder "
    "(or a copy of it)"
)
"""Why a VGGFace2 ``test/`` folder is refused (the tail of the InputError)."""


def _identity_folders(place: Path) -> list[str]:
    return sorted(p.name for p in place.iterdir() if p.is_dir() and _IDENTITY_RE.match(p.name))


def vggface2_identities(root: str | Path, *, split: str | None = None) -> tuple[Path, dict[str, list[str]]]:
    """Find the identity folders of a VGGFace2 copy (its training identities).

    Accepted layout: identity folders ``n000001/…jpg`` in ``root``, or in
    ``root/<split>``; with no split, ``root`` and then ``root/train`` are
    tried. The test identities are refused, never used as a fall-back: the
    paper draws from the 8631 training identities its classifier was
    trained on, and the classifier has never seen a test identity.

    Returns:
        The folder holding the identities and ``{identity: sorted image names}``.

    Raises:
        InputError: the root does not exist or holds no identity folders, or
            the identities found are the test split (``split="test"``, a root
            called ``test``, or identities only in ``root/test``).
    """
    root = _require_folder(root)
    if split == "test" or (root.name == "test" and not split):
        where = root / split if split else root
        raise InputError(where, TEST_SPLIT_PROBLEM)
    places = [root / split] if split else [root, root / "train"]
    for place in places:
        if place.is_dir():
            ids = _identity_folders(place)
            if ids:
                return place, {ident: _image_names(place / ident) for ident in ids}
    test = root / "test"
    if not split and test.is_dir() and _identity_folders(test):
        raise InputError(root, f"no identity folders in {root} or {root / 'train'}; {test} {TEST_SPLIT_PROBLEM}")
    tried = ", ".join(str(p) for p in places)
    raise InputError(root, f"not a VGGFace2 folder: expected identity sub-folders like n000001/0001_01.jpg "
                     f"in {tried}")


def select_vggface2_10(root: str | Path, *, seed: int = 0, identities: int = 10, per_identity: int = 10,
                       split: str | None = None, cropper: Callable[[Path], torch.Tensor] | None = None,
                       progress: bool = True) -> Selection:
    """Choose ``identities`` VGGFace2 identities and ``per_identity`` face images of each.

    The rule: identities with at least ``per_identity`` image files, sorted,
    are shuffled with ``random.Random(f"mnd:vggface2_10:{seed}")``. Walking
    that order, each identity's file names, sorted, are shuffled with
    ``random.Random(f"mnd:vggface2_10:{seed}:{identity}")``; the first
    ``per_identity`` files that decode and in which ``cropper`` finds a face
    are taken (others are skipped with the reason ``unreadable: ...`` or
    ``no face: ...``). An identity that runs out of usable images is given up
    (reason ``identity given up: ...``) and the next one is taken. Class
    indices 0..9 follow the sorted identity names of the chosen ten.

    Args:
        root: the VGGFace2 folder (or its ``train`` folder).
        seed: the seed of the rule.
        identities: how many identities (the paper: 10).
        per_identity: images per identity (the paper: 10).
        split: sub-folder of ``root`` (``train``); None tries root, then train.
            ``test`` is refused (see :func:`vggface2_identities`).
        cropper: path -> face crop, raising InputError when there is no
            face; default :func:`vggface2_face`. Tests pass a fake.
        progress: show a tqdm progress bar.

    Returns:
        The selection; write it with :func:`write_manifest`.

    Raises:
        InputError: bad root or layout, or too few identities with enough
            usable images.
    """
    if identities < 1 or per_identity < 1:
        raise InputError("--identities/--per-identity", "must both be at least 1")
    crop = cropper or vggface2_face
    folder, all_ids = vggface2_identities(root, split=split)
    eligible = [ident for ident, names in all_ids.items() if len(names) >= per_identity]
    if len(eligible) < identities:
        raise InputError(folder, f"too few identities: {identities} needed with at least {per_identity} images "
                         f"each, {len(eligible)} of {len(all_ids)} identity folders have that many")
    selection = Selection("vggface2_10", folder, "identities", seed)
    accepted: dict[str, list[str]] = {}

    def usable(path: Path) -> str | None:
        reason = _unreadable_reason(path)
        if reason is not None:
            return reason
        try:
            crop(path)
        except InputError as exc:
            return f"no face: {exc.problem}"
        return None

    bar = tqdm(total=identities * per_identity, desc="vggface2_10: crop faces", unit="img", disable=not progress)
    try:
        for ident in seeded_order(eligible, f"mnd:vggface2_10:{seed}"):
            if len(accepted) == identities:
                break
            order = [f"{ident}/{n}" for n in seeded_order(all_ids[ident], f"mnd:vggface2_10:{seed}:{ident}")]
            chosen = _take(folder, order, per_identity, usable, selection.skipped)
            if len(chosen) < per_identity:
                selection.skipped.append(Skipped(folder / ident, f"identity given up: only {len(chosen)} of "
                                                 f"{len(order)} images usable, {per_identity} needed"))
                continue
            accepted[ident] = chosen
            bar.update(per_identity)
    finally:
        bar.close()
    if len(accepted) < identities:
        raise InputError(folder, f"too few usable identities: {len(accepted)} found with {per_identity} face images "
                         f"each, {identities} needed")
    for index, ident in enumerate(sorted(accepted)):
        for rel in sorted(accepted[ident]):
            selection.rows.append(ManifestRow(ident, index, rel, sha256_file(folder / rel)))
    return selection


def write_manifest(selection: Selection, path: str | Path | None = None) -> Path:
    """Write the selection's rows as CSV, atomically (default: ``data/manifests/<testset>.csv``).

    Columns: ``synset,class_index,class_name,path,sha256`` (ImageNet) or
    ``identity,class_index,path,sha256`` (VGGFace2); paths are relative to
    the image folder.
    """
    path = Path(path) if path is not None else DEFAULT_MANIFESTS[selection.testset]
    columns = MANIFEST_COLUMNS[selection.testset]
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in selection.rows:
            values = {"synset": row.label, "identity": row.label, "class_index": row.class_index,
                      "class_name": row.class_name, "path": row.path, "sha256": row.sha256}
            writer.writerow([values[c] for c in columns])
    return path


def _manifest_row(record: dict[str, str], testset: TestSet, where: Path, line: int) -> ManifestRow:
    if None in record or any(value is None for value in record.values()):
        raise InputError(where, f"line {line}: expected {len(MANIFEST_COLUMNS[testset])} columns")
    label = record["synset"] if testset == "imagenet10" else record["identity"]
    if not label.strip():
        raise InputError(where, f"line {line}: empty {'synset' if testset == 'imagenet10' else 'identity'}")
    try:
        index = int(record["class_index"])
    except (TypeError, ValueError):
        raise InputError(where, f"line {line}: class_index {record['class_index']!r} is not an integer") from None
    sha = (record["sha256"] or "").strip().lower()
    if not _SHA256_RE.match(sha):
        raise InputError(where, f"line {line}: sha256 {record['sha256']!r} is not 64 hex digits")
    rel = (record["path"] or "").strip()
    if not rel or rel.startswith("/") or ".." in Path(rel).parts:
        raise InputError(where, f"line {line}: path {rel!r} must be relative, inside the image folder")
    return ManifestRow(label, index, rel, sha, record.get("class_name") or "")


def read_manifest(path: str | Path) -> tuple[TestSet, list[ManifestRow]]:
    """Read a manifest written by :func:`write_manifest`.

    Returns:
        The test set (from the header) and the rows.

    Raises:
        InputError: missing file, unknown header, a malformed row, or an image
            listed twice (naming the manifest and the repeated row).
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = tuple(reader.fieldnames or ())
            testset: TestSet
            if header == MANIFEST_COLUMNS["imagenet10"]:
                testset = "imagenet10"
            elif header == MANIFEST_COLUMNS["vggface2_10"]:
                testset = "vggface2_10"
            else:
                expected = " or ".join(",".join(c) for c in MANIFEST_COLUMNS.values())
                raise InputError(path, f"not an mnd manifest: header {','.join(header)!r}, expected {expected}")
            rows = [_manifest_row(record, testset, path, number) for number, record in enumerate(reader, start=2)]
    except FileNotFoundError:
        raise InputError(path, "no such manifest") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"cannot read manifest ({exc})") from None
    if not rows:
        raise InputError(path, "manifest has no rows")
    _refuse_duplicates(path, testset, rows)
    return testset, rows


def _refuse_duplicates(path: Path, testset: TestSet, rows: Sequence[ManifestRow]) -> None:
    """InputError naming the manifest and the second row of an image it lists twice.

    An image listed twice would be counted twice by :func:`check_manifest`
    and attacked twice by a grid. ImageNet rows are the same image when their
    file names are (a row is found in either layout, :func:`locate`, and the
    ILSVRC2012 file names are unique); VGGFace2 rows when their paths are (file
    names repeat across identities).
    """
    first: dict[str, tuple[int, str]] = {}
    for line, row in enumerate(rows, start=2):
        key = Path(row.path).name if testset == "imagenet10" else row.path
        if key in first:
            earlier, earlier_path = first[key]
            again = "" if earlier_path == row.path else f" as {earlier_path}"
            raise InputError(path, f"line {line}: {row.path} is listed twice (first on line {earlier}{again}); "
                             "a manifest lists each image once")
        first[key] = (line, row.path)


def _places(folder: Path, row: ManifestRow, testset: TestSet) -> list[Path]:
    name = Path(row.path).name
    places = [folder / row.path]
    if testset == "imagenet10":
        places += [folder / row.label / name, folder / name]
    return list(dict.fromkeys(places))


def manifest_folder(root: str | Path, testset: TestSet, *, split: str | None = None) -> Path:
    """The image folder a manifest's paths resolve in, under a user's ``root``.

    ImageNet: ``root/<split>`` (default ``val``) when it exists, else ``root``.
    VGGFace2: as :func:`vggface2_identities` finds it.
    """
    root = _require_folder(root)
    if testset == "imagenet10":
        return _split_folder(root, split or "val")
    return vggface2_identities(root, split=split)[0]


def locate(folder: Path, row: ManifestRow, testset: TestSet) -> Path | None:
    """Where ``row``'s file is under ``folder``, or None.

    ImageNet rows are also looked for in the other layout (a manifest made
    from synset folders matches a flat copy and the reverse).
    """
    return next((p for p in _places(folder, row, testset) if p.is_file()), None)


def check_manifest(root: str | Path, manifest: str | Path, *, split: str | None = None,
                   progress: bool = True) -> CheckReport:
    """Verify a local copy against a manifest: every file present with its SHA-256.

    Args:
        root: the user's data set folder (as given to the selection).
        manifest: the manifest CSV.
        split: as in the selection (ImageNet default ``val``).
        progress: show a tqdm progress bar.

    Raises:
        InputError: the root or manifest cannot be used.
    """
    testset, rows = read_manifest(manifest)
    folder = manifest_folder(root, testset, split=split)
    report = CheckReport(Path(manifest), folder)
    for row in tqdm(rows, desc=f"{testset}: hash", unit="img", disable=not progress):
        found = locate(folder, row, testset)
        if found is None:
            report.missing.append((row, _places(folder, row, testset)))
            continue
        actual = sha256_file(found)
        if actual == row.sha256:
            report.matched += 1
        else:
            report.changed.append((row, found, actual))
    return report
