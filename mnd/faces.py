"""Faces: MTCNN crops, the paper's VGGFace2 recogniser, and a gallery of enrolled identities.

The paper (section IV-C) detects and crops faces with facenet-pytorch's MTCNN
(160x160) and identifies them with its InceptionResnetV1 trained on VGGFace2
(8631 identities). Every network here follows the project contract: RGB in
[0, 1], normalization inside the wrapper.

- :func:`crop_faces`: all faces of a photo as 160x160 [0, 1] crops (no prewhitening).
- :func:`dlib_face_chips`: 150x150 chips aligned like dlib's ``get_face_chip``
  for :class:`mnd.dlib_resnet.DlibResNet`, placed from MTCNN's eye centres
  (dlib's own landmark model is not used).
- :func:`inception_resnet_v1_vggface2`: the recogniser (logits over 8631
  identities) or, with ``classify=False``, its 512-D embedding network.
- :class:`Gallery`: turns an embedding network into logits over enrolled
  identities, so attacks and torchattacks anchors apply unchanged.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mnd.errors import InputError, ModelUnavailableError

if TYPE_CHECKING:
    from mnd.dlib_resnet import ChipDetails

VGGFACE2_URL = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt"
VGGFACE2_FILENAME = "20180402-114759-vggface2.pt"
VGGFACE2_CLASSES = 8631
FACENET_SIZE = 160
MIN_FACE_SIZE = 20  # MTCNN's default smallest face, in pixels

Metric = Literal["cosine", "euclidean"]


# --- detection and crops -----------------------------------------------------


@dataclass(frozen=True)
class FaceCrops:
    """Faces found in one photo, largest first (MTCNN's order with ``select_largest``).

    Attributes:
        faces: (N, 3, S, S) crops, RGB float in [0, 1].
        boxes: (N, 4) detection boxes (x1, y1, x2, y2) in photo pixels.
        probs: (N,) MTCNN face probabilities.
        landmarks: (N, 5, 2) MTCNN points (x, y): eye on the image's left, eye
            on the image's right, nose tip, mouth corner left, mouth corner right.
    """

    faces: torch.Tensor
    boxes: torch.Tensor
    probs: torch.Tensor
    landmarks: torch.Tensor

    def __len__(self) -> int:
        return int(self.faces.shape[0])


ImageLike = np.ndarray | Image.Image


def _as_pil(image: ImageLike, where: str | Path) -> Image.Image:
    """An RGB PIL image from a PIL image or an (H, W), (H, W, 3) or (H, W, 4) uint8 array."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise InputError(where, f"expected 8-bit pixels (uint8), got an array of {image.dtype}")
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)):
            return Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
        raise InputError(where, f"expected an (H, W, 3) RGB array, got shape {image.shape}")
    raise InputError(where, f"expected a numpy array or PIL image, got {type(image).__name__}")


@functools.lru_cache(maxsize=1)
def _mtcnn() -> nn.Module:
    from facenet_pytorch import MTCNN  # its P/R/O-net weights ship in the package

    return MTCNN(keep_all=True, post_process=False, select_largest=True, min_face_size=MIN_FACE_SIZE, device="cpu")


def detect_faces(image: ImageLike, *, min_prob: float = 0.9,
                 where: str | Path = "image") -> tuple[Image.Image, np.ndarray, np.ndarray, np.ndarray]:
    """Run MTCNN on a photo.

    Args:
        image: RGB photo, (H, W, 3) uint8 array or PIL image.
        min_prob: drop detections less probable than this.
        where: the photo's name, for error messages.

    Returns:
        (the photo as RGB PIL image, boxes (N, 4), probs (N,), landmarks (N, 5, 2)),
        largest face first, N >= 1.

    Raises:
        InputError: no face (or the photo is smaller than MTCNN's 20-pixel minimum face).
    """
    pil = _as_pil(image, where)
    if min(pil.size) < MIN_FACE_SIZE:
        raise InputError(where, f"no face found: the image ({pil.width}x{pil.height}) is smaller than "
                                f"MTCNN's minimum face size of {MIN_FACE_SIZE} pixels")
    boxes, probs, points = _mtcnn().detect(pil, landmarks=True)
    if boxes is None:
        raise InputError(where, "no face found by MTCNN")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
    keep = probs >= min_prob
    if not keep.any():
        raise InputError(where, f"no face found with probability >= {min_prob} "
                                f"(best MTCNN candidate: {probs.max():.3f})")
    return pil, boxes[keep], probs[keep], points[keep]


