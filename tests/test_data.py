"""Tests of mnd.data and mnd.cli.data on tiny generated ImageNet and VGGFace2 folders."""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnd import data, models
from mnd.cli import data as cli_data
from mnd.cli.main import main
from mnd.data import faces
from mnd.data.imageio import load_rgb
from mnd.errors import InputError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PAPER_CLASSES = SHARED / "imagenet-paper-classes"
SOURCES_MD = Path(__file__).resolve().parents[1] / "data" / "SOURCES.md"
OTHER_SYNSET = "n02119789"  # kit fox: devkit ID 1, torchvision index 278; not one of the ten


# --------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------


def _write_jpeg(path: Path, number: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(number).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)


def _val_plan(per_class: int) -> list[tuple[str, str]]:
    """(file name, synset) of a fake validation set: the ten classes and some kit foxes, interleaved."""
    synsets = [c.synset for c in data.IMAGENET10] + [OTHER_SYNSET]
    plan = []
    for round_ in range(per_class):
        for offset, synset in enumerate(synsets):
            number = round_ * len(synsets) + offset + 1
            plan.append((f"ILSVRC2012_val_{number:08d}.JPEG", synset))
    return plan


def make_imagenet(root: Path, *, layout: str = "folders", per_class: int = 6, labels: str = "ground_truth") -> Path:
    """A fake ILSVRC2012 root with ``val/`` in the given layout; identical file bytes in every layout."""
    val = root / "val"
    plan = _val_plan(per_class)
    for name, synset in plan:
        number = int(name[15:23])
        _write_jpeg(val / synset / name if layout == "folders" else val / name, number)
    if layout == "flat":
        ids = {c.synset: c.ilsvrc2012_id for c in data.IMAGENET10} | {OTHER_SYNSET: 1}
        index = {c.synset: c.class_index for c in data.IMAGENET10} | {OTHER_SYNSET: 278}
        if labels == "ground_truth":
            text = "".join(f"{ids[s]}\n" for _, s in plan)
            (root / data.GROUND_TRUTH_NAME).write_text(text)
        elif labels == "synset":
            (val / "val.txt").write_text("".join(f"{n} {s}\n" for n, s in plan))
        elif labels == "index":
            (root / "val.txt").write_text("".join(f"{n}\t{index[s]}\n" for n, s in plan))
        elif labels == "loc_csv":
            rows = "".join(f"{n[:-5]},{s} 1 2 30 40 {s} 5 6 70 80\n" for n, s in plan)
            (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + rows)
        else:
            raise ValueError(labels)
    return root


def make_vggface2(root: Path, *, identities: int = 6, images: int = 5, noface: dict[str, int] | None = None) -> Path:
    """A fake VGGFace2 root with ``train/n000001/0001_01.jpg``...; ``noface`` marks files the fake cropper rejects."""
    noface = noface or {}
    number = 0
    for i in range(1, identities + 1):
        ident = f"n{i:06d}"
        for j in range(1, images + 1):
            number += 1
            tag = "_noface" if j <= noface.get(ident, 0) else ""
            _write_jpeg(root / "train" / ident / f"{j:04d}_01{tag}.jpg", 10_000 + number)
    return root


def fake_cropper(path: Path) -> torch.Tensor:
    if "noface" in Path(path).name:
        raise InputError(path, "no face found")
    return torch.full((3, 160, 160), 0.5)


def _names(selection: data.Selection) -> list[tuple[str, str]]:
    return [(row.label, Path(row.path).name) for row in selection.rows]


# --------------------------------------------------------------------------
# The class table
# --------------------------------------------------------------------------


def test_imagenet10_table_is_torchvision_order_and_devkit_ids_differ() -> None:
    synsets = [c.synset for c in data.IMAGENET10]
    assert [c.class_index for c in data.IMAGENET10] == list(range(10))
    assert synsets == sorted(synsets)  # torchvision's indices follow sorted synsets
    assert synsets[0] == "n01440764" and synsets[-1] == "n01518878"
    ids = [c.ilsvrc2012_id for c in data.IMAGENET10]
    assert len(set(ids)) == 10 and set(ids).isdisjoint(range(1, 11))
    assert data.builtin_devkit_ids()[442] == "n01484850"


