"""ImageNet-10 (section IV-B-1): 10 validation images of each of the classes 0-9, from the user's copy.

Reads the ILSVRC2012 devkit's class IDs and the validation labels in any of
their usual forms (:func:`read_val_labels`), finds the candidates in a flat or a
synset-folder layout (:func:`imagenet_candidates`) and applies the selection
rule of :mod:`mnd.data.testsets` (:func:`select_imagenet10`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mnd.data.imageio import IMAGE_SUFFIXES
from mnd.data.selection import (
    _image_names, IMAGENET10, _is_image, LABEL_FILE_NAMES, ManifestRow, _require_folder, seeded_order,
    Selection, sha256_file, _split_folder, _SYNSET_RE, _take, _unreadable_reason,
)
from mnd.errors import InputError


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
