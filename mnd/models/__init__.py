"""Models: weight files, network builders, the registry, and the gallery that turns a face embedder into a classifier.

- :mod:`~mnd.models.weights`: download, cache and offline checks of weight files.
- :mod:`~mnd.models.nets`: the network contract (RGB in [0, 1], logits out): :class:`~mnd.models.nets.Normalized`, :func:`~mnd.models.nets.freeze`.
- :mod:`~mnd.models.dlib_resnet`, :mod:`~mnd.models.facenet`: the face networks.
- :mod:`~mnd.models.registry`: every model by name (:func:`load`, :func:`spec`, :func:`available`).
- :mod:`~mnd.models.gallery`: logits over enrolled identities.

Imports only :mod:`mnd.errors` and :mod:`mnd.core`. The names below are re-exported from the registry and nets.
"""

from mnd.models.nets import (
    Ensemble,
    freeze,
    Normalized,
)
from mnd.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    REGISTRY,
    available,
    efficientnet_lite0,
    FaceCrop,
    load,
    members,
    ModelSpec,
    register,
    spec,
    vgg19_imagenet,
)

__all__ = [
    "Ensemble",
    "FaceCrop",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelSpec",
    "Normalized",
    "REGISTRY",
    "available",
    "efficientnet_lite0",
    "freeze",
    "load",
    "members",
    "register",
    "spec",
    "vgg19_imagenet",
]
