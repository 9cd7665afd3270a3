"""Data: image files, faces, the paper's test sets and the embedded photos, and the one preprocessing.

- :mod:`~mnd.data.imageio`: reading and writing 8-bit images, atomically.
- :mod:`~mnd.data.faces`: face detection, the one face-crop choice, gallery folders.
- :mod:`~mnd.data.testsets`: ImageNet-10 and VGGFace2-10, chosen reproducibly, with manifests.
- :mod:`~mnd.data.embedded`: seven photos that installed packages ship.
- :mod:`~mnd.data.prepare`: a photo becomes a model's input.
- :mod:`~mnd.data.paths`: the project's own folders.

Imports only :mod:`mnd.errors`, :mod:`mnd.core` and :mod:`mnd.models`. The public names of
testsets, prepare, embedded and paths are re-exported here.
"""

from mnd.data.paths import (
    paper_dir,
    project_root,
)
from mnd.data.testsets import (
    DEFAULT_MANIFESTS,
    GROUND_TRUTH_NAME,
    IMAGENET10,
    LABEL_FILE_NAMES,
    MANIFEST_COLUMNS,
    TEST_SPLIT_PROBLEM,
    TESTSETS,
    builtin_devkit_ids,
    check_manifest,
    CheckReport,
    Dataset,
    imagenet_candidates,
    ImageNetClass,
    locate,
    manifest_folder,
    ManifestRow,
    read_devkit_ids,
    read_manifest,
    read_val_labels,
    seeded_order,
    select_imagenet10,
    select_vggface2_10,
    Selection,
    sha256_file,
    Skipped,
    TestSet,
    vggface2_identities,
    write_manifest,
)
from mnd.data.prepare import (
    VGGFACE2_MODEL,
    prepare_image,
    vggface2_face,
)
from mnd.data.embedded import (
    EMBEDDED_NAMES,
    embedded_images,
    EmbeddedImage,
    export_embedded,
)

__all__ = [
    "CheckReport",
    "DEFAULT_MANIFESTS",
    "Dataset",
    "EMBEDDED_NAMES",
    "EmbeddedImage",
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
    "VGGFACE2_MODEL",
    "builtin_devkit_ids",
    "check_manifest",
    "embedded_images",
    "export_embedded",
    "imagenet_candidates",
    "locate",
    "manifest_folder",
    "paper_dir",
    "prepare_image",
    "project_root",
    "read_devkit_ids",
    "read_manifest",
    "read_val_labels",
    "seeded_order",
    "select_imagenet10",
    "select_vggface2_10",
    "sha256_file",
    "vggface2_face",
    "vggface2_identities",
    "write_manifest",
]