# --------------------------------------------------------------------------
# ImageNet selection
# --------------------------------------------------------------------------


def test_imagenet_selection_is_deterministic_and_seeded(tmp_path: Path) -> None:
    root = make_imagenet(tmp_path / "ilsvrc")
    first = data.select_imagenet10(root, seed=0, per_class=3, progress=False)
    again = data.select_imagenet10(root, seed=0, per_class=3, progress=False)
    other = data.select_imagenet10(root, seed=1, per_class=3, progress=False)
    assert first.rows == again.rows
    assert _names(first) != _names(other)
    assert len(first.rows) == 30 and first.layout == "folders" and not first.skipped
    assert [r.class_index for r in first.rows] == [i for i in range(10) for _ in range(3)]
    assert all(r.label not in (OTHER_SYNSET,) for r in first.rows)
    row = first.rows[0]
    assert row.class_name == "tench" and row.path.startswith("n01440764/")
    assert row.sha256 == data.sha256_file(first.folder / row.path)


def test_imagenet_rule_is_the_documented_one(tmp_path: Path) -> None:
    root = make_imagenet(tmp_path / "ilsvrc")
    selection = data.select_imagenet10(root, seed=7, per_class=2, progress=False)
    for cls in data.IMAGENET10:
        names = sorted(p.name for p in (root / "val" / cls.synset).iterdir())
        random.Random(f"mnd:imagenet10:7:{cls.synset}").shuffle(names)
        got = sorted(Path(r.path).name for r in selection.rows if r.label == cls.synset)
        assert got == sorted(names[:2])


@pytest.mark.parametrize("labels", ["ground_truth", "synset", "index", "loc_csv"])
def test_flat_val_layouts_select_the_same_images_as_folders(tmp_path: Path, labels: str) -> None:
    folders = data.select_imagenet10(make_imagenet(tmp_path / "a"), seed=3, per_class=4, progress=False)
    flat = data.select_imagenet10(make_imagenet(tmp_path / "b", layout="flat", labels=labels), seed=3,
                                  per_class=4, progress=False)
    assert flat.layout.startswith("flat:")
    assert _names(flat) == _names(folders)
    assert [r.sha256 for r in flat.rows] == [r.sha256 for r in folders.rows]
    assert all("/" not in r.path for r in flat.rows)