def crop_faces(image: ImageLike, *, size: int = FACENET_SIZE, margin: int = 0, min_prob: float = 0.9,
               where: str | Path = "image") -> FaceCrops:
    """Every face in a photo as a square crop, the paper's facenet-pytorch pipeline.

    The crop is MTCNN's box (plus ``margin`` pixels of the output size),
    resized bilinearly by PIL, exactly as facenet-pytorch's ``extract_face``
    does, but returned in [0, 1] without its (x - 127.5) / 128
    standardization (that lives inside :func:`inception_resnet_v1_vggface2`).

    Args:
        image: RGB photo, (H, W, 3) uint8 array or PIL image.
        size: crop side (160 for InceptionResnetV1).
        margin: margin around the box, in pixels of the crop (facenet-pytorch's meaning).
        min_prob: drop detections less probable than this.
        where: the photo's name, for error messages.

    Raises:
        InputError: no face found.
    """
    from facenet_pytorch import extract_face

    pil, boxes, probs, points = detect_faces(image, min_prob=min_prob, where=where)
    faces = torch.stack([extract_face(pil, box, size, margin) for box in boxes]).div(255.0)
    return FaceCrops(faces.clamp(0, 1), torch.from_numpy(boxes).float(), torch.from_numpy(probs).float(),
                     torch.from_numpy(points).float())


def dlib_chip_details_from_eyes(left_eye: Sequence[float], right_eye: Sequence[float], size: int = 150,
                                padding: float = 0.25) -> ChipDetails:
    """dlib's face-chip window placed from two eye centres (image-left eye first).

    dlib fits its 5-point template (four eye corners and the base of the
    nose) to its own landmarks. MTCNN gives eye centres and a nose tip
    instead, so only the eyes are used: each eye centre is matched to the
    mean of the template's two corners of that eye. On the reference photos
    this puts the descriptor within 0.08-0.17 (Euclidean) of dlib's own
    pipeline, against 0.26-0.50 for a resized MTCNN box (book/reading-notes.md).

    Returns:
        a :class:`mnd.dlib_resnet.ChipDetails`.
    """
    from mnd.dlib_resnet import FIVE_POINT_TEMPLATE, chip_details_from_points

    template = (padding + np.asarray(FIVE_POINT_TEMPLATE)) / (2 * padding + 1) * size
    chip_eyes = np.stack([(template[2] + template[3]) / 2, (template[0] + template[1]) / 2])
    image_eyes = np.asarray([left_eye, right_eye], dtype=np.float64)
    return chip_details_from_points(chip_eyes, image_eyes, size)


def dlib_face_chips(image: ImageLike, *, min_prob: float = 0.9, quantize: bool = True,
                    where: str | Path = "image") -> FaceCrops:
    """Every face in a photo as a 150x150 chip for dlib's descriptor network.

    Faces are found by MTCNN and aligned like dlib's ``get_face_chip`` (see
    :func:`dlib_chip_details_from_eyes`), sampled by
    :func:`mnd.dlib_resnet.extract_chip`.

    Args:
        image: RGB photo, (H, W, 3) uint8 array or PIL image.
        min_prob: drop detections less probable than this.
        quantize: emulate dlib's 8-bit sampling (True) or stay continuous.
        where: the photo's name, for error messages.

    Raises:
        InputError: no face found.
    """
    from mnd.dlib_resnet import CHIP_SIZE, extract_chip

    pil, boxes, probs, points = detect_faces(image, min_prob=min_prob, where=where)
    photo = torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255.0)
    chips = [extract_chip(photo, dlib_chip_details_from_eyes(p[0], p[1], CHIP_SIZE), quantize=quantize)
             for p in points]
    return FaceCrops(torch.stack(chips), torch.from_numpy(boxes).float(), torch.from_numpy(probs).float(),
                     torch.from_numpy(points).float())


