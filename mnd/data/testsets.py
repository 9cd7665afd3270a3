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

The work is split by job, and every public name is re-exported here:
:mod:`mnd.data.selection` (the names, rows, reports and seeded order the two
sets share), :mod:`mnd.data.imagenet10`, :mod:`mnd.data.vggface2_10` and
:mod:`mnd.data.manifests` (writing, reading and checking a choice).

Every photo becomes a model's input here, in one of two ways, as the model's
:class:`mnd.models.ModelSpec` says: :func:`prepare_image` (resize the shorter
side, centre crop: classifiers) or :func:`mnd.data.faces.cut_faces` (face models).

>>> [c.name for c in IMAGENET10][:3]
['tench', 'goldfish', 'great white shark']
>>> IMAGENET10[0].synset, IMAGENET10[0].ilsvrc2012_id
('n01440764', 449)
"""

from __future__ import annotations

from mnd.data.selection import (
    CheckReport,
    Dataset,
    DEFAULT_MANIFESTS,
    GROUND_TRUTH_NAME,
    IMAGENET10,
    ImageNetClass,
    LABEL_FILE_NAMES,
    MANIFEST_COLUMNS,
    ManifestRow,
    seeded_order,
    Selection,
    sha256_file,
    Skipped,
    TestSet,
    TESTSETS,
)
from mnd.data.imagenet10 import (
    builtin_devkit_ids,
    imagenet_candidates,
    read_devkit_ids,
    read_val_labels,
    select_imagenet10,
)
from mnd.data.vggface2_10 import (
    select_vggface2_10,
    TEST_SPLIT_PROBLEM,
    vggface2_identities,
)
from mnd.data.manifests import (
    check_manifest,
    locate,
    manifest_folder,
    read_manifest,
    write_manifest,
)

__all__ = [
    "CheckReport",
    "DEFAULT_MANIFESTS",
    "Dataset",
    "GROUND_TRUTH_NAME",
    "IMAGENET10",
    "ImageNetClass",
    "LABEL_FILE_NAMES",
    "MANIFEST_COLUMNS",
    "ManifestRow",
    "Selection",
    "Skipped",
    "TESTSETS",
    "TEST_SPLIT_PROBLEM",
    "TestSet",
    "builtin_devkit_ids",
    "check_manifest",
    "imagenet_candidates",
    "locate",
    "manifest_folder",
    "read_devkit_ids",
    "read_manifest",
    "read_val_labels",
    "seeded_order",
    "select_imagenet10",
    "select_vggface2_10",
    "sha256_file",
    "vggface2_identities",
    "write_manifest",
]
