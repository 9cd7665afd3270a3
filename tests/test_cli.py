from __future__ import annotations

import csv

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from mnd import data, models
from mnd.cli import attack as attack_cli
from mnd.cli.main import main
from mnd.data import faces
from mnd.data.imageio import load_rgb, to_tensor
from mnd.experiments.rows import COLUMNS, ORIGINAL_COLUMNS


def _write(path, pixels, **kw):
    Image.fromarray(pixels, **kw).save(path)
    return path


@pytest.fixture
def two_photos(tmp_path, photos):
    d = tmp_path / "in"
    d.mkdir()
    for name, px in photos.items():
        _write(d / f"{name}.png", px)
    return d


def _one_line_error(capsys, needle):
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    assert err[-1].startswith("mnd: error: ") and needle in err[-1], err[-1]
    return err[-1]


@pytest.mark.slow
def test_attack_end_to_end_on_two_embedded_photos(two_photos, tmp_path, effnet, capsys):
    out = tmp_path / "out"
    code = main(["attack", str(two_photos), "--model", "efficientnet_lite0", "--method", "mnd", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "2/2 attacked images adversarial" in printed
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS
    assert [r["image"] for r in rows] == ["chelsea", "coffee"]
    for row in rows:
        assert row["success"] == "True" and float(row["psnr"]) >= 45 and int(row["iterations"]) > 0
        # the PNG on disk, read back, is still adversarial
        png = load_rgb(out / f"{row['image']}.png")
        assert png.pixels.shape == (224, 224, 3)
        with torch.no_grad():
            pred = effnet(to_tensor(png.pixels)[None]).argmax(1).item()
        assert pred == int(row["adv_label"]) != int(row["clean_label"])


def test_models_command_lists_availability(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet_lite0" in out and "vgg19" in out


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda d: (d / "notes.png").write_text("hello") and d / "notes.png", "not an image file"),
        (lambda d: _truncated(d), "truncated"),
        (lambda d: _write(d / "small.png", np.zeros((100, 120, 3), np.uint8)), "smaller than the 224x224"),
        (lambda d: d / "missing.png", "no such file"),
    ],
    ids=["not-image", "truncated", "too-small", "missing"],
)
def test_bad_images_exit_2_with_one_line_naming_the_file(tmp_path, capsys, make, needle):
    d = tmp_path / "in"
    d.mkdir()
    bad = make(d)
    out = tmp_path / "out"
    code = main(["attack", str(bad), "--out", str(out), "--quiet"])
    assert code == 2
    line = _one_line_error(capsys, needle)
    assert bad.name in line
    assert not out.exists(), "nothing may be written for bad input"


def _truncated(d):
    import io

    buf = io.BytesIO()
    Image.fromarray(np.full((300, 300, 3), 120, np.uint8)).save(buf, format="JPEG")
    path = d / "cut.jpg"
    path.write_bytes(buf.getvalue()[:400])
    return path


