"""mnd.data.imageio: upright 8-bit RGB in, metadata-free files out, written atomically with the umask's permissions."""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnd.core.pixels import quantize
from mnd.data.imageio import (
    atomic_open,
    check_writable_dir,
    current_umask,
    list_images,
    load_rgb,
    remove_created,
    save_png,
    to_tensor,
)
from mnd.errors import InputError

ORIENTATION = 0x0112


def _halves() -> np.ndarray:
    """32 rows x 64 columns: left half red, right half blue, plus a green corner (top left)."""
    px = np.zeros((32, 64, 3), np.uint8)
    px[:, :32] = (255, 0, 0)
    px[:, 32:] = (0, 0, 255)
    px[:8, :8] = (0, 255, 0)
    return px


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif.tobytes()


def chunk_types(path: Path) -> list[str]:
    """The chunk types of a PNG file, in order."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    data, types = data[8:], []
    while data:
        (length,) = struct.unpack(">I", data[:4])
        types.append(data[4:8].decode("ascii"))
        data = data[12 + length :]
    return types


@pytest.mark.parametrize(
    "orientation, upright",
    [
        (1, lambda px: px),
        (3, lambda px: np.rot90(px, 2)),
        (6, lambda px: np.rot90(px, -1)),  # a phone held upright: stored sideways, shown rotated clockwise
        (8, lambda px: np.rot90(px, 1)),
        (2, lambda px: px[:, ::-1]),
    ],
)
def test_exif_orientation_is_applied(tmp_path, orientation, upright):
    px = _halves()
    path = tmp_path / "photo.png"
    Image.fromarray(px).save(path, exif=_exif(orientation))
    img = load_rgb(path)
    assert np.array_equal(img.pixels, upright(px))
    assert img.note is None


def test_sideways_jpeg_comes_out_upright(tmp_path):
    path = tmp_path / "phone.jpg"
    Image.fromarray(_halves()).save(path, exif=_exif(6), quality=95)
    px = load_rgb(path).pixels.astype(int)
    assert px.shape == (64, 32, 3)
    # rotated clockwise: the stored left (red) half is on top, the green corner top right
    assert np.abs(px[12:28, :] - (255, 0, 0)).max() < 40
    assert np.abs(px[36:, :] - (0, 0, 255)).max() < 40
    assert np.abs(px[1:6, -6:-1] - (0, 255, 0)).max() < 40


def test_saved_png_carries_no_metadata(tmp_path):
    source = tmp_path / "exif.png"
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", "private")
    Image.fromarray(_halves()).save(source, exif=_exif(6), pnginfo=info)
    assert {"eXIf", "tEXt"} <= set(chunk_types(source))
    out = save_png(to_tensor(load_rgb(source).pixels), tmp_path / "out.png")
    assert set(chunk_types(out)) == {"IHDR", "IDAT", "IEND"}
    assert np.array_equal(load_rgb(out).pixels, np.rot90(_halves(), -1))
    assert out.read_bytes() == save_png(to_tensor(load_rgb(source).pixels), tmp_path / "again.png").read_bytes()


@pytest.fixture
def umask():
    """Set the process umask for one test, and restore it."""
    before = os.umask(0o022)
    os.umask(before)
    yield lambda mask: os.umask(mask)
    os.umask(before)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_files_get_the_umask_permissions(tmp_path, umask, mask, mode):
    umask(mask)
    assert current_umask() == mask
    with atomic_open(tmp_path / "a.csv", "w") as handle:
        handle.write("x\n")
    png = save_png(torch.zeros(3, 4, 4), tmp_path / "b.png")
    for path in (tmp_path / "a.csv", png):
        assert stat.S_IMODE(path.stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.png"], "no temporary file is left"


def test_replacing_a_file_keeps_its_permissions(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "metrics.csv"
    path.write_text("old\n")
    path.chmod(0o600)
    with atomic_open(path, "w") as handle:
        handle.write("new\n")
    assert path.read_text() == "new\n" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_open(path, "w") as handle:
        handle.write("half")
        raise RuntimeError("crash")
    assert path.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["metrics.csv"]


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A tiny valid PNG whose header claims ``width`` x ``height`` (CRC fixed)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_decompression_bomb_is_an_input_error_naming_the_file(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png", 50000, 50000)
    with pytest.raises(Image.DecompressionBombError):  # what Pillow alone does with it
        Image.open(bomb)
    with pytest.raises(InputError) as err:
        load_rgb(bomb)
    assert err.value.where == str(bomb)
    assert err.value.problem.startswith("image claims 2500000000 pixels")


def test_the_limit_follows_pillows_setting(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((10, 30, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # warn above 100, refuse above 200
    with pytest.raises(InputError, match="image claims 300 pixels, more than the 200 pixels Pillow decodes safely"):
        load_rgb(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # the user switched the check off
    assert load_rgb(path).note is None


def test_large_image_warning_becomes_a_note(tmp_path, monkeypatch):
    path = tmp_path / "large.png"
    Image.fromarray(np.zeros((10, 15, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = load_rgb(path)
    assert not caught, [str(w.message) for w in caught]
    assert img.note == "large image (15x10 = 150 pixels, over Pillow's warning limit of 100): decoding it takes much memory"
    assert img.pixels.shape == (10, 15, 3)


def test_check_writable_dir_creates_and_can_undo(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    top = check_writable_dir(target)
    assert top == tmp_path / "a" and target.is_dir() and not list(target.iterdir())
    remove_created(target, top)
    assert sorted(os.listdir(tmp_path)) == []
    (tmp_path / "kept").mkdir()
    assert check_writable_dir(tmp_path / "kept") is None


@pytest.mark.parametrize("make", [lambda t: t / "file" / "sub", lambda t: t / "file"], ids=["under-a-file", "a-file"])
def test_check_writable_dir_refuses_files_in_the_way(tmp_path, make):
    (tmp_path / "file").write_text("keep")
    with pytest.raises(InputError) as err:
        check_writable_dir(make(tmp_path))
    assert err.value.where == str(make(tmp_path))
    assert (tmp_path / "file").read_text() == "keep"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc on this system")
@pytest.mark.parametrize("folder, problem", [("/proc", "cannot write in"), ("/proc/mnd-test/x", "cannot create")])
def test_check_writable_dir_refuses_unwritable_places(folder, problem):
    with pytest.raises(InputError, match=problem):
        check_writable_dir(folder)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes any folder")
def test_unreadable_and_read_only_folders(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        with pytest.raises(InputError, match="cannot list this folder"):
            list_images([locked])
        locked.chmod(0o555)
        with pytest.raises(InputError, match="cannot write in the output folder"):
            check_writable_dir(locked)
    finally:
        locked.chmod(0o755)


def test_quantize_lands_on_the_8bit_grid_that_png_round_trips(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 5, 7, generator=g) * 1.4 - 0.2  # some values outside [0, 1]
    q = quantize(x)
    assert q.min() >= 0 and q.max() <= 1
    assert torch.equal(quantize(q), q)  # idempotent
    assert ((q - x.clamp(0, 1)).abs() <= 0.5 / 255 + 1e-7).all()  # the nearest level
    assert torch.equal(to_tensor(load_rgb(save_png(q, tmp_path / "q.png")).pixels), q)
