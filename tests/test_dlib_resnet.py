"""dlib's face descriptor network read from its .dat file, against real dlib outputs."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from mnd.errors import ModelUnavailableError
from mnd.models.dlib_resnet import (
    MODEL_SIZE,
    ChipDetails,
    DlibModelFormatError,
    DlibResNet,
    default_model_path,
    dlib_resnet_v1,
    extract_chip,
    face_chip,
    face_chip_details,
    pyramid_down2,
    read_dlib_model,
    similarity_transform,
)
from tests.conftest import FIXTURES, needs_fixtures

TOLERANCE = 1e-5  # spec section 6: separates correct from incorrect loaders


pytestmark = pytest.mark.usefixtures("one_thread")


def _entries() -> list[dict]:
    if not (FIXTURES / "fixtures.json").exists():
        return []
    return json.loads((FIXTURES / "fixtures.json").read_text())["entries"]


def _chip(entry: dict) -> np.ndarray:
    return np.array(Image.open(FIXTURES / entry["chip_png"]).convert("RGB"))


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float().div(255.0)


def _source_photo(entry_id: str) -> np.ndarray:
    """The photos fixtures.json says the real-photo chips were cut from."""
    grace = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    photos = {
        "astronaut": skimage.data.astronaut(),
        "astronaut_fliplr": skimage.data.astronaut()[:, ::-1],
        "grace_hopper": np.asarray(grace),
        "grace_hopper_rot15": np.asarray(grace.rotate(15, resample=Image.BILINEAR, expand=True)),
    }
    return np.ascontiguousarray(photos[entry_id.rsplit("_", 1)[0]])


PHOTO_IDS = [e["id"] for e in _entries() if "landmarks_5pt_xy" in e]
ALL_IDS = [e["id"] for e in _entries()]


@pytest.fixture(scope="module")
def net() -> DlibResNet:
    return dlib_resnet_v1()


@pytest.fixture(scope="module")
def entries() -> dict[str, dict]:
    return {e["id"]: e for e in _entries()}


@needs_fixtures
def test_batched_descriptors_match_dlib(net: DlibResNet, entries: dict[str, dict]) -> None:
    chips = torch.stack([_to_tensor(_chip(e)) for e in entries.values()])
    reference = np.stack([np.load(FIXTURES / e["descriptor_npy"]) for e in entries.values()])
    with torch.no_grad():
        got = net(chips).numpy()
    assert got.shape == (len(entries), 128)
    errors = np.abs(got - reference).max(axis=1)
    assert errors.max() <= TOLERANCE, dict(zip(entries, errors))


@needs_fixtures
@pytest.mark.parametrize("entry_id", ALL_IDS)
def test_single_descriptor_matches_dlib(net: DlibResNet, entries: dict[str, dict], entry_id: str) -> None:
    entry = entries[entry_id]
    with torch.no_grad():
        got = net(_to_tensor(_chip(entry))[None])[0].numpy()
    assert np.abs(got - np.load(FIXTURES / entry["descriptor_npy"])).max() <= TOLERANCE


def test_parameters_and_input_layer_read_from_file(net: DlibResNet) -> None:
    weights = read_dlib_model()
    assert sum(p.numel() for p in net.parameters()) == 5_614_592  # spec: all float32 parameters
    assert weights.input_mean == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert weights.distance_threshold == pytest.approx(0.6) and weights.margin == pytest.approx(0.04)
    assert net.distance_threshold == pytest.approx(0.6)
    assert read_dlib_model() is weights  # parsed once per process


def test_gradient_reaches_the_image(net: DlibResNet) -> None:
    x = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(0), requires_grad=True)
    net(x).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters() if not p.requires_grad)


def test_rejects_wrong_chip_size(net: DlibResNet) -> None:
    with pytest.raises(ValueError, match="150"):
        net(torch.zeros(1, 3, 160, 160))


# --- the parser on damaged copies ----------------------------------------------


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return default_model_path().read_bytes()


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "damaged.dat"
    path.write_bytes(data)
    return path


def test_installed_file_has_the_spec_size(model_bytes: bytes) -> None:
    assert len(model_bytes) == MODEL_SIZE


@pytest.mark.parametrize("keep", [0, 5, 1000, MODEL_SIZE // 2, MODEL_SIZE - 1])
def test_truncated_file_fails_with_offset(tmp_path: Path, model_bytes: bytes, keep: int) -> None:
    path = _write(tmp_path, model_bytes[:keep])
    with pytest.raises(DlibModelFormatError, match=r"damaged\.dat: byte \d+: file ends") as info:
        read_dlib_model(path, verify=False)
    offset = int(str(info.value).split("byte ")[1].split(":")[0])
    assert offset <= keep


def test_altered_record_name_fails_at_its_offset(tmp_path: Path, model_bytes: bytes) -> None:
    at = model_bytes.find(b"affine_")  # preceded by its 2-byte length: 01 07
    path = _write(tmp_path, model_bytes[:at] + b"affinX_" + model_bytes[at + 7 :])
    with pytest.raises(DlibModelFormatError, match=rf"byte {at - 2}: kind of layer 1 \(affine\).*affinX_"):
        read_dlib_model(path, verify=False)


def test_wrong_tensor_size_fails(tmp_path: Path, model_bytes: bytes) -> None:
    # The stem conv's params tensor: (32*3*7*7 + 32, 1, 1, 1) = (4736, 1, 1, 1), encoded 02 80 12.
    at = model_bytes.find(b"con_4") + 5
    assert model_bytes[at : at + 5] == bytes([0x01, 0x02, 0x02, 0x80, 0x12])
    damaged = model_bytes[: at + 2] + bytes([0x02, 0x81, 0x12]) + model_bytes[at + 5 :]
    with pytest.raises(DlibModelFormatError, match=rf"byte {at}: params of layer 0 \(con\) has shape \(4737, "):
        read_dlib_model(_write(tmp_path, damaged), verify=False)


def test_trailing_bytes_fail(tmp_path: Path, model_bytes: bytes) -> None:
    path = _write(tmp_path, model_bytes + b"\x00\x01")
    with pytest.raises(DlibModelFormatError, match=rf"byte {MODEL_SIZE}: 2 unexpected trailing bytes"):
        read_dlib_model(path, verify=False)


def test_checksum_mismatch_is_an_error_unless_verify_false(tmp_path: Path, model_bytes: bytes) -> None:
    at = model_bytes.find(b"con_4") + 5 + 11  # start of the stem conv's float data
    flipped = bytearray(model_bytes)
    flipped[at + 100] ^= 0x01  # one weight changes: the file still parses
    path = _write(tmp_path, bytes(flipped))
    with pytest.raises(DlibModelFormatError, match="SHA-256 .* differs"):
        read_dlib_model(path)
    assert read_dlib_model(path, verify=False).path == path.resolve()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="not found"):
        read_dlib_model(tmp_path / "absent.dat")


# --- face chips ------------------------------------------------------------------


def test_similarity_transform_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 150, size=(5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    m = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    got_m, got_t = similarity_transform(source, source @ m.T + shift)
    np.testing.assert_allclose(got_m, m, atol=1e-12)
    np.testing.assert_allclose(got_t, shift, atol=1e-10)
    two_m, _ = similarity_transform(source[:2], source[:2] @ m.T + shift)  # rank-deficient: no reflection
    np.testing.assert_allclose(two_m, m, atol=1e-10)


@needs_fixtures
@pytest.mark.parametrize("entry_id", PHOTO_IDS)
def test_chip_extraction_reproduces_dlib(net: DlibResNet, entries: dict[str, dict], entry_id: str) -> None:
    entry = entries[entry_id]
    photo = _source_photo(entry_id)
    assert list(photo.shape) == entry["source_image_shape"]
    details = face_chip_details(entry["landmarks_5pt_xy"])
    np.testing.assert_allclose(details.rect, entry["chip_details"]["rect_ltrb"], atol=1e-9)
    assert details.angle == pytest.approx(entry["chip_details"]["angle_rad"], abs=1e-12)
    chip = face_chip(_to_tensor(photo), entry["landmarks_5pt_xy"], quantize=True)
    pixels = chip.double().mul(255).round().permute(1, 2, 0).numpy().astype(int)
    assert np.abs(pixels - _chip(entry).astype(int)).max() == 0  # bit-exact
    with torch.no_grad():
        descriptor = net(chip[None])[0].numpy()
    assert np.abs(descriptor - np.load(FIXTURES / entry["descriptor_npy"])).max() <= TOLERANCE


@needs_fixtures
def test_continuous_chip_is_close_and_differentiable(entries: dict[str, dict]) -> None:
    entry = entries["grace_hopper_0"]
    photo = _to_tensor(_source_photo("grace_hopper_0")).requires_grad_(True)
    chip = face_chip(photo, entry["landmarks_5pt_xy"], quantize=False)
    difference = chip.detach().double() * 255 - torch.from_numpy(_chip(entry)).permute(2, 0, 1).double()
    assert 0 <= difference.min() and difference.max() < 1.0001  # dlib truncates to integers
    chip.sum().backward()
    assert photo.grad is not None and photo.grad.abs().sum() > 0


@needs_fixtures
def test_pyramid_path_on_an_upscaled_photo(net: DlibResNet, entries: dict[str, dict]) -> None:
    # The face is ~466 px wide at 2x: dlib first reduces with pyramid_down<2>. No dlib fixture
    # covers this path, so check that the chip stays the same face as the reference.
    entry = entries["grace_hopper_0"]
    grace = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    big = np.asarray(grace.resize((grace.width * 2, grace.height * 2), Image.BICUBIC))
    landmarks = np.asarray(entry["landmarks_5pt_xy"], dtype=float) * 2 + 0.5
    chip = face_chip(_to_tensor(big), landmarks, quantize=True)
    reference = torch.from_numpy(_chip(entry)).permute(2, 0, 1).float()
    assert (chip * 255 - reference).abs().mean() < 8
    with torch.no_grad():
        distance = np.linalg.norm(net(chip[None])[0].numpy() - np.load(FIXTURES / entry["descriptor_npy"]))
    assert distance < 0.15


def test_pyramid_down2_filter_alignment_and_truncation() -> None:
    image = torch.zeros(3, 21, 24, dtype=torch.float64)
    image[:, 6, 8] = 255.0  # output (r, c) is centred on source (2r + 2, 2c + 2)
    exact, smooth = pyramid_down2(image, quantize=True), pyramid_down2(image, quantize=False)
    assert exact.shape == smooth.shape == (3, 9, 10)  # ((21 - 3) // 2, (24 - 3) // 2)
    taps = {-2: 1, -1: 4, 0: 6, 1: 4, 2: 1}
    for r, c in [(2, 3), (2, 2), (1, 3), (3, 4)]:
        expected = 255.0 * taps.get(6 - (2 * r + 2), 0) * taps.get(8 - (2 * c + 2), 0) / 256
        assert smooth[0, r, c] == pytest.approx(expected) and exact[0, r, c] == np.floor(expected)
    assert exact.sum() < smooth.sum()


def test_chip_outside_the_photo_is_black() -> None:
    photo = torch.full((3, 100, 100), 0.5)
    details = ChipDetails((500.0, 500.0, 649.0, 649.0), 0.1)
    assert extract_chip(photo, details).abs().max() == 0
