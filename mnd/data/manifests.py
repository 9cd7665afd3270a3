"""Manifests of the paper's test sets: which files were chosen, with their SHA-256, written, read and checked.

:func:`write_manifest` writes a :class:`~mnd.data.selection.Selection`;
:func:`read_manifest` refuses a damaged one; :func:`check_manifest` verifies
another person's copy of a data set against it (``mnd data check``).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from mnd.data.imageio import atomic_open
from mnd.data.selection import (
    CheckReport, DEFAULT_MANIFESTS, MANIFEST_COLUMNS, ManifestRow, _require_folder, Selection, sha256_file,
    _SHA256_RE, _split_folder, TestSet,
)
from mnd.data.vggface2_10 import vggface2_identities
from mnd.errors import InputError


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
