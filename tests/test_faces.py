"""MTCNN crops, dlib-style chips, the one face-cut choice, the facenet wrapper and the identity gallery."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

import mnd.models
from mnd.data.faces import FaceCrops, cut_faces, dlib_face_chips, gallery_from_folder, mtcnn_crops
from mnd.errors import InputError, ModelUnavailableError
from mnd.models.dlib_resnet import DlibResNet, dlib_resnet_v1
from mnd.models.facenet import inception_resnet_v1_vggface2
from mnd.models.gallery import Gallery
from mnd.models.nets import Normalized
from mnd.models.weights import vggface2_weights_cached
from tests.conftest import FIXTURES, needs_fixtures

pytestmark = pytest.mark.usefixtures("one_thread")


def _astronaut() -> np.ndarray:
    return skimage.data.astronaut()


def _grace_hopper() -> np.ndarray:
    return np.array(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))


def _cameraman() -> np.ndarray:
    return np.repeat(skimage.data.camera()[..., None], 3, axis=2)


PHOTOS = {"astronaut": _astronaut, "cameraman": _cameraman, "grace_hopper": _grace_hopper}
DLIB = mnd.models.spec("dlib_resnet_v1")
# Face centres (x, y) read off the photos.
CENTRES = {"astronaut": (224, 117), "grace_hopper": (265, 230), "cameraman": (227, 156)}


def _shifted(pixels: np.ndarray, dy: int, dx: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    return np.ascontiguousarray(pixels[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)])


def _enrolment_variants(pixels: np.ndarray) -> list[np.ndarray]:
    """Photos other than the query: the mirror image and a shifted crop."""
    return [np.ascontiguousarray(pixels[:, ::-1]), _shifted(pixels, 15, -10)]


# --- MTCNN ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper", "cameraman"])
def test_mtcnn_finds_the_face(name: str) -> None:
    crops = mtcnn_crops(PHOTOS[name](), where=f"{name}.png")
    assert isinstance(crops, FaceCrops) and len(crops) == 1
    assert crops.faces.shape == (1, 3, 160, 160) and crops.faces.dtype == torch.float32
    assert crops.boxes.shape == (1, 4) and crops.probs.shape == (1,) and crops.landmarks.shape == (1, 5, 2)
    x1, y1, x2, y2 = crops.boxes[0].tolist()
    cx, cy = CENTRES[name]
    assert abs((x1 + x2) / 2 - cx) < 15 and abs((y1 + y2) / 2 - cy) < 15
    assert crops.probs[0] > 0.99


def test_crops_are_facenet_extract_face_in_unit_range() -> None:
    from facenet_pytorch import MTCNN

    pixels = _astronaut()
    crops = mtcnn_crops(Image.fromarray(pixels))  # PIL input, same as arrays
    reference = MTCNN(keep_all=True, post_process=False)(Image.fromarray(pixels))
    assert torch.equal(crops.faces, reference / 255.0)  # not prewhitened, not standardized
    assert 0 <= crops.faces.min() and crops.faces.max() <= 1


def test_all_faces_are_returned_largest_first() -> None:
    grace = np.asarray(Image.fromarray(_grace_hopper()).resize((256, 300)))
    astronaut = _astronaut()
    canvas = np.zeros((512, 768, 3), dtype=np.uint8)
    canvas[:, :512] = astronaut
    canvas[:300, 512:] = grace
    crops = mtcnn_crops(canvas)
    assert len(crops) == 2
    areas = (crops.boxes[:, 2] - crops.boxes[:, 0]) * (crops.boxes[:, 3] - crops.boxes[:, 1])
    assert areas[0] >= areas[1]
    assert sorted(((crops.boxes[:, 0] + crops.boxes[:, 2]) / 2 > 512).tolist()) == [False, True]


@pytest.mark.parametrize(
    "pixels",
    [skimage.data.coffee(), np.full((240, 320, 3), 128, np.uint8), np.zeros((10, 10, 3), np.uint8)],
    ids=["coffee", "flat-gray", "tiny"],
)
def test_no_face_is_an_input_error(pixels: np.ndarray) -> None:
    with pytest.raises(InputError, match=r"^photo\.jpg: no face found"):
        mtcnn_crops(pixels, where="photo.jpg")


def test_bad_pixels_are_input_errors() -> None:
    with pytest.raises(InputError, match="uint8"):
        mtcnn_crops(np.zeros((64, 64, 3), np.float32), where="x.npy")
    with pytest.raises(InputError, match="shape"):
        mtcnn_crops(np.zeros((64, 64, 2), np.uint8), where="x.npy")


# --- the one choice: cut_faces follows the model's spec ----------------------------------


def test_each_face_model_names_its_cut() -> None:
    assert {name: s.face_crop for name, s in mnd.models.REGISTRY.items() if s.task == "faces"} == {
        "dlib_resnet_v1": "dlib_chip", "inception_resnet_v1_vggface2": "mtcnn"}
    assert all(s.face_crop is None for s in mnd.models.REGISTRY.values() if s.task == "imagenet")


def test_cut_faces_gives_dlib_chips_or_mtcnn_crops_of_the_input_size() -> None:
    pixels = _astronaut()
    chips = cut_faces(pixels, DLIB, where="a.png")
    assert chips.faces.shape == (1, 3, 150, 150)
    assert torch.equal(chips.faces, dlib_face_chips(pixels, where="a.png").faces)
    facenet = mnd.models.spec("inception_resnet_v1_vggface2")
    crops = cut_faces(pixels, facenet, where="a.png")
    assert crops.faces.shape == (1, 3, 160, 160)
    assert torch.equal(crops.faces, mtcnn_crops(pixels, size=160, where="a.png").faces)
    # a classifier given faces anyway gets MTCNN crops of its own input size
    other = cut_faces(pixels, mnd.models.spec("efficientnet_lite0"), where="a.png")
    assert other.faces.shape == (1, 3, 224, 224)
    with pytest.raises(InputError, match=r"^photo\.jpg: no face found"):
        cut_faces(skimage.data.coffee(), DLIB, where="photo.jpg")


# --- dlib chips from MTCNN eyes ---------------------------------------------------


@pytest.fixture(scope="module")
def dlib_net() -> DlibResNet:
    return dlib_resnet_v1()


@needs_fixtures
@pytest.mark.parametrize("entry_id", ["astronaut_0", "grace_hopper_0"])
def test_dlib_chips_from_mtcnn_match_dlib_descriptors(dlib_net: DlibResNet, entry_id: str) -> None:
    entry = {e["id"]: e for e in json.loads((FIXTURES / "fixtures.json").read_text())["entries"]}[entry_id]
    chips = dlib_face_chips(PHOTOS[entry_id[:-2]]())
    assert chips.faces.shape == (1, 3, 150, 150)
    with torch.no_grad():
        descriptor = dlib_net(chips.faces)[0].numpy()
    # dlib's own pipeline (its detector + landmarks) gives the reference; eye-based
    # alignment lands within 0.08-0.17 of it, well under the 0.6 same-person threshold.
    assert np.linalg.norm(descriptor - np.load(FIXTURES / entry["descriptor_npy"])) < 0.25


# --- gallery on dlib's descriptor ---------------------------------------------------


@pytest.fixture(scope="module")
def dlib_gallery(tmp_path_factory: pytest.TempPathFactory, dlib_net: DlibResNet) -> Gallery:
    root = tmp_path_factory.mktemp("gallery")
    for name, load in PHOTOS.items():
        (root / name).mkdir()
        for i, pixels in enumerate(_enrolment_variants(load())):
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / ".hidden").mkdir()
    return gallery_from_folder(dlib_net, DLIB, root)


@pytest.fixture(scope="module")
def query_chips() -> dict[str, torch.Tensor]:
    return {name: dlib_face_chips(load(), where=name).faces for name, load in PHOTOS.items()}


def test_gallery_names_each_enrolled_face(dlib_gallery: Gallery, query_chips: dict[str, torch.Tensor]) -> None:
    assert dlib_gallery.identities == ["astronaut", "cameraman", "grace_hopper"]
    batch = torch.cat([query_chips[n] for n in dlib_gallery.identities])
    with torch.no_grad():
        logits = dlib_gallery(batch)
    assert logits.shape == (3, 3)
    assert logits.argmax(dim=1).tolist() == [0, 1, 2]
    assert logits.max() <= dlib_gallery.scale + 1e-4  # scaled cosine


def test_gallery_verify_uses_dlibs_threshold(dlib_gallery: Gallery, query_chips: dict[str, torch.Tensor]) -> None:
    assert dlib_gallery.threshold == pytest.approx(0.6)
    for name, chips in query_chips.items():
        with torch.no_grad():
            for other in dlib_gallery.identities:
                same, distance = dlib_gallery.verify(chips, other)
                assert same.dtype == torch.bool and distance.shape == (1,)
                assert bool(same[0]) == (other == name), (name, other, float(distance[0]))


def test_euclidean_metric_is_scaled_negative_distance(dlib_gallery: Gallery,
                                                      query_chips: dict[str, torch.Tensor]) -> None:
    euclid = Gallery(dlib_gallery.embedder, metric="euclidean", scale=2.0)
    for name in dlib_gallery.identities:
        euclid._samples[name] = dlib_gallery._samples[name]
        euclid.identities.append(name)
    euclid._update()
    batch = torch.cat(list(query_chips.values()))
    with torch.no_grad():
        torch.testing.assert_close(euclid(batch), -2.0 * dlib_gallery.distances(batch))
        assert euclid(batch).argmax(dim=1).tolist() == [euclid.index(n) for n in query_chips]


def test_gallery_works_with_torchattacks(dlib_gallery: Gallery, query_chips: dict[str, torch.Tensor]) -> None:
    import torchattacks

    x = query_chips["grace_hopper"]
    label = torch.tensor([dlib_gallery.index("grace_hopper")])
    adversarial = torchattacks.FGSM(dlib_gallery, eps=4 / 255)(x, label)
    assert adversarial.shape == x.shape and (adversarial - x).abs().max() <= 4 / 255 + 1e-6
    with torch.no_grad():
        assert dlib_gallery(adversarial)[0, label] < dlib_gallery(x)[0, label]
    assert not dlib_gallery.training and not any(p.requires_grad for p in dlib_gallery.parameters())


def test_gallery_errors(tmp_path: Path) -> None:
    gallery = Gallery(DlibResNet())
    with pytest.raises(InputError, match="no identity enrolled"):
        gallery(torch.zeros(1, 3, 150, 150))
    gallery.enroll("a", torch.rand(2, 3, 150, 150))
    with pytest.raises(InputError, match="unknown identity 'b'"):
        gallery.verify(torch.zeros(1, 3, 150, 150), "b")
    with pytest.raises(InputError, match="shape"):
        gallery.enroll("c", torch.rand(3, 150, 150))
    with pytest.raises(InputError, match="gallery folder not found"):
        gallery_from_folder(DlibResNet(), DLIB, tmp_path / "absent")
    with pytest.raises(InputError, match="no identity sub-folders"):
        gallery_from_folder(DlibResNet(), DLIB, tmp_path)
    (tmp_path / "nobody").mkdir()
    with pytest.raises(InputError, match="no photos"):
        gallery_from_folder(DlibResNet(), DLIB, tmp_path)
    Image.fromarray(skimage.data.coffee()).save(tmp_path / "nobody" / "coffee.png")
    with pytest.raises(InputError, match=r"coffee\.png: no face found"):
        gallery_from_folder(DlibResNet(), DLIB, tmp_path)


def test_enrolling_more_samples_updates_the_mean() -> None:
    torch.manual_seed(0)
    gallery = Gallery(DlibResNet(), metric="euclidean")
    first, second = torch.rand(1, 3, 150, 150), torch.rand(1, 3, 150, 150)
    gallery.enroll("a", first)
    gallery.enroll("a", second)
    assert gallery.identities == ["a"]
    expected = gallery.embed_batches(torch.cat([first, second])).mean(dim=0)
    torch.testing.assert_close(gallery.means[0], expected)


# --- facenet (random weights: tests never download) -----------------------------------


def test_facenet_classifier_wrapper_standardizes_inside() -> None:
    torch.manual_seed(0)
    model = inception_resnet_v1_vggface2(pretrained=False)
    assert not model.training
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        logits = model(x)
        torch.testing.assert_close(logits, model.net((x * 255 - 127.5) / 128))
    assert logits.shape == (2, 8631)
    assert isinstance(model, Normalized) and model.scale == 255.0  # the one normalization wrapper


def test_facenet_gallery_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    embedder = inception_resnet_v1_vggface2(pretrained=False, classify=False)
    gallery = Gallery(embedder, scale=30.0)
    gallery.enroll("one", torch.rand(2, 3, 160, 160))
    gallery.enroll("two", torch.rand(1, 3, 160, 160))
    gallery.train()
    assert not gallery.training and not gallery.embedder.training
    x = torch.rand(2, 3, 160, 160, requires_grad=True)
    logits = gallery(x)
    assert logits.shape == (2, 2) and logits.abs().max() <= 30.0 + 1e-4
    assert gallery.embed_batches(x.detach()).shape == (2, 512)
    logits[:, 0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in gallery.parameters())
    with pytest.raises(InputError, match="threshold"):
        gallery.verify(x.detach(), "one")
    explicit = Gallery(embedder, threshold=0.9)
    explicit.enroll("one", torch.rand(1, 3, 160, 160))
    same, distance = explicit.verify(x.detach(), "one")
    assert same.dtype == torch.bool and distance.shape == (2,) and torch.equal(same, distance < 0.9)


# --- registry ---------------------------------------------------------------------------


def test_face_models_are_registered() -> None:
    dlib_spec = mnd.models.spec("dlib_resnet_v1")
    assert (dlib_spec.task, dlib_spec.input_size, dlib_spec.offline, dlib_spec.embedding) == ("faces", 150, True, True)
    facenet_spec = mnd.models.spec("inception_resnet_v1_vggface2")
    assert (facenet_spec.task, facenet_spec.input_size, facenet_spec.resize) == ("faces", 160, 160)
    assert (facenet_spec.offline, facenet_spec.embedding) == (False, False)
    assert mnd.models.available("dlib_resnet_v1")
    model = mnd.models.load("dlib_resnet_v1")
    assert isinstance(model, DlibResNet) and not model.training


def test_vggface2_weights_missing_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MND_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert not vggface2_weights_cached()
    assert not mnd.models.available("inception_resnet_v1_vggface2")
    with pytest.raises(ModelUnavailableError, match=r"place it at .*20180402-114759-vggface2\.pt"):
        mnd.models.load("inception_resnet_v1_vggface2")


def test_centred_cosine_measures_from_the_galleries_average_face(dlib_gallery: Gallery) -> None:
    origin = torch.stack([torch.nn.functional.normalize(dlib_gallery._samples[n], dim=1).mean(0)
                          for n in dlib_gallery.identities]).mean(0)
    torch.testing.assert_close(dlib_gallery.origin, origin)
    plain = Gallery(dlib_gallery.embedder, center=False)
    two = Gallery(dlib_gallery.embedder)
    for name in ("astronaut", "grace_hopper"):
        plain._samples[name] = two._samples[name] = dlib_gallery._samples[name]
        plain.identities.append(name)
        two.identities.append(name)
    plain._update()
    two._update()
    assert float(plain.origin.abs().max()) == 0.0  # no centring: the plain cosine
    # Two people: measured from their average, their directions are opposite, so moving away from one is
    # moving towards the other (the diagnosis of book/reading-notes.md).
    torch.testing.assert_close(two.directions[0], -two.directions[1])
    cosine = float(torch.nn.functional.normalize(plain.directions, dim=1).prod(0).sum())
    assert cosine > 0.5  # without the centring the two identities point the same way


def test_non_targeted_mnd_makes_held_out_faces_unrecognised(dlib_gallery: Gallery,
                                                            query_chips: dict[str, torch.Tensor]) -> None:
    from mnd.core.config import config_for
    from mnd.core.attack import generate

    names = dlib_gallery.identities
    x = torch.cat([query_chips[n] for n in names])
    labels = torch.tensor([dlib_gallery.index(n) for n in names])
    result = generate(dlib_gallery, x, labels, config=config_for("mnd", task="faces", max_iter=400))
    assert result.success.tolist() == [True] * len(names), result.iterations.tolist()
    with torch.no_grad():
        predicted = dlib_gallery(result.adversarial).argmax(1)
    assert (predicted != labels).all()
    levels = result.adversarial * 255
    assert (levels - levels.round()).abs().max() < 1e-3  # 8-bit images
