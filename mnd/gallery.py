"""A gallery of enrolled identities: logits over people from a face embedding network.

:class:`Gallery` turns an embedder (dlib's ResNet, facenet's InceptionResnetV1
without its classifier) into a classifier over enrolled identities, so every
attack written for a classifier (ours, torchattacks' anchors) applies
unchanged. :func:`gallery_photos` checks a gallery folder (one sub-folder of
photos per identity) without reading any image.

The gallery does not cut faces from photos: :meth:`Gallery.from_folder` takes
the cutting function, and :func:`mnd.faces.gallery_from_folder` passes the one
the model's spec chooses (:func:`mnd.faces.cut_faces`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mnd.errors import InputError
from mnd.imageio import list_images, load_rgb
from mnd.nets import freeze

Metric = Literal["cosine", "euclidean"]

FaceCutter = Callable[..., Any]
"""``cut(pixels, min_prob=..., where=...)``: the faces of an (H, W, 3) uint8 photo,
most prominent first, as an object whose ``faces`` is an (N, 3, S, S) tensor in
[0, 1] (:class:`mnd.faces.FaceCrops`); raises InputError when there is none."""


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
        self.embedder = freeze(embedder)
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
    def from_folder(cls, model: nn.Module, folder: str | Path, *, crop: FaceCutter, metric: Metric = "cosine",
                    scale: float = 10.0, threshold: float | None = None, min_prob: float = 0.9) -> Gallery:
        """Enroll one identity per sub-folder of ``folder`` (its name is the label).

        Each photo contributes its most prominent face (the first ``crop`` gives:
        MTCNN's largest). :func:`mnd.faces.gallery_from_folder` calls this with
        the crop the model's spec chooses.

        Args:
            model: the embedding network.
            folder: holds ``<identity>/<photo>`` files.
            crop: ``crop(pixels, min_prob=..., where=...)``, see :data:`FaceCutter`.
            metric, scale, threshold: see :class:`Gallery`.
            min_prob: MTCNN probability threshold, passed to ``crop``.

        Raises:
            InputError: missing folder, no identity folders, a folder without
                photos, a photo without a face, or fewer than two identities.
        """
        folder = Path(folder)
        people = gallery_photos(folder, min_identities=1)
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
