"""The paper's face recogniser: facenet-pytorch's InceptionResnetV1 trained on VGGFace2.

Section IV-C of the paper identifies MTCNN face crops (160x160, see
:func:`mnd.data.faces.cut_faces`) with InceptionResnetV1 trained on VGGFace2
(8631 identities). :func:`inception_resnet_v1_vggface2` builds it with the
project contract (RGB in [0, 1], facenet-pytorch's fixed standardization
inside the module, :class:`mnd.models.nets.Normalized`); with ``classify=False`` it
is the 512-D embedding network, which :class:`mnd.models.gallery.Gallery` turns into
logits over enrolled identities.

facenet-pytorch is an optional dependency (installed with ``--no-deps``, see
``requirements-nodeps.txt``): it is imported when a network is built, so the
registry and everything else import without it.
"""

from __future__ import annotations

from torch import nn

from mnd.errors import ModelUnavailableError
from mnd.models import weights
from mnd.models.nets import Normalized

VGGFACE2_CLASSES = 8631
FACENET_SIZE = 160
"""Side of the square face crop InceptionResnetV1 takes."""

FIXED_STANDARDIZATION = {"mean": (127.5, 127.5, 127.5), "std": (128.0, 128.0, 128.0), "scale": 255.0}
"""facenet-pytorch's ``fixed_image_standardization``: ``(255 x - 127.5) / 128`` for x in [0, 1]."""


def fixed_standardization(net: nn.Module) -> Normalized:
    """``net`` behind facenet-pytorch's input convention: ``net((255 x - 127.5) / 128)`` for x in [0, 1]."""
    return Normalized(net, **FIXED_STANDARDIZATION)  # type: ignore[arg-type]


def inception_resnet_v1_vggface2(*, pretrained: bool = True, classify: bool = True) -> nn.Module:
    """facenet-pytorch's InceptionResnetV1 trained on VGGFace2, inputs (N, 3, 160, 160) in [0, 1].

    Called with no argument it is the registry's builder of
    ``inception_resnet_v1_vggface2`` (the paper's recogniser).

    Args:
        pretrained: load the VGGFace2 weights (``20180402-114759-vggface2.pt``,
            fetched once into torch hub's checkpoints folder,
            :func:`mnd.models.weights.vggface2_state`); ``False`` keeps random weights (tests).
        classify: logits over the 8631 VGGFace2 training identities (the
            paper's recogniser); ``False`` gives L2-normalized 512-D embeddings.

    Returns:
        eval-mode module with the fixed standardization inside.

    Raises:
        ModelUnavailableError: weights not cached and not downloadable.
        ImportError: facenet-pytorch is not installed.
    """
    from facenet_pytorch import InceptionResnetV1  # optional dependency (module docstring)

    net = InceptionResnetV1(classify=classify, num_classes=VGGFACE2_CLASSES if classify else None)
    if pretrained:
        state = weights.vggface2_state()
        if not classify:
            state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelUnavailableError(f"{weights.VGGFACE2_FILENAME} does not fit InceptionResnetV1: {exc}") from exc
    return fixed_standardization(net).eval()