def test_unknown_model_method_and_file_as_out(tmp_path, capsys, two_photos):
    assert main(["attack", str(two_photos), "--model", "resnet9000", "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "unknown model 'resnet9000'")
    assert main(["attack", str(two_photos), "--method", "carlini", "--out", str(tmp_path / "o")]) == 2
    assert _one_line_error(capsys, "--method") == (
        "mnd: error: --method: unknown method 'carlini'; known: "
        "no_norm, l2, l1, ssim, l2_ssim, l1_ssim, mnd, bim, pgd, mifgsm, di2fgsm, rfgsm, tifgsm, vmifgsm, sinifgsm, "
        "noise, mnd_refine, bim_min, pgd_min, ddn, fmn_l2, fmn_linf, alma_ssim, cw_l2, or a sweep point such as bim@eps=4 "
        "or mnd@margin=2"
    )
    assert not (tmp_path / "o").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["attack", str(two_photos), "--out", str(blocker)]) == 2
    _one_line_error(capsys, "output folder exists and is a file")
    assert blocker.read_text() == "x"


@pytest.mark.parametrize(
    "mode, pixels, note",
    [
        ("L", np.full((240, 240), 90, np.uint8), "converted L to RGB"),
        ("RGBA", np.full((240, 240, 4), 200, np.uint8), "converted RGBA to RGB"),
        ("I;16", np.full((240, 240), 40000, np.uint16), "16-bit"),
        ("P", None, "converted P to RGB"),
    ],
)
def test_other_modes_are_converted_and_said(tmp_path, mode, pixels, note):
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    if mode == "P":
        Image.fromarray(np.full((240, 240, 3), 30, np.uint8)).convert("P").save(path)
    else:
        im = Image.fromarray(pixels)
        assert im.mode == mode
        im.save(path)
    img = load_rgb(path)
    assert img.pixels.shape == (240, 240, 3) and img.pixels.dtype == np.uint8
    assert img.note is not None and note in img.note
    if mode == "I;16":
        assert img.pixels[0, 0, 0] == round(40000 / 65535 * 255)


def test_existing_results_survive_bad_input_and_are_merged(tmp_path, two_photos, capsys):
    out = tmp_path / "out"
    out.mkdir()
    old = out / "metrics.csv"
    old.write_text(",".join(ORIGINAL_COLUMNS) + "\nolder,mnd,efficientnet_lite0,False,True,1,2,,50,0.99,0.1,20,1.0,\n")
    before = old.read_bytes()
    gray = _write(two_photos / "gray.png", np.full((230, 230), 77, np.uint8))
    assert main(["attack", str(two_photos / "nope.png"), "--out", str(out)]) == 2
    assert old.read_bytes() == before
    # two iterations cannot change a flat gray image: not adversarial, exit status 1, said on the last line
    assert main(["attack", str(gray), "--out", str(out), "--max-iter", "2", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "gray.png: converted L to RGB" in captured.err
    assert captured.out.strip().splitlines()[-1] == "0/1 attacked images adversarial; 1 not made adversarial (exit status 1)"
    with old.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == ["older", "gray"]
    assert rows[1]["success"] == "False"
    assert "converted L to RGB" in rows[1]["note"]
    assert not list(out.glob(".*.tmp")), "no temporary files left behind"


def test_efficientnet_is_the_default_model():
    assert models.spec("efficientnet_lite0").input_size == 224


@pytest.fixture
def face_gallery(tmp_path):
    """Three identities (astronaut, Grace Hopper, cameraman), enrolled from flipped and shifted copies."""
    import matplotlib.cbook
    import skimage.data

    hopper = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))
    people = {
        "astronaut": skimage.data.astronaut(),
        "hopper": hopper,
        "camera": np.repeat(skimage.data.camera()[..., None], 3, axis=2),
    }
    gallery = tmp_path / "gallery"
    for name, img in people.items():
        (gallery / name).mkdir(parents=True)
        _write(gallery / name / "flip.png", np.ascontiguousarray(img[:, ::-1]))
        _write(gallery / name / "shift.png", np.roll(img, 12, axis=1))
    probe = _write(tmp_path / "astronaut.png", people["astronaut"])
    return gallery, probe


@pytest.mark.slow
def test_attack_protects_a_face_against_the_offline_dlib_recogniser(face_gallery, tmp_path, capsys):
    gallery, probe = face_gallery
    out = tmp_path / "faces"
    code = main(
        ["attack", str(probe), "--model", "dlib_resnet_v1", "--gallery", str(gallery), "--targeted", "--out", str(out), "--quiet"]
    )
    assert code == 0
    with (out / "metrics.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["clean_label"] == "0"  # astronaut is the first identity (sorted) and is recognised
    assert row["success"] == "True" and row["adv_label"] == row["target_label"] != "0"
    assert float(row["psnr"]) > 35
    chip = load_rgb(out / "astronaut.png").pixels
    assert chip.shape == (150, 150, 3)
    # the saved chip, read back, is still matched to the target identity
    net = models.load("dlib_resnet_v1")
    g = models.freeze(faces.gallery_from_folder(net, models.spec("dlib_resnet_v1"), gallery))
    with torch.no_grad():
        assert g(to_tensor(chip)[None]).argmax(1).item() == int(row["target_label"])


def test_embedding_model_without_gallery_is_a_one_line_error(face_gallery, tmp_path, capsys):
    _, probe = face_gallery
    assert main(["attack", str(probe), "--model", "dlib_resnet_v1", "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "--gallery")


def test_attack_inputs_use_the_one_preprocessing_and_face_cut(tmp_path):
    photo = _write(tmp_path / "astronaut.png", skimage.data.astronaut())
    pixels = load_rgb(photo).pixels
    for name in ("dlib_resnet_v1", "inception_resnet_v1_vggface2"):
        spec = models.spec(name)
        (item,) = attack_cli.load_items([photo], spec)
        assert isinstance(item, attack_cli.InputImage) and item.name == "astronaut" and item.note is None
        assert torch.equal(item.tensor, faces.cut_faces(pixels, spec, where=str(photo)).faces[0])
        assert item.tensor.shape == (3, spec.input_size, spec.input_size)
    spec = models.spec("efficientnet_lite0")
    (item,) = attack_cli.load_items([photo], spec)
    assert torch.equal(item.tensor, data.prepare_image(pixels, spec))
