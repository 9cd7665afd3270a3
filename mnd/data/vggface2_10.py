"""VGGFace2-10 (section IV-C-1): 10 face crops of each of 10 identities, from the user's copy.

:func:`vggface2_identities` finds the identity folders of the test split;
:func:`select_vggface2_10` applies the selection rule of :mod:`mnd.data.testsets`,
keeping the first photos of each identity in which a face is found.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from mnd.data.prepare import vggface2_face
from mnd.data.selection import (
    _IDENTITY_RE, _image_names, ManifestRow, _require_folder, seeded_order, Selection, sha256_file, Skipped,
    _take, _unreadable_reason,
)
from mnd.errors import InputError


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
