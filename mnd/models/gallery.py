"""A gallery of enrolled identities: logits over people from a face embedding network.

:class:`Gallery` turns an embedder (dlib's ResNet, facenet's InceptionResnetV1
without its classifier) into a classifier over enrolled identities, so every
attack written for a classifier (ours, torchattacks' anchors) applies
unchanged. :func:`gallery_photos` checks a gallery folder (one sub-folder of
photos per identity) without reading any image.

The gallery does not cut faces from photos: :meth:`Gallery.from_folder` takes
the cutting function, and :func:`mnd.data.faces.gallery_from_folder` passes the one
the model's spec chooses (:func:`mnd.data.faces.cut_faces`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mnd.errors import InputError
from mnd.models.nets import freeze

Metric = Literal["cosine", "euclidean"]



class Gallery(nn.Module):
    """Logits over enrolled identities from an embedding network.

    ``forward(x)`` returns (N, K) logits, one per enrolled identity, so any
    attack written for a classifier (ours, torchattacks) applies unchanged;
    the label of identity ``name`` is ``gallery.index(name)``.

    Logits (``metric``):
        - ``"cosine"`` (default): ``scale * cos(u(x) - m, c_k - m)`` where ``u`` is
          the L2-normalized embedding, ``c_k`` the mean of identity ``k``'s
          L2-normalized embeddings and ``m`` (``center=True``, the default with
          two or more identities) the mean of the ``c_k``: the gallery's
          average face. Face embeddings lie in a narrow cone (two different
          people sit at cosine ~0.75 with dlib's network), so without the
          centring, lowering the true identity's cosine lowers every other
          one too and a non-targeted attack wanders without changing the top-1
          identity; centred, moving away from one's own identity is moving
          towards the others (book/reading-notes.md has the measurements).
          The scale (default 10) sets how peaked the softmax is.
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
        center: subtract the gallery's average face before the cosine (above); ignored with one identity.
        threshold: verification distance threshold (default: the model's).
    """

    def __init__(self, embedder: nn.Module, *, metric: Metric = "cosine", scale: float = 10.0,
                 center: bool = True, threshold: float | None = None) -> None:
        super().__init__()
        if metric not in ("cosine", "euclidean"):
            raise InputError("--metric", f"unknown gallery metric {metric!r}; use 'cosine' or 'euclidean'")
        if not scale > 0:
            raise InputError("--scale", f"gallery logit scale must be positive, got {scale}")
        self.embedder = freeze(embedder)
        self.metric: Metric = metric
        self.scale = float(scale)
        self.center = bool(center)
        default = getattr(embedder, "distance_threshold", None)
        self.threshold = float(threshold) if threshold is not None else (float(default) if default else None)
        self.identities: list[str] = []
        self._samples: dict[str, torch.Tensor] = {}
        self.register_buffer("means", torch.zeros(0, 0))
        self.register_buffer("directions", torch.zeros(0, 0))
        self.register_buffer("origin", torch.zeros(0))

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
        centroids = torch.stack([F.normalize(s, dim=1).mean(dim=0) for s in samples])
        origin = centroids.mean(dim=0) if self.center and len(samples) > 1 else torch.zeros_like(centroids[0])
        self.origin = origin.to(device)
        self.directions = F.normalize(centroids - origin, dim=1).to(device)

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
            u = F.normalize(e, dim=1) - self.origin.to(e.dtype)
            return self.scale * F.normalize(u, dim=1) @ self.directions.to(e.dtype).T
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
