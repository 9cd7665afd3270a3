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
