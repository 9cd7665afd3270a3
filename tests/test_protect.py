"""``mnd protect``: full resolution, upright, no metadata, success checked on the file read back from disk."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image, ImageCms, JpegImagePlugin, PngImagePlugin
from torch import nn

from mnd import models
from mnd.cli.main import main
from mnd.core.attack import is_adversarial
from mnd.data.imageio import load_rgb, to_tensor
from mnd.data.prepare import prepare_image
from mnd.errors import InputError
from mnd.protect import photo as protect
from tests.conftest import MeanAbove

SPEC = models.spec("efficientnet_lite0")  # its preprocessing (256, then 224); the network is replaced below


def _model_for(path: Path) -> nn.Module:
    """A model that calls the photo class 0, just: its model input's mean is 0.001 above the threshold."""
    return models.freeze(MeanAbove(float(prepare_image(load_rgb(path), SPEC).mean()) - 0.001))


@pytest.fixture
def use_model(monkeypatch: pytest.MonkeyPatch):
    """Replace efficientnet_lite0 by :class:`MeanAbove` tuned to one photo (the command's paths, none of the cost)."""

    def install(path: Path) -> nn.Module:
        model = _model_for(path)
        monkeypatch.setattr(models, "load", lambda name: model)
        return model

    return install


def _icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "TestCamera"
    exif.get_ifd(ExifTags.IFD.GPSInfo).update({ExifTags.GPS.GPSLatitudeRef: "N",
                                                ExifTags.GPS.GPSLatitude: (48.0, 51.0, 24.0)})
    return exif


def _small(photo: np.ndarray) -> np.ndarray:
    """A 240x320 part of a photo: small enough for fast tests, above the model's 224x224 input."""
    return np.ascontiguousarray(photo[30:270, 60:380])


def _sideways(upright: np.ndarray) -> np.ndarray:
    """The pixels a camera stores for EXIF orientation 6 (the viewer turns them 90 degrees clockwise)."""
    return np.ascontiguousarray(np.rot90(upright, k=1))