# --- the paper's recogniser ----------------------------------------------------


class FixedStandardization(nn.Module):
    """facenet-pytorch's input convention inside the model: ``net((255 x - 127.5) / 128)`` for x in [0, 1]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x * 255.0 - 127.5) / 128.0)


def vggface2_checkpoint_paths() -> tuple[Path, Path]:
    """(where ``mnd`` caches the VGGFace2 weights, where facenet-pytorch itself caches them)."""
    hub = Path(torch.hub.get_dir()) / "checkpoints" / VGGFACE2_FILENAME
    cache = os.getenv("XDG_CACHE_HOME", "~/.cache")
    torch_home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))  # facenet's rule
    return hub, Path(torch_home) / "checkpoints" / VGGFACE2_FILENAME


def vggface2_weights_cached() -> bool:
    """True when the VGGFace2 checkpoint is on this machine (no download needed)."""
    return any(p.exists() for p in vggface2_checkpoint_paths())


def _vggface2_state() -> dict[str, torch.Tensor]:
    hub, legacy = vggface2_checkpoint_paths()
    if not hub.exists() and legacy.exists():
        return torch.load(legacy, map_location="cpu", weights_only=True)
    from mnd.models import hub_checkpoint

    return hub_checkpoint(VGGFACE2_URL, VGGFACE2_FILENAME)


def inception_resnet_v1_vggface2(*, pretrained: bool = True, classify: bool = True) -> nn.Module:
    """facenet-pytorch's InceptionResnetV1 trained on VGGFace2, inputs (N, 3, 160, 160) in [0, 1].

    Args:
        pretrained: load the VGGFace2 weights (``20180402-114759-vggface2.pt``,
            fetched once into torch hub's checkpoints folder); ``False`` keeps
            random weights (tests).
        classify: logits over the 8631 VGGFace2 training identities (the
            paper's recogniser); ``False`` gives L2-normalized 512-D embeddings.

    Returns:
        eval-mode module with the fixed standardization inside.

    Raises:
        ModelUnavailableError: weights not cached and not downloadable.
    """
    from facenet_pytorch import InceptionResnetV1

    net = InceptionResnetV1(classify=classify, num_classes=VGGFACE2_CLASSES if classify else None)
    if pretrained:
        state = _vggface2_state()
        if not classify:
            state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelUnavailableError(f"{VGGFACE2_FILENAME} does not fit InceptionResnetV1: {exc}") from exc
    return FixedStandardization(net).eval()


def _inception_resnet_v1_vggface2() -> nn.Module:
    """Registry builder: the paper's recogniser, logits over 8631 identities."""
    return inception_resnet_v1_vggface2(pretrained=True, classify=True)


# --- gallery -------------------------------------------------------------------


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class Gallery(nn.Module):
    """Logits over enrolled identities from an embedding network.

    ``forward(x)`` returns (N, K) logits, one per enrolled identity, so any
    attack written for a classifier (ours, torchattacks) applies unchanged;
    the label of identity ``name`` is ``gallery.index(name)``.

    Logits (``metric``):
        - ``"cosine"`` (default): ``scale * cos(e(x), c_k)`` where ``c_k`` is the
          L2-normalized mean of the identity's L2-normalized embeddings. The
          scale (default 10) sets how peaked the softmax is: cosines lie in
          [-1, 1], so with 10 a 0.3 cosine gap is a 3-logit margin (cf. the
          scale 30-64 of CosFace/ArcFace training, which is sharper).
        - ``"euclidean"``: ``-scale * ||e(x) - m_k||`` with ``m_k`` the mean raw
          embedding: dlib's own criterion, same person when below 0.6.

    :meth:`verify` always answers with the Euclidean distance to the mean raw
    embedding and the model's threshold: ``threshold`` if given, else the
    embedder's ``distance_threshold`` attribute (0.6 for dlib's network).

    The embedder is frozen and kept in eval mode (``train()`` does not change it).

    Args:
        embedder: (N, 3, H, W) in [0, 1] -> (N, D) embeddings.
        metric: how logits are computed (above).
        scale: logit scale.
        threshold: verification distance threshold (default: the model's).
    """

    def __init__(self, embedder: nn.Module, *, metric: Metric = "cosine", scale: float = 10.0,
                 threshold: float | None = None) -> None:
        super().__init__()
        if metric not in ("cosine", "euclidean"):
            raise InputError("--metric", f"unknown gallery metric {metric!r}; use 'cosine' or 'euclidean'")
        if not scale > 0:
            raise InputError("--scale", f"gallery logit scale must be positive, got {scale}")
        self.embedder = _freeze(embedder)
        self.metric: Metric = metric
        self.scale = float(scale)
        default = getattr(embedder, "distance_threshold", None)
        self.threshold = float(threshold) if threshold is not None else (float(default) if default else None)
        self.identities: list[str] = []
        self._samples: dict[str, torch.Tensor] = {}
        self.register_buffer("means", torch.zeros(0, 0))
        self.register_buffer("directions", torch.zeros(0, 0))

    def train(self, mode: bool = True) -> Gallery:
        """No-op: a gallery and its embedder always stay in eval mode."""
        super().train(False)
        return self

    def _device(self) -> torch.device:
        for p in self.embedder.parameters():
            return p.device
        return self.means.device

    @torch.no_grad()
    def embed_batches(self, chips: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Embeddings of (N, 3, H, W) chips, without gradients, on the embedder's device."""
        device = self._device()
        parts = [self.embedder(chips[i : i + batch_size].to(device)) for i in range(0, len(chips), batch_size)]
        return torch.cat(parts).float()

    def enroll(self, name: str, chips: torch.Tensor) -> None:
        """Add face chips of identity ``name`` (new, or more samples of an enrolled one).

        Args:
            name: identity label.
            chips: (N, 3, H, W) in [0, 1], the size the embedder expects.
        """
        if not isinstance(name, str) or not name:
            raise InputError("gallery", f"identity names must be non-empty strings, got {name!r}")
        if chips.dim() != 4 or chips.shape[0] == 0 or chips.shape[1] != 3:
            raise InputError(name, f"expected (N >= 1, 3, H, W) face chips, got shape {tuple(chips.shape)}")
        embeddings = self.embed_batches(chips)
        if name in self._samples:
            embeddings = torch.cat([self._samples[name], embeddings])
        else:
            self.identities.append(name)
        self._samples[name] = embeddings
        self._update()

    def _update(self) -> None:
        device = self._device()
        samples = [self._samples[n] for n in self.identities]
        self.means = torch.stack([s.mean(dim=0) for s in samples]).to(device)
        self.directions = F.normalize(torch.stack([F.normalize(s, dim=1).mean(dim=0) for s in samples]),
                                      dim=1).to(device)

    def index(self, name: str) -> int:
        """The class label of identity ``name``."""
        try:
            return self.identities.index(name)
        except ValueError:
            raise InputError("gallery", f"unknown identity {name!r}; enrolled: {', '.join(self.identities)}") from None

    def _check_ready(self) -> None:
        if not self.identities:
            raise InputError("gallery", "no identity enrolled")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, K) logits over the enrolled identities."""
        self._check_ready()
        e = self.embedder(x)
        if self.metric == "cosine":
            return self.scale * F.normalize(e, dim=1) @ self.directions.to(e.dtype).T
        return -self.scale * torch.cdist(e, self.means.to(e.dtype))

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K) Euclidean distances from the embeddings of ``x`` to each identity's mean embedding."""
        self._check_ready()
        e = self.embedder(x)
        return torch.cdist(e, self.means.to(e.dtype))

    def verify(self, x: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Is each face of ``x`` the enrolled person ``name``?

        Returns:
            (same (N,) bool, distance (N,)): Euclidean distance to the identity's
            mean embedding, same person when below the threshold.

        Raises:
            InputError: unknown identity, or no threshold is known for this model.
        """
        k = self.index(name)
        if self.threshold is None:
            raise InputError("gallery", "this embedding model has no known verification threshold; "
                                        "pass Gallery(..., threshold=...)")
        distance = self.distances(x)[:, k]
        return distance < self.threshold, distance

    @classmethod
    def from_folder(cls, model: nn.Module, folder: str | Path, *,
                    crop: Callable[..., FaceCrops] | None = None, metric: Metric = "cosine",
                    scale: float = 10.0, threshold: float | None = None, min_prob: float = 0.9) -> Gallery:
        """Enroll one identity per sub-folder of ``folder`` (its name is the label).

        Each photo contributes its most prominent face (MTCNN's first: the largest).

        Args:
            model: the embedding network.
            folder: holds ``<identity>/<photo>`` files.
            crop: ``crop(pixels, min_prob=..., where=...) -> FaceCrops``;
                default: :func:`dlib_face_chips` for dlib's network,
                :func:`crop_faces` (160x160) otherwise.
            metric, scale, threshold: see :class:`Gallery`.
            min_prob: MTCNN probability threshold.

        Raises:
            InputError: missing folder, no identity folders, a folder without
                photos, a photo without a face, or fewer than two identities.
        """
        from mnd.dlib_resnet import DlibResNet
        from mnd.imageio import load_rgb

        folder = Path(folder)
        people = gallery_photos(folder, min_identities=1)
        if crop is None:
            crop = dlib_face_chips if isinstance(model, DlibResNet) else crop_faces
        gallery = cls(model, metric=metric, scale=scale, threshold=threshold)
        for person, photos in people.items():
            chips = [crop(load_rgb(p).pixels, min_prob=min_prob, where=p).faces[:1] for p in photos]
            gallery.enroll(person, torch.cat(chips))
        check_identity_count(folder, gallery.identities)
        return gallery


MIN_IDENTITIES = 2
"""A gallery names at least two people: with one, "not the true identity" and
"the least-likely identity" have no meaning (every face is that one person)."""


def check_identity_count(folder: str | Path, identities: Sequence[str], minimum: int = MIN_IDENTITIES) -> None:
    """Raise InputError naming ``folder`` when it has fewer than ``minimum`` identities."""
    if len(identities) < minimum:
        found = f"only {identities[0]!r}" if len(identities) == 1 else str(len(identities))
        why = " (with one person there is no other identity to be mistaken for)" if len(identities) == 1 else ""
        raise InputError(
            folder, f"a face gallery needs at least {minimum} identities (sub-folders of photos), found {found}{why}"
        )


def gallery_photos(folder: str | Path, *, min_identities: int = MIN_IDENTITIES) -> dict[str, list[Path]]:
    """The photos of each identity of a gallery folder, checked without reading any image.

    ``folder`` holds one sub-folder per identity (hidden ones are skipped),
    each holding photos. The command line calls this before loading a model,
    so a bad gallery is reported at once.

    Args:
        folder: the gallery folder.
        min_identities: fewer identity folders than this is an error.

    Returns:
        identity name -> its photo paths (sorted), identities sorted by name.

    Raises:
        InputError: naming the folder: missing, a file, no identity
            sub-folders, a sub-folder without photos, too few identities.
    """
    from mnd.imageio import list_images

    folder = Path(folder)
    if not folder.exists():
        raise InputError(folder, "gallery folder not found")
    if not folder.is_dir():
        raise InputError(folder, "gallery is a file, expected a folder with one sub-folder of photos per identity")
    try:
        people = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        out = {person.name: list_images([person]) for person in people}
    except OSError as exc:
        where = getattr(exc, "filename", None) or folder
        raise InputError(where, f"cannot read the gallery ({exc.strerror or exc})") from None
    if not out:
        raise InputError(folder, "no identity sub-folders (expected <folder>/<identity>/<photos>)")
    for person, photos in out.items():
        if not photos:
            raise InputError(folder / person, "no photos in this identity folder")
    check_identity_count(folder, list(out), min_identities)
    return out