def test_devkit_meta_mat_overrides_the_builtin_ids(tmp_path: Path) -> None:
    import scipy.io

    root = tmp_path / "ilsvrc"
    plan = _val_plan(3)
    for name, _ in plan:
        _write_jpeg(root / "val" / name, int(name[15:23]))
    # a devkit whose IDs differ from the real ones: the ten classes are 11..20, kit fox 5
    devkit_ids = {c.synset: 11 + c.class_index for c in data.IMAGENET10} | {OTHER_SYNSET: 5}
    records = np.zeros((11, 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
    for i, (synset, ident) in enumerate(devkit_ids.items()):
        records[i, 0]["ILSVRC2012_ID"] = np.array([[ident]], dtype=np.uint16)
        records[i, 0]["WNID"] = synset
    kit = root / "ILSVRC2012_devkit_t12" / "data"
    kit.mkdir(parents=True)
    scipy.io.savemat(kit / "meta.mat", {"synsets": records})
    (kit / data.GROUND_TRUTH_NAME).write_text("".join(f"{devkit_ids[s]}\n" for _, s in plan))
    assert data.read_devkit_ids(kit / "meta.mat")[11] == "n01440764"
    selection = data.select_imagenet10(root, seed=0, per_class=3, progress=False)
    assert "meta.mat" in selection.layout
    expected = {(s, n) for n, s in plan if s != OTHER_SYNSET}
    assert set(_names(selection)) == expected


def test_read_val_labels_formats_and_errors(tmp_path: Path) -> None:
    gt = tmp_path / "gt.txt"
    gt.write_text("449\n1\n385\n")
    assert data.read_val_labels(gt) == {"ILSVRC2012_val_00000001": "n01440764",
                                        "ILSVRC2012_val_00000003": "n01518878"}
    two = tmp_path / "two.txt"
    two.write_text("a.JPEG 9\nb.JPEG 500\nc.jpeg n01514859\n")
    assert data.read_val_labels(two) == {"a": "n01518878", "c": "n01514859"}
    bad = tmp_path / "bad.txt"
    bad.write_text("a.JPEG tench\n")
    with pytest.raises(InputError, match=r"bad\.txt: line 1: label 'tench'"):
        data.read_val_labels(bad)
    gt.write_text("449\n1001\n")
    with pytest.raises(InputError, match=r"line 2: class ID 1001 outside 1\.\.1000"):
        data.read_val_labels(gt)
    with pytest.raises(InputError, match="no such labels file"):
        data.read_val_labels(tmp_path / "absent.txt")


# --------------------------------------------------------------------------
# ImageNet errors
# --------------------------------------------------------------------------


def test_imagenet_root_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nowhere: no such folder"):
        data.select_imagenet10(tmp_path / "nowhere", progress=False)


def test_imagenet_wrong_layout_names_the_expected_layouts(tmp_path: Path) -> None:
    (tmp_path / "photos" / "holiday").mkdir(parents=True)
    with pytest.raises(InputError, match=r"not an ILSVRC2012 folder: expected synset sub-folders.*flat val/"):
        data.select_imagenet10(tmp_path / "photos", progress=False)


def test_imagenet_flat_folder_without_labels(tmp_path: Path) -> None:
    _write_jpeg(tmp_path / "root" / "val" / "ILSVRC2012_val_00000001.JPEG", 1)
    with pytest.raises(InputError, match=r"val: flat folder of images but no labels file.*--labels"):
        data.select_imagenet10(tmp_path / "root", progress=False)


def test_imagenet_too_few_images_names_class_found_and_needed(tmp_path: Path) -> None:
    root = make_imagenet(tmp_path / "ilsvrc", per_class=4)
    for extra in sorted((root / "val" / "n01496331").iterdir())[:2]:
        extra.unlink()
    with pytest.raises(InputError, match=r"too few images: 4 needed per class; n01496331 \(electric ray\): 2 found"):
        data.select_imagenet10(root, per_class=4, progress=False)
    shutil.rmtree(root / "val" / "n01514859")
    with pytest.raises(InputError, match=r"n01514859 \(hen\): 0 found"):
        data.select_imagenet10(root, per_class=2, progress=False)


def test_imagenet_unreadable_files_are_listed_skipped_and_counted(tmp_path: Path) -> None:
    root = make_imagenet(tmp_path / "ilsvrc", per_class=6)
    folder = root / "val" / "n01443537"
    bad = sorted(folder.iterdir())[2]
    bad.write_bytes(b"this is not a JPEG")
    # a seed for which the bad file is met before the fifth good one
    seed = next(s for s in range(50) if data.seeded_order([p.name for p in folder.iterdir()],
                                                          f"mnd:imagenet10:{s}:n01443537")[-1] != bad.name)
    selection = data.select_imagenet10(root, seed=seed, per_class=5, progress=False)
    assert selection.skipped == [data.Skipped(bad, selection.skipped[0].reason)]
    assert selection.skipped[0].reason.startswith("unreadable: not an image file")
    assert bad.name not in {Path(r.path).name for r in selection.rows}
    assert len(selection.rows) == 50 and "skipped 1 unreadable" in selection.summary()
    with pytest.raises(InputError, match=r"n01443537 \(goldfish\): 5 readable found, 6 needed \(1 unreadable skipped\)"):
        data.select_imagenet10(root, seed=seed, per_class=6, progress=False)


# --------------------------------------------------------------------------
# Manifests and checks
# --------------------------------------------------------------------------


def test_manifest_round_trips_and_is_written_atomically(tmp_path: Path) -> None:
    selection = data.select_imagenet10(make_imagenet(tmp_path / "ilsvrc"), per_class=2, progress=False)
    out = data.write_manifest(selection, tmp_path / "m" / "imagenet10.csv")
    assert sorted(p.name for p in out.parent.iterdir()) == ["imagenet10.csv"]  # no temporary left behind
    header = out.read_text().splitlines()[0]
    assert header == "synset,class_index,class_name,path,sha256"
    dataset, rows = data.read_manifest(out)
    assert dataset == "imagenet10" and rows == selection.rows


def test_check_passes_then_catches_a_changed_and_a_missing_file(tmp_path: Path) -> None:
    root = make_imagenet(tmp_path / "ilsvrc")
    selection = data.select_imagenet10(root, per_class=2, progress=False)
    manifest = data.write_manifest(selection, tmp_path / "imagenet10.csv")
    report = data.check_manifest(root, manifest, progress=False)
    assert report.ok and report.matched == 20
    assert data.check_manifest(root / "val", manifest, progress=False).ok  # the split folder as root
    changed, missing = (root / "val" / r.path for r in selection.rows[:2])
    changed.write_bytes(changed.read_bytes() + b"\0")
    missing.unlink()
    report = data.check_manifest(root, manifest, progress=False)
    assert not report.ok and report.matched == 18
    assert [row.path for row, _ in report.missing] == [selection.rows[1].path]
    assert [(row.path, found) for row, found, _ in report.changed] == [(selection.rows[0].path, changed)]
    text = "\n".join(report.lines())
    assert f"missing: {selection.rows[1].path}" in text and f"changed: {changed}" in text
    assert "18 of 20 images match" in text


def test_a_folders_manifest_checks_against_a_flat_copy(tmp_path: Path) -> None:
    selection = data.select_imagenet10(make_imagenet(tmp_path / "a"), per_class=2, progress=False)
    manifest = data.write_manifest(selection, tmp_path / "imagenet10.csv")
    flat = make_imagenet(tmp_path / "b", layout="flat")
    assert data.check_manifest(flat, manifest, progress=False).matched == 20


def test_bad_manifests(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match=r"wrong\.csv: not an mnd manifest"):
        data.read_manifest(wrong)
    short = tmp_path / "short.csv"
    short.write_text("identity,class_index,path,sha256\nn000001,0,n000001/a.jpg,abc\n")
    with pytest.raises(InputError, match=r"short\.csv: line 2: sha256 'abc' is not 64 hex digits"):
        data.read_manifest(short)
    with pytest.raises(InputError, match="no such manifest"):
        data.read_manifest(tmp_path / "absent.csv")


def test_an_image_listed_twice_is_refused_not_counted_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_imagenet(tmp_path / "ilsvrc", per_class=2)
    manifest = tmp_path / "imagenet10.csv"
    data.write_manifest(data.select_imagenet10(root, per_class=1, progress=False), manifest)
    lines = manifest.read_text().splitlines()
    twice = tmp_path / "twice.csv"
    twice.write_text("\n".join([*lines, lines[3]]) + "\n")  # the third image again, as the 12th row (line 12)
    path = lines[3].split(",")[3]
    assert main(["data", "check", "imagenet", "--root", str(root), "--manifest", str(twice), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == (f"mnd: error: {twice}: line 12: {path} is listed twice (first on line 4); "
                   "a manifest lists each image once\n")
    # the same ImageNet file in the other layout is the same image (check_manifest finds it in either)
    flat = lines[3].replace(path, path.split("/")[1])
    (tmp_path / "layouts.csv").write_text("\n".join([*lines, flat]) + "\n")
    with pytest.raises(InputError, match=rf"layouts\.csv: line 12: {path.split('/')[1]} is listed twice "
                                         rf"\(first on line 4 as {path}\)"):
        data.check_manifest(root, tmp_path / "layouts.csv", progress=False)
    # VGGFace2 file names repeat across identities: only the same path is the same image
    vgg = tmp_path / "vggface2_10.csv"
    sha = "0" * 64
    vgg.write_text(f"identity,class_index,path,sha256\nn000001,0,n000001/0001_01.jpg,{sha}\n"
                   f"n000002,1,n000002/0001_01.jpg,{sha}\n")
    assert len(data.read_manifest(vgg)[1]) == 2
    vgg.write_text(vgg.read_text() + f"n000001,0,n000001/0001_01.jpg,{sha}\n")
    with pytest.raises(InputError, match=r"vggface2_10\.csv: line 4: n000001/0001_01\.jpg is listed twice"):
        data.read_manifest(vgg)


# --------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------


VGG19 = models.spec("vgg19")


def test_prepare_image_resizes_short_side_and_centre_crops(tmp_path: Path) -> None:
    pixels = np.zeros((300, 600, 3), dtype=np.uint8)
    pixels[:, :150] = (255, 0, 0)   # left quarter red
    pixels[:, 150:450] = (0, 255, 0)  # middle half green
    pixels[:, 450:] = (0, 0, 255)   # right quarter blue
    out = data.prepare_image(pixels, VGG19)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    # 300x600 -> 256x512; the centre 224 columns (144..368) lie inside the green band (128..384)
    assert torch.allclose(out[1], torch.ones(224, 224)) and out[0].max() == 0 and out[2].max() == 0
    path = tmp_path / "bands.png"
    Image.fromarray(pixels).save(path)
    assert torch.equal(data.prepare_image(path, VGG19), out)
    assert torch.equal(data.prepare_image(load_rgb(path), VGG19), out)
    with pytest.raises(InputError, match="expected \\(H, W, 3\\) uint8"):
        data.prepare_image(np.zeros((10, 10), dtype=np.uint8), VGG19)


def test_prepare_image_is_8bit_and_refuses_photos_smaller_than_the_input(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (240, 230, 3), dtype=np.uint8)
    out = data.prepare_image(pixels, VGG19, where="small.png")
    assert torch.equal(out, (out * 255).round() / 255) and 0 <= out.min() and out.max() <= 1
    # a photo whose shorter side already has the resize length is only cropped
    exact = np.random.default_rng(1).integers(0, 256, (256, 300, 3), dtype=np.uint8)
    cropped = torch.from_numpy(exact[16:240, 38:262]).permute(2, 0, 1).float() / 255
    assert torch.equal(data.prepare_image(exact, VGG19), cropped)
    with pytest.raises(InputError, match=r"^small\.png: image is 230x200, smaller than the 224x224 that vgg19 needs"):
        data.prepare_image(pixels[:200], VGG19, where="small.png")


# --------------------------------------------------------------------------
# VGGFace2
# --------------------------------------------------------------------------


def test_vggface2_selection_is_deterministic_and_seeded(tmp_path: Path) -> None:
    root = make_vggface2(tmp_path / "vgg", identities=8, images=5)
    first = data.select_vggface2_10(root, seed=0, identities=3, per_identity=3, cropper=fake_cropper, progress=False)
    again = data.select_vggface2_10(root, seed=0, identities=3, per_identity=3, cropper=fake_cropper, progress=False)
    other = data.select_vggface2_10(root, seed=5, identities=3, per_identity=3, cropper=fake_cropper, progress=False)
    assert first.rows == again.rows and _names(first) != _names(other)
    assert first.folder == root / "train" and len(first.rows) == 9
    labels = [r.label for r in first.rows]
    assert labels == sorted(labels) and [r.class_index for r in first.rows] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # the documented rule, re-derived here
    eligible = sorted(p.name for p in (root / "train").iterdir())
    random.Random("mnd:vggface2_10:0").shuffle(eligible)
    assert sorted(set(labels)) == sorted(eligible[:3])


def test_vggface2_images_without_a_face_are_skipped_counted_and_replaced(tmp_path: Path) -> None:
    # n000001 has 2 faces in 5 files; 3 of the 4 identities are needed, so it is always reached and given up
    root = make_vggface2(tmp_path / "vgg", identities=4, images=5, noface={"n000001": 3, "n000003": 1})
    selection = data.select_vggface2_10(root, seed=0, identities=3, per_identity=3, cropper=fake_cropper,
                                        progress=False)
    assert {r.label for r in selection.rows} == {"n000002", "n000003", "n000004"}
    assert all("noface" not in r.path for r in selection.rows)
    given_up = [s for s in selection.skipped if s.reason.startswith("identity given up")]
    assert given_up == [data.Skipped(root / "train" / "n000001",
                                     "identity given up: only 2 of 5 images usable, 3 needed")]
    no_face = [s for s in selection.skipped if s.reason.startswith("no face")]
    assert {s.path.name for s in no_face if s.path.parent.name == "n000001"} == {
        "0001_01_noface.jpg", "0002_01_noface.jpg", "0003_01_noface.jpg"}
    # n000003's faceless file is skipped exactly when the documented order meets it before a third face
    names = sorted(p.name for p in (root / "train" / "n000003").iterdir())
    random.Random("mnd:vggface2_10:0:n000003").shuffle(names)
    met = names.index("0001_01_noface.jpg") < 3
    assert any(s.path.parent.name == "n000003" for s in no_face) == met
    assert f"{len(no_face)} no face" in selection.summary() and "1 identity given up" in selection.summary()


def test_vggface2_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        data.select_vggface2_10(tmp_path / "nowhere", cropper=fake_cropper, progress=False)
    (tmp_path / "flat").mkdir()
    _write_jpeg(tmp_path / "flat" / "face.jpg", 1)
    with pytest.raises(InputError, match=r"not a VGGFace2 folder: expected identity sub-folders like n000001"):
        data.select_vggface2_10(tmp_path / "flat", cropper=fake_cropper, progress=False)
    root = make_vggface2(tmp_path / "vgg", identities=4, images=3)
    with pytest.raises(InputError, match=r"too few identities: 10 needed with at least 3 images each, 4 of 4"):
        data.select_vggface2_10(root, per_identity=3, cropper=fake_cropper, progress=False)
    faceless = make_vggface2(tmp_path / "vgg2", identities=3, images=3, noface={"n000002": 1, "n000003": 1})
    with pytest.raises(InputError, match=r"too few usable identities: 1 found with 3 face images each, 2 needed"):
        data.select_vggface2_10(faceless, identities=2, per_identity=3, cropper=fake_cropper, progress=False)


def test_vggface2_test_identities_are_refused_never_a_fallback(tmp_path: Path) -> None:
    # identities only in test/: the 8631-way classifier never saw them, so the selection must not use them
    root = make_vggface2(tmp_path / "vgg", identities=4, images=3)
    (root / "train").rename(root / "test")
    with pytest.raises(InputError, match=r"test holds VGGFace2's test identities, which are not among the 8631 "
                                         r"training identities"):
        data.select_vggface2_10(root, identities=2, per_identity=2, cropper=fake_cropper, progress=False)
    with pytest.raises(InputError, match=r"vgg/test: holds VGGFace2.s test identities.*cannot recognise them"):
        data.select_vggface2_10(root / "test", identities=2, per_identity=2, cropper=fake_cropper, progress=False)
    with pytest.raises(InputError, match=r"cannot recognise them"):
        data.vggface2_identities(root, split="test")
    # with train/ present, train/ is used and test/ is ignored
    make_vggface2(root, identities=4, images=3)
    folder, ids = data.vggface2_identities(root)
    assert folder == root / "train" and sorted(ids) == ["n000001", "n000002", "n000003", "n000004"]


def test_vggface2_manifest_and_check(tmp_path: Path) -> None:
    root = make_vggface2(tmp_path / "vgg", identities=4, images=3)
    selection = data.select_vggface2_10(root, identities=2, per_identity=2, cropper=fake_cropper, progress=False)
    manifest = data.write_manifest(selection, tmp_path / "vggface2_10.csv")
    assert manifest.read_text().splitlines()[0] == "identity,class_index,path,sha256"
    assert data.read_manifest(manifest) == ("vggface2_10", selection.rows)
    assert data.check_manifest(root, manifest, progress=False).ok
    (root / "train" / selection.rows[-1].path).unlink()
    report = data.check_manifest(root, manifest, progress=False)
    assert len(report.missing) == 1 and report.matched == 3


def test_vggface2_face_uses_cut_faces_and_keeps_the_largest_face(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def cut_faces(image: np.ndarray, spec: models.ModelSpec, *, where: str = "image") -> types.SimpleNamespace:
        calls.append((image.shape, spec.input_size, where))
        crops = torch.stack([torch.full((3, 160, 160), v) for v in (0.1, 0.2, 0.3)])
        boxes = np.array([[0, 0, 10, 10], [0, 0, 30, 20], [5, 5, 15, 15]], dtype=np.float32)
        return types.SimpleNamespace(faces=crops, boxes=boxes, probs=np.array([0.99, 0.9, 0.98]))

    monkeypatch.setattr(faces, "cut_faces", cut_faces)
    path = tmp_path / "face.jpg"
    _write_jpeg(path, 3)
    face = data.vggface2_face(path)
    assert face.shape == (3, 160, 160) and torch.all(face == 0.2)
    assert calls == [((12, 12, 3), 160, str(path))]


# --------------------------------------------------------------------------
# Embedded sample set
# --------------------------------------------------------------------------

EMBEDDED_SHAPES = {
    "astronaut": (512, 512, 3), "chelsea": (300, 451, 3), "coffee": (400, 600, 3), "rocket": (427, 640, 3),
    "china": (427, 640, 3), "flower": (427, 640, 3), "motorcycle": (500, 741, 3), "hubble": (872, 1000, 3),
    "grace_hopper": (600, 512, 3),
}


def test_embedded_images_load_offline_as_rgb_uint8(tmp_path: Path) -> None:
    images = data.embedded_images()
    assert [im.name for im in images] == list(EMBEDDED_SHAPES)
    for im in images:
        assert im.pixels.dtype == np.uint8 and im.pixels.shape == EMBEDDED_SHAPES[im.name]
        assert min(im.pixels.shape[:2]) >= 224 and im.pixels.std() > 10  # a photo, not a blank
        assert im.source and im.licence
    sources = SOURCES_MD.read_text()
    assert all(f"`{name}`" in sources for name in data.EMBEDDED_NAMES)
    with pytest.raises(InputError, match="lena: unknown embedded image"):
        data.embedded_images(["lena"])


def test_export_embedded_writes_pngs_that_round_trip(tmp_path: Path) -> None:
    paths = data.export_embedded(tmp_path / "emb", ["chelsea", "grace_hopper"])
    assert [p.name for p in paths] == ["chelsea.png", "grace_hopper.png"]
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == ["chelsea.png", "grace_hopper.png"]
    original = {im.name: im.pixels for im in data.embedded_images(["chelsea", "grace_hopper"])}
    for path in paths:
        assert np.array_equal(load_rgb(path).pixels, original[path.stem])
    first = paths[0].read_bytes()
    data.export_embedded(tmp_path / "emb", ["chelsea"])
    assert paths[0].read_bytes() == first  # no timestamps: reruns give identical files


def test_export_embedded_never_overwrites_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(out / "chelsea.png")  # the user's own chelsea.png
    mine = (out / "chelsea.png").read_bytes()
    assert main(["data", "embedded", "--out", str(out), "--names", "coffee", "chelsea"]) == 2
    assert capsys.readouterr().err == (f"mnd: error: {out / 'chelsea.png'}: exists and holds other pixels than "
                                       "this embedded photo; mnd data embedded never overwrites a file: move it "
                                       "away or choose another --out folder\n")
    assert (out / "chelsea.png").read_bytes() == mine and sorted(os.listdir(out)) == ["chelsea.png"]  # nothing written
    (out / "coffee.png").write_text("not a photo")
    with pytest.raises(InputError, match=r"coffee\.png: exists and is not this embedded photo: not an image"):
        data.export_embedded(out, ["coffee"])
    (out / "coffee.png").unlink()
    (out / "coffee.png").mkdir()
    with pytest.raises(InputError, match=r"coffee\.png: is a folder"):
        data.export_embedded(out, ["coffee"])
    # a folder mnd wrote: a rerun keeps its photos as they are
    ours = tmp_path / "ours"
    assert main(["data", "embedded", "--out", str(ours), "--names", "coffee", "rocket"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote 2 images to {ours}"
    stamps = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in ours.iterdir()}
    assert main(["data", "embedded", "--out", str(ours), "--names", "coffee", "rocket", "china"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (f"wrote 1 images to {ours}; 2 already there with the same "
                                                        "pixels, left as they are")
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in ours.iterdir() if p.name != "china.png"} == stamps


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mnd")
    cli_data.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_imagenet_select_check_and_embedded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_imagenet(tmp_path / "ilsvrc", per_class=3)
    manifest = tmp_path / "imagenet10.csv"
    assert _run(["data", "select", "imagenet", "--root", str(root), "--seed", "2", "--per-class", "2",
                 "--out", str(manifest), "--quiet"]) == 0
    assert "selected 20 images from 10 classes (seed 2, folders)" in capsys.readouterr().out
    assert data.read_manifest(manifest)[1] == data.select_imagenet10(root, seed=2, per_class=2, progress=False).rows
    assert _run(["data", "check", "imagenet", "--root", str(root), "--manifest", str(manifest), "--quiet"]) == 0
    assert "20 of 20 images match" in capsys.readouterr().out
    first = root / "val" / data.read_manifest(manifest)[1][0].path
    first.write_bytes(b"changed")
    assert _run(["data", "check", "imagenet", "--root", str(root), "--manifest", str(manifest), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f"changed: {first}" in out and "19 of 20 images match" in out
    assert _run(["data", "embedded", "--out", str(tmp_path / "emb"), "--names", "coffee", "rocket"]) == 0
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == ["coffee.png", "rocket.png"]
    with pytest.raises(InputError, match="no such folder"):
        _run(["data", "select", "imagenet", "--root", str(tmp_path / "nowhere"), "--quiet"])


def test_cli_vggface2_select_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "vggface2_face", fake_cropper)
    root = make_vggface2(tmp_path / "vgg", identities=3, images=3, noface={"n000001": 1, "n000002": 1,
                                                                              "n000003": 1})
    manifest = tmp_path / "vggface2_10.csv"
    assert _run(["data", "select", "vggface2", "--root", str(root), "--identities", "2", "--per-identity", "2",
                 "--out", str(manifest), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "skipped " in captured.err and "no face" in captured.err
    assert "selected 4 images from 2 classes" in captured.out
    with open(manifest, newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 4
    assert _run(["data", "check", "vggface2", "--root", str(root), "--manifest", str(manifest), "--quiet"]) == 0
    (root / "train" / data.read_manifest(manifest)[1][0].path).unlink()
    assert _run(["data", "check", "vggface2", "--root", str(root), "--manifest", str(manifest), "--quiet"]) == 1
    assert "missing: " in capsys.readouterr().out


# --------------------------------------------------------------------------
# The real photos of the paper's ten classes (shared/, not committed)
# --------------------------------------------------------------------------


@pytest.mark.skipif(not PAPER_CLASSES.is_dir(), reason=f"{PAPER_CLASSES} is absent (shared sample photos)")
def test_real_paper_class_photos_in_synset_folders_are_selected(tmp_path: Path) -> None:
    root = tmp_path / "ilsvrc"
    sources = {}
    for photo in sorted(PAPER_CLASSES.glob("n*.JPEG")):
        synset = photo.name.split("_", 1)[0]
        (root / "val" / synset).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, root / "val" / synset / photo.name)
        sources[synset] = photo
    assert sorted(sources) == [c.synset for c in data.IMAGENET10]
    selection = data.select_imagenet10(root, per_class=1, progress=False)
    assert [(r.label, Path(r.path).name) for r in selection.rows] == [(s, p.name) for s, p in sorted(sources.items())]
    assert all(r.sha256 == data.sha256_file(sources[r.label]) for r in selection.rows)
    assert [r.class_name for r in selection.rows][:2] == ["tench", "goldfish"]
    batch = torch.stack([data.prepare_image(root / "val" / r.path, VGG19) for r in selection.rows])
    assert batch.shape == (10, 3, 224, 224) and 0.0 <= batch.min() and batch.max() <= 1.0