@pytest.fixture
def tagged_png(tmp_path: Path, photos: dict[str, np.ndarray]) -> Path:
    """Chelsea (240x320 of it) stored sideways as a PNG with EXIF (orientation 6, GPS), an ICC profile, text chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "someone")
    info.add_itxt("Description", "a private place", zip=True)
    path = tmp_path / "in" / "cat.png"
    path.parent.mkdir()
    Image.fromarray(_sideways(_small(photos["chelsea"]))).save(path, pnginfo=info, exif=_exif(6), icc_profile=_icc())
    return path


@pytest.fixture
def tagged_jpeg(tmp_path: Path, photos: dict[str, np.ndarray]) -> Path:
    """Coffee (240x320 of it) stored sideways as a JPEG (quality 95) with EXIF (orientation 6, GPS), an ICC profile."""
    path = tmp_path / "in" / "cup.jpg"
    path.parent.mkdir()
    Image.fromarray(_sideways(_small(photos["coffee"]))).save(path, quality=95, exif=_exif(6), icc_profile=_icc())
    return path


def _no_metadata(path: Path) -> None:
    data = path.read_bytes()
    with Image.open(path) as im:
        assert "exif" not in im.info and "icc_profile" not in im.info and len(im.getexif()) == 0
        assert not getattr(im, "text", {})
    for marker in (b"eXIf", b"iCCP", b"tEXt", b"iTXt", b"zTXt", b"Exif", b"ICC_PROFILE", b"TestCamera", b"private"):
        assert marker not in data, marker


def _report(out: Path) -> list[dict[str, str]]:
    import csv

    with open(out / "report.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _adversarial_on_disk(model: nn.Module, path: Path) -> bool:
    """The check done here, independently: the saved file re-read and prepared as prepare_image does."""
    with torch.no_grad():
        logits = model(prepare_image(load_rgb(path), SPEC)[None])
    return bool(is_adversarial(logits, torch.tensor([0]), targeted=False)[0])


def test_view_is_prepare_image_and_passes_gradients_to_the_whole_photo(photos):
    view = protect.ClassifierView(SPEC)
    chelsea = photos["chelsea"]
    for pixels in (chelsea, chelsea[:256, :300], np.repeat(np.repeat(chelsea, 3, 0), 3, 1)):
        seen = view(to_tensor(pixels)[None])[0]
        expected = prepare_image(pixels, SPEC)
        assert seen.shape == expected.shape == (3, 224, 224)
        assert float((seen - expected).abs().max()) <= 1e-6
    z = to_tensor(chelsea)[None].requires_grad_(True)
    view(z).sum().backward()
    reached = (z.grad.abs().sum(1) > 0)[0]
    assert reached[150, 225] and not reached[150, 5] and not reached[2, 225]  # the centre crop's pixels only
    assert float(reached.float().mean()) > 0.45  # (224 / 385) * (224 / 256) of the photo, and its border


def test_verdict_asks_for_the_saved_file_and_every_survive_transform(photos):
    x = to_tensor(photos["chelsea"])[None]
    model = models.freeze(MeanAbove(0.01))  # class 0 for the photo, class 1 for a black image
    view = protect.ClassifierView(SPEC)
    dark = lambda t: torch.zeros_like(t)  # noqa: E731 - a "transform" after which the photo is class 1
    verdict = protect.Verdict(model, view, torch.tensor([1]), targeted=False, read_back=lambda t: t, survive=[dark])
    with torch.no_grad():
        assert verdict(x).argmax(1).item() == 0  # not armed yet: the plain model (generate reads the labels)
    with torch.enable_grad():
        verdict(x)
    with torch.no_grad():
        assert verdict(x).argmax(1).item() == 1  # armed: class 1 after the transform, so not adversarial yet
    kept = protect.Verdict(model, view, torch.tensor([1]), targeted=False, read_back=lambda t: t, survive=[])
    with torch.enable_grad():
        kept(x)
    with torch.no_grad():
        assert kept(x).argmax(1).item() == 0


def test_protect_png_is_full_resolution_upright_without_metadata_and_adversarial_on_disk(tagged_png, tmp_path,
                                                                                            photos, use_model, capsys):
    model = use_model(tagged_png)
    out = tmp_path / "out"
    assert main(["protect", str(tagged_png), "--out", str(out), "--quiet"]) == 0
    saved = out / "cat.png"
    with Image.open(saved) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (320, 240)  # upright, full resolution
    _no_metadata(saved)
    pixels = load_rgb(saved).pixels
    upright = _small(photos["chelsea"])
    assert np.abs(pixels.astype(int) - upright.astype(int)).max() <= 3  # the photo, upright, barely changed
    assert not np.array_equal(pixels, upright)
    assert _adversarial_on_disk(model, saved)
    (row,) = _report(out)
    assert row["image"] == "cat.png" and row["success"] == "True" and row["width"] == "320" and row["height"] == "240"
    assert float(row["psnr"]) > 40 and row["format"] == "png" and row["survived"] == ""
    assert set(row) >= {"jpeg95", "jpeg85", "jpeg75", "resize50", "ssim", "seconds", "note"}
    screen = capsys.readouterr().out
    assert "1/1 saved photos adversarial" in screen and len(screen.splitlines()) < 25


def test_protect_jpeg_is_4_2_0_without_metadata_and_adversarial_as_decoded(tagged_jpeg, tmp_path, use_model):
    model = use_model(tagged_jpeg)
    out = tmp_path / "out"
    assert main(["protect", str(tagged_jpeg), "--out", str(out), "--format", "jpeg", "--quality", "80",
                 "--quiet"]) == 0
    saved = out / "cup.jpg"
    with Image.open(saved) as im:
        assert im.format == "JPEG" and im.size == (320, 240) and JpegImagePlugin.get_sampling(im) == 2
    _no_metadata(saved)
    assert _adversarial_on_disk(model, saved)
    (row,) = _report(out)
    assert row["success"] == "True" and row["format"] == "jpeg:80"


def test_survive_keeps_iterating_until_the_real_jpeg_is_adversarial_too(tagged_png, tmp_path, use_model):
    model = use_model(tagged_png)
    out = tmp_path / "out"
    assert main(["protect", str(tagged_png), "--out", str(out), "--survive", "jpeg:75", "--quiet"]) == 0
    (row,) = _report(out)
    assert row["success"] == row["survived"] == row["jpeg75"] == "True" and row["survive"] == "jpeg:75"
    shared = Image.open(io.BytesIO((out / "cat.png").read_bytes()))
    buffer = io.BytesIO()
    shared.convert("RGB").save(buffer, format="JPEG", quality=75, subsampling=2)
    decoded = to_tensor(np.asarray(Image.open(buffer).convert("RGB")))
    with torch.no_grad():
        logits = model(prepare_image(decoded.mul(255).round().byte().permute(1, 2, 0).numpy(), SPEC)[None])
    assert logits.argmax(1).item() == 1


def test_a_budget_too_small_exits_1_and_says_so(tagged_png, tmp_path, use_model, capsys):
    use_model(tagged_png)
    out = tmp_path / "out"
    assert main(["protect", str(tagged_png), "--out", str(out), "--max-iter", "1", "--quiet"]) == 1
    (row,) = _report(out)
    assert row["success"] == "False" and row["note"]  # why it failed
    assert "0/1 saved photos adversarial" in capsys.readouterr().out


def _refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str) -> nn.Module:
        raise AssertionError("the model was loaded before the input was validated")

    monkeypatch.setattr(models, "load", refuse)


@pytest.mark.parametrize("extra, where", [
    (["--survive", "jpeg:0"], "--survive"),
    (["--survive", "blur:3"], "--survive"),
    (["--quality", "80"], "--quality"),
    (["--format", "jpeg", "--quality", "101"], "--quality"),
    (["--strength", "maximum"], "--strength"),
    (["--max-iter", "0"], "--max-iter"),
    (["--model", "resnet_nonexistent"], "--model"),
    (["--criterion", "verify"], "--criterion"),  # face models only
    (["--device", "gpu"], "--device"),
])
def test_bad_options_are_one_line_and_status_2(tagged_png, tmp_path, capsys, monkeypatch, extra, where):
    _refuse(monkeypatch)
    assert main(["protect", str(tagged_png), "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mnd: error: {where}") and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_output_folder_equal_to_the_input_folder_is_refused(tagged_png, capsys, monkeypatch):
    _refuse(monkeypatch)
    before = sorted(os.listdir(tagged_png.parent))
    assert main(["protect", str(tagged_png.parent), "--out", str(tagged_png.parent / ".")]) == 2
    assert "the output folder is also an input folder" in capsys.readouterr().err
    assert sorted(os.listdir(tagged_png.parent)) == before


def test_a_foreign_report_csv_is_refused_untouched(tagged_png, tmp_path, capsys, monkeypatch):
    _refuse(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.csv").write_text("my,own,table\n")
    assert main(["protect", str(tagged_png), "--out", str(out)]) == 2
    assert "not a report that mnd protect wrote" in capsys.readouterr().err
    assert (out / "report.csv").read_text() == "my,own,table\n"


def test_strength_levels_are_data():
    levels = protect.load_strengths()
    assert list(levels) == ["low", "mid", "high", "max"]
    assert levels["low"].survive == () and [s.name for s in levels["high"].survive] == ["jpeg:75", "resize:0.5"]
    assert all(level.max_iter >= 1 for level in levels.values())
    assert [level.margin for level in levels.values()] == [0.0, 1.0, 2.0, 20.0]  # stronger levels need a clearer win


def test_a_bad_margin_is_refused_in_a_levels_file_and_on_the_command_line(tmp_path, capsys):
    bad = tmp_path / "levels.toml"
    bad.write_text('[x]\nmargin = -1\n')
    with pytest.raises(InputError, match=r"\[x\] margin = -1: must be a number >= 0"):
        protect.load_strengths(bad)
    assert main(["protect", str(tmp_path), "--out", str(tmp_path / "out"), "--margin", "-2"]) == 2
    assert "--margin" in capsys.readouterr().err


@pytest.mark.slow
def test_real_model_protects_an_upscaled_photo_on_disk(tmp_path, photos, effnet):
    """EfficientNet-Lite0 on chelsea enlarged 4/3 (601x400): success on the PNG read back from disk."""
    path = tmp_path / "in" / "chelsea.png"
    path.parent.mkdir()
    Image.fromarray(photos["chelsea"]).resize((601, 400), Image.Resampling.BICUBIC).save(path)
    torch.set_num_threads(1)
    row = protect.protect_photo(models.freeze(effnet), SPEC, load_rgb(path), tmp_path / "out" / "chelsea.png",
                                protect.Settings(max_iter=200))
    assert row["success"] is True and (row["width"], row["height"]) == (601, 400) and row["psnr"] > 45
    saved = load_rgb(tmp_path / "out" / "chelsea.png")
    with torch.no_grad():
        clean = effnet(prepare_image(load_rgb(path), SPEC)[None]).argmax(1).item()
        adv = effnet(prepare_image(saved, SPEC)[None]).argmax(1).item()
    assert clean == row["clean_label"] and adv != clean


def test_survive_follows_the_gradient_through_stand_ins_unless_told_not_to(photos):
    from mnd.core.eot import Expectation

    x = to_tensor(photos["chelsea"])[None]
    settings = protect.Settings(survive=(protect.parse_survive("jpeg:75"),))
    assert [(s.kind, s.value) for s in settings.standins()] == [("jpeg", 75.0)]
    assert protect.Settings(survive=settings.survive, eot=False).standins() == ()
    model = models.freeze(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
                                              torch.nn.Linear(48, 3)))
    view = protect.ClassifierView(SPEC)
    verdict = protect.Verdict(model, view, torch.tensor([1]), targeted=False, read_back=lambda t: t,
                              standins=settings.standins(), seed=4)
    expected = Expectation(model, settings.standins(), view=view, seed=4)
    with torch.enable_grad():
        torch.testing.assert_close(verdict(x), expected(x))  # the EOT average, for the gradient
        assert not torch.allclose(verdict.gradient(x), model(view(x)))
    with torch.no_grad():  # the success check: the saved file itself, never a stand-in
        torch.testing.assert_close(verdict(x), model(view(x)))
