"""``mnd protect`` for faces: every face at once, at full resolution, success checked on the file re-read from disk."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import ExifTags, Image, PngImagePlugin
from torch import nn

from mnd import models
from mnd.cli.main import main
from mnd.core import losses, robustness
from mnd.core.config import config_for
from mnd.data.embedded import embedded_images
from mnd.data.faces import detect_faces, dlib_chip_details_from_eyes, gallery_from_folder, mtcnn_crops
from mnd.data.imageio import load_rgb, to_tensor
from mnd.protect import faces as pf
from mnd.models.dlib_resnet import extract_chip

pytestmark = pytest.mark.usefixtures("one_thread")

DLIB = models.spec("dlib_resnet_v1")
DLIB_THRESHOLD = 0.6  # dlib's same-person distance


def _photo(name: str) -> np.ndarray:
    return embedded_images([name])[0].pixels


def _resized(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.LANCZOS))


@pytest.fixture(scope="module")
def net() -> nn.Module:
    return models.freeze(models.load("dlib_resnet_v1"))


def _report(out: Path) -> list[dict[str, str]]:
    with open(out / "report.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@torch.no_grad()
def _distances(net: nn.Module, clean: np.ndarray, saved: np.ndarray) -> list[float]:
    """Independently of protect: each face MTCNN finds on the clean photo, cut (dlib's chip) from the clean and the
    saved pixels with that geometry, and the distance between their descriptors."""
    _, _, _, points = detect_faces(clean)
    out = []
    for eyes in points:
        details = dlib_chip_details_from_eyes(eyes[0], eyes[1])
        chips = torch.stack([extract_chip(to_tensor(p), details) for p in (clean, saved)])
        e = net(chips)
        out.append(float((e[0] - e[1]).norm()))
    return out


# --- pieces -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def astronaut_faces() -> tuple[np.ndarray, pf.Faces]:
    pixels = _resized(_photo("astronaut"), 256, 256)
    return pixels, pf.find_faces(pixels, DLIB)


def test_face_view_of_the_region_is_the_photo_chip_and_reads_only_the_footprint(astronaut_faces):
    pixels, faces = astronaut_faces
    assert len(faces) == 1
    photo = to_tensor(pixels)
    h, w = photo.shape[1:]
    view = pf.FaceView(faces.cuts, h, w)
    region = pf.Region.around(view.footprints, h, w)
    crop_view = pf.FaceView(faces.cuts, h, w, region.box.left, region.box.top)
    whole = view(photo[None])
    assert whole.shape == (1, 3, 150, 150)
    assert torch.equal(whole, crop_view(region.crop(photo)[None]))  # bit for bit
    details = faces.cuts[0].details
    assert torch.equal(whole[0], extract_chip(photo, details, quantize=False, precision=torch.float32))
    assert float((whole[0].double() - extract_chip(photo, details).double()).abs().max()) < 1e-5  # float64's chip
    z = photo[None].clone().requires_grad_(True)
    view(z).sum().backward()
    reached = z.grad.abs().sum(1)[0] > 0
    box = view.footprints[0]
    ys, xs = reached.nonzero().unbind(1)
    assert box.left <= xs.min() <= box.left + 3 and box.right - 4 <= xs.max() < box.right  # dlib's box, tight
    assert box.top <= ys.min() <= box.top + 3 and box.bottom - 4 <= ys.max() < box.bottom
    assert region.free[0, 0].sum() > (box.width * box.height) and not region.free[0, 0, 0].any()


@pytest.mark.parametrize("size", [256, 900])  # the box enlarged to 160, then shrunk
def test_mtcnn_box_cut_is_facenets_crop_and_reads_only_the_box(size):
    pixels = _resized(_photo("astronaut"), size, size)
    spec = models.spec("inception_resnet_v1_vggface2")  # its cut only: no weights are loaded
    faces = pf.find_faces(pixels, spec)
    view = pf.FaceView(faces.cuts, size, size)
    z = to_tensor(pixels)[None].requires_grad_(True)
    crops = view(z)
    assert crops.shape == (1, 3, 160, 160)
    assert float((crops.detach() - mtcnn_crops(pixels, size=160).faces).abs().max()) * 255 < 1.01  # one level
    crops.sum().backward()
    box = view.footprints[0]
    reached = z.grad.abs().sum(1)[0] > 0
    assert reached[box.top : box.bottom, box.left : box.right].all()
    reached[box.top : box.bottom, box.left : box.right] = False
    assert not reached.any()


@pytest.mark.parametrize("targeted", [False, True])
def test_the_region_loss_is_the_full_resolution_loss(astronaut_faces, targeted):
    pixels, faces = astronaut_faces
    x = to_tensor(pixels)[None]
    h, w = x.shape[-2:]
    region = pf.Region.around(pf.FaceView(faces.cuts, h, w).footprints, h, w)
    free = region.paste(torch.zeros(1, 1, h, w, dtype=torch.bool), region.free)
    g = torch.Generator().manual_seed(0)
    z = (x + 0.02 * torch.randn(x.shape, generator=g) * free).clamp(0, 1).requires_grad_(True)
    config = config_for("mnd", task="faces", targeted=targeted)
    kw = dict(deviation=config.deviation, gradient=config.gradient, reduction=config.reduction,
              l2_form=config.l2_form)
    reference = losses.CleanReference(x)
    full = losses.perceptual_loss(z, x, betas=config.betas, reference=reference, **kw)
    (full_grad,) = torch.autograd.grad(full.sum(), z)
    at_clean = float(losses.perceptual_loss(x, x, betas=config.betas, reference=reference, **kw))
    zd = region.crop(z.detach()).requires_grad_(True)
    xd = region.crop(x)
    part = losses.perceptual_loss(zd, xd, betas=region.betas(config), reference=losses.CleanReference(xd), **kw)
    (part_grad,) = torch.autograd.grad(part.sum(), zd)
    full, part = float(full.detach()), float(part.detach())
    assert region.pixel_ratio < 0.3 and abs(part + region.ssim_constant(config) - full) < 1e-4 * (full - at_clean)
    scale = float(full_grad.abs().max())
    assert float((region.crop(full_grad) - part_grad)[..., region.free[0, 0]].abs().max()) < 1e-4 * scale


def test_the_regions_jpeg_is_the_photos_jpeg_where_faces_read_it(astronaut_faces):
    pixels, faces = astronaut_faces
    x = to_tensor(pixels)
    h, w = x.shape[1:]
    view = pf.FaceView(faces.cuts, h, w)
    region = pf.Region.around(view.footprints, h, w)
    noisy = (x + 0.05 * (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) - 0.5)).clamp(0, 1)
    for quality in (95, 75):
        whole = robustness.jpeg(noisy[None], quality)
        crop = robustness.jpeg(region.crop(noisy)[None], quality)
        box = view.footprints[0]
        assert torch.equal(box.of(whole), box.shifted(region.box.left, region.box.top).of(crop))


class Fixed(nn.Module):
    def __init__(self, margins: list[list[float]]) -> None:
        super().__init__()
        self.margins = torch.tensor(margins, requires_grad=True)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.margins


def test_the_photo_is_adversarial_exactly_when_every_face_meets_the_criterion():
    cases = {(1.0, -0.5): 0, (0.2, 0.1): 1, (0.0, 2.0): 0, (3.0,): 1}
    for margins, label in cases.items():
        logits = pf.FaceJudge(Fixed([list(margins)]))(torch.zeros(1)).detach()
        assert logits.argmax(1).item() == label, margins
        assert float(logits[0, 1] - logits[0, 0]) == pytest.approx(min(margins))  # the value is the hard minimum
    judge = pf.FaceJudge(Fixed([[0.0, 0.0]]))
    judge(torch.zeros(1))[0, 1].backward()
    assert judge.margins.margins.grad.tolist() == [[0.25, 0.25]]  # a soft minimum shares the gradient: 1/2 each, /2


# --- the command line ---------------------------------------------------------------


def _tagged_sideways(path: Path, upright: np.ndarray) -> Path:
    """``upright`` stored as a camera stores EXIF orientation 6, with GPS, a camera name and PNG text."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "TestCamera"
    exif.get_ifd(ExifTags.IFD.GPSInfo).update({ExifTags.GPS.GPSLatitudeRef: "N",
                                                ExifTags.GPS.GPSLatitude: (48.0, 51.0, 24.0)})
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", "a private place")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1))).save(path, exif=exif, pnginfo=info)
    return path


@pytest.fixture(scope="module")
def verified(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One run of ``mnd protect --model dlib_resnet_v1`` (verify, no gallery) on a tagged, sideways astronaut."""
    root = tmp_path_factory.mktemp("verify")
    upright = _resized(_photo("astronaut"), 256, 256)
    photo = _tagged_sideways(root / "in" / "astronaut.png", upright)
    out = root / "out"
    status = main(["protect", str(photo), "--model", "dlib_resnet_v1", "--out", str(out), "--quiet"])
    return {"status": status, "out": out, "upright": upright}


def test_verify_succeeds_on_the_file_read_back(verified, net, capsys):
    assert verified["status"] == 0
    saved = verified["out"] / "astronaut.png"
    (row,) = _report(verified["out"])
    assert row["success"] == "True" and row["faces"] == row["faces_protected"] == "1"
    assert row["criterion"] == "verify" and float(row["psnr"]) > 40
    (distance,) = _distances(net, verified["upright"], load_rgb(saved).pixels)
    assert distance > DLIB_THRESHOLD and float(row["distances"]) == pytest.approx(distance, abs=2e-3)


def test_a_face_photo_is_saved_upright_without_metadata(verified):
    saved = verified["out"] / "astronaut.png"
    data = saved.read_bytes()
    with Image.open(saved) as im:
        assert im.size == (256, 256) and "exif" not in im.info and not getattr(im, "text", {})
    for marker in (b"eXIf", b"tEXt", b"Exif", b"TestCamera", b"private"):
        assert marker not in data
    pixels = load_rgb(saved).pixels.astype(int)
    assert np.abs(pixels - verified["upright"].astype(int)).max() <= 12  # upright (sideways would differ by ~255)


def test_identify_with_a_gallery_and_a_photo_without_a_face(tmp_path, net, capsys):
    gallery = tmp_path / "gallery"
    for name in ("astronaut", "grace_hopper"):
        (gallery / name).mkdir(parents=True)
        Image.fromarray(np.ascontiguousarray(_photo(name)[:, ::-1])).save(gallery / name / "mirrored.png")
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(_photo("astronaut")).save(inputs / "astronaut.png")  # the probe: the original
    Image.fromarray(skimage.data.coffee()[:200, :200]).save(inputs / "cup.png")  # no face
    out = tmp_path / "out"
    assert main(["protect", str(inputs), "--model", "dlib_resnet_v1", "--gallery", str(gallery), "--out", str(out),
                 "--quiet"]) == 0
    rows = {r["image"]: r for r in _report(out)}
    face, cup = rows["astronaut.png"], rows["cup.png"]
    assert face["success"] == "True" and face["criterion"] == "identify"
    assert face["clean_label"] == "astronaut" and face["adv_label"] == "grace_hopper"
    assert cup["success"] == "" and cup["faces"] == "0" and "no face found" in cup["note"]
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "report.csv"]  # nothing written for the cup
    screen = capsys.readouterr().out
    assert "1/1 faces protected" in screen and "1 photo(s) skipped" in screen
    enrolled = gallery_from_folder(net, DLIB, gallery)
    eyes = detect_faces(_photo("astronaut"))[3][0]
    details = dlib_chip_details_from_eyes(eyes[0], eyes[1])
    with torch.no_grad():
        before = enrolled(extract_chip(to_tensor(_photo("astronaut")), details)[None]).argmax(1).item()
        after = enrolled(extract_chip(to_tensor(load_rgb(out / "astronaut.png").pixels), details)[None]).argmax(1)
    assert enrolled.identities[before] == "astronaut" and enrolled.identities[after.item()] == "grace_hopper"


def _refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str) -> nn.Module:
        raise AssertionError("the model was loaded before the input was validated")

    monkeypatch.setattr(models, "load", refuse)


@pytest.mark.parametrize("extra, where", [
    (["--model", "dlib_resnet_v1", "--criterion", "identify"], "--criterion"),
    (["--model", "dlib_resnet_v1", "--targeted"], "--targeted"),
    (["--gallery", "."], "--gallery"),
    (["--criterion", "verify"], "--criterion"),
])
def test_bad_face_options_are_one_line_and_status_2(tmp_path, capsys, monkeypatch, extra, where):
    _refuse(monkeypatch)
    photo = tmp_path / "a.png"
    Image.fromarray(_resized(_photo("astronaut"), 64, 64)).save(photo)
    assert main(["protect", str(photo), "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mnd: error: {where}") and "\n" not in err
    assert not (tmp_path / "out").exists()
