"""Protecting the faces of a whole photo: every face at once, at full resolution, success decided on the saved file.

A face recogniser never sees the whole photo: it sees one aligned chip per
face. Here the faces are found once, on the clean photo (MTCNN,
:func:`mnd.data.faces.detect_faces`), and each becomes a :class:`FaceCut`,
a differentiable map from the photo to the crop the model takes:
:class:`DlibCut` (dlib's aligned 150x150 chip,
:func:`mnd.models.dlib_resnet.extract_chip` placed from MTCNN's eyes) or
:class:`BoxCut` (the MTCNN box resized, facenet-pytorch's ``extract_face``).
:class:`FaceView` maps a photo to the (K, 3, S, S) crops of its K faces, so
every face of a photo is protected by one run of Algorithm 1
(:func:`mnd.core.attack.generate`, the paper's faces hyper-parameters).

Criteria, per face (:func:`face_judge`); a photo succeeds only when every
face does:

- ``verify`` without a gallery: a recogniser that enrolled the original photo
  no longer matches: the Euclidean distance between the descriptors of the
  clean and the protected face is above the model's threshold (dlib: 0.6).
- ``verify`` with a gallery: the face is no longer within the threshold of
  the mean embedding of the identity it had clean (its clean top-1).
- ``identify`` (a gallery, or a face classifier): non-targeted, the face's
  top-1 identity is no longer its clean one; targeted, it is the target, the
  least-likely identity of eq. (5) on the clean face.

Each criterion gives one margin per face, positive exactly when the face
meets it, in logits (:data:`SCALES`). :class:`FaceJudge` turns the K margins
into two photo-level logits ``[-v / 2, v / 2]`` with ``v`` their minimum, so
the photo is "adversarial" (class 1 beats class 0) exactly when every face
meets its criterion; the gradient is that of a soft minimum (log-sum-exp,
temperature one logit), so every face that is close to the worst one is
pushed. Algorithm 1 then attacks class 0 ("recognised"), non-targeted (eq. 3)
or towards class 1 (eq. 4, ``--targeted``).

Where the perturbation lives (:class:`Region`). A face's crop reads only
the pixels of its footprint (:meth:`FaceCut.footprint`: for dlib, the box
:func:`mnd.models.dlib_resnet.chip_box`), so only those pixels, plus
:data:`MARGIN` around them, are free; every other pixel of the photo keeps
its value. Algorithm 1 runs on a crop ``D`` of the photo: the free pixels
plus :data:`CONTEXT` fixed pixels around them (widened to the 16-pixel
JPEG grid), with the ``region`` option of :func:`mnd.core.attack.generate`
holding the fixed ones at their clean values. Its perceptual loss on ``D``
equals the loss of eq. (7) on the full-resolution photo (minus a constant)
when the weights are rescaled (:meth:`Region.betas`): with Z = X outside the
free pixels, and ``n``, ``N`` the pixel counts of ``D`` and of the photo,
``w``, ``W`` their numbers of 11x11 SSIM windows,

- the l1 deviation and Sobel terms (``mean``) have all their non-zero terms
  inside ``D`` (the Sobel term 1 pixel around a changed pixel, inside the
  context), so their full-resolution mean is ``n / N`` times their mean on
  ``D``;
- every SSIM window that touches a free pixel lies inside ``D`` (the
  context is the window's side less one, 10 pixels), and every other
  window compares X with X, so its SSIM is 1: ``SSIM(photo) = (w / W)
  SSIM(D) + (1 - w / W)``.

So ``L_pqp(photo) = b1 (n/N) dev(D) - b2 (w/W) SSIM(D) + b3 (n/N) grad(D) - b2 (1 - w/W)``
(``sqrt(n/N)`` for an l2 ``rms`` norm). The photo's other pixels cost
nothing per iteration, and the gradient is the full-resolution one.

Success is decided on the saved file: while attacking, a :class:`Verdict`
checks the file's pixels (the 8-bit PNG or the decoded JPEG of ``D``,
which on the 16-pixel grid decodes like the whole photo's JPEG wherever a
face reads it) and every ``--survive`` transform; after the attack the
photo is written, read back from disk and checked from scratch
(:func:`verify_faces`). Faces are not detected again on the saved file:
the clean photo's face geometry is used on it, as a recogniser that found
the face would cut it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mnd.core import robustness
from mnd.core.attack import NOT_ATTACKED_MISCLASSIFIED, AttackResult, generate
from mnd.core.config import AttackConfig, config_for
from mnd.core.losses import L2Form, Norm, Reduction
from mnd.core.pixels import quantize
from mnd.data.imageio import LoadedImage, load_rgb, to_tensor
from mnd.errors import InputError
from mnd.protect.face_cuts import Box, BoxCut, DlibCut, FaceCut, Faces, FaceView, find_faces  # noqa: F401 (re-exported)
from mnd.protect.photo import (
    Settings,
    Stage,
    Survive,
    Verdict,
    differs,
    file_columns,
    photo_columns,
    report_row,
    write_photo,
)
from mnd.protect.unseen import Checked, columns_of, fooled
from mnd.models.gallery import Gallery
from mnd.models.registry import ModelSpec
from mnd.models.registry import spec as model_spec

Criterion = Literal["verify", "identify"]
CRITERIA: tuple[Criterion, ...] = ("verify", "identify")

MARGIN = 5
"""Free pixels around each face's footprint (the SSIM window's radius): the perturbation need not stop at its edge."""

SSIM_WINDOW = 11
"""The side of the SSIM window of the perceptual loss (:class:`mnd.core.losses.CleanReference`)."""

SHARED: dict[str, Survive] = {"jpeg95": Survive("jpeg", 95), "jpeg85": Survive("jpeg", 85),
                              "jpeg75": Survive("jpeg", 75), "resize50": Survive("resize", 0.5)}
""":data:`mnd.core.robustness.TRANSFORMS` as :class:`mnd.protect.photo.Survive` (the same Pillow calls),
so that :meth:`Region.on_crop` can run them on the crop ``D``."""

JPEG_GRID = 16
"""A JPEG 4:2:0 block (MCU) side: the crop ``D`` starts on this grid, so its JPEG has the photo's blocks."""

CONTEXT = SSIM_WINDOW - 1
"""Fixed pixels the loss sees around the free ones: every SSIM window touching a free pixel (and every
Sobel term, 1 pixel around one) then lies inside the crop ``D``."""

SCALES: dict[str, float] = {"verify": 30.0, "identify": 30.0, "classifier": 1.0}
"""Logits per unit of margin. ``verify``: per unit of descriptor distance (dlib's threshold is
0.6, so a clean face starts at -18 logits); ``identify`` with a gallery: per unit of cosine, as
face-recognition heads (30 to 64). Eq. (3)'s logit term makes the adversarial gradient
proportional to the scale, against a fixed perceptual one: at the gallery's 10 the perceptual
term holds the perturbation back (non-targeted ``mnd attack`` of a 150x150 chip then fails after
1000 iterations; here grace_hopper needed 204 iterations against 139 at 30); beyond 30 the
iterations barely drop while the PSNR does. A face classifier's own logits are used as they are."""


# --- where the attack works -------------------------------------------------------


def _norm_factor(norm: Norm, reduction: Reduction, l2_form: L2Form, ratio: float) -> float:
    """How a norm over all pixels relates to the same norm over a part holding every non-zero term."""
    if norm == "l1":
        return ratio if reduction == "mean" else 1.0
    return {"rms": math.sqrt(ratio), "mse": ratio, "sum": 1.0}[l2_form]


@dataclass(frozen=True)
class Region:
    """The crop ``D`` of a photo that Algorithm 1 sees, and which of its pixels are free (module docstring).

    Attributes:
        box: ``D`` in photo pixels.
        free: (1, 1, h, w) bool over ``D``: the pixels the attack may change.
        height, width: the photo's size.
    """

    box: Box
    free: torch.Tensor
    height: int
    width: int

    @classmethod
    def around(cls, footprints: Sequence[Box], height: int, width: int, *, margin: int = MARGIN,
               context: int = CONTEXT) -> Region:
        """The footprints plus ``margin`` free pixels, ``context`` fixed pixels around them, on the JPEG grid."""
        if min(height, width) < SSIM_WINDOW:
            raise ValueError(f"the photo ({width}x{height}) is smaller than the {SSIM_WINDOW}-pixel SSIM window")
        free_boxes = [box.grown(margin, height, width) for box in footprints]
        box = Box.union(free_boxes).grown(context, height, width).aligned(JPEG_GRID, height, width)
        free = torch.zeros(1, 1, box.height, box.width, dtype=torch.bool)
        for b in free_boxes:
            b.shifted(box.left, box.top).of(free)[...] = True
        return cls(box, free, height, width)

    def crop(self, photo: torch.Tensor) -> torch.Tensor:
        """``D`` of (..., 3, H, W) photos (a copy)."""
        return self.box.of(photo).clone()

    def paste(self, photo: torch.Tensor, crop: torch.Tensor) -> torch.Tensor:
        """A copy of ``photo`` with ``D`` replaced by ``crop``."""
        out = photo.clone()
        self.box.of(out)[...] = crop.to(out.dtype)
        return out

    @property
    def pixel_ratio(self) -> float:
        """``n / N``: pixels of ``D`` over pixels of the photo."""
        return self.box.height * self.box.width / (self.height * self.width)

    @property
    def window_ratio(self) -> float:
        """``w / W``: SSIM windows inside ``D`` over those of the photo."""
        k = SSIM_WINDOW - 1
        return (self.box.height - k) * (self.box.width - k) / ((self.height - k) * (self.width - k))

    def betas(self, config: AttackConfig) -> tuple[float, float, float]:
        """eq. (7)'s weights on ``D`` that make its loss the full-resolution loss less a constant (module docstring)."""
        b1, b2, b3 = config.betas
        ratio = self.pixel_ratio
        return (b1 * _norm_factor(config.deviation, config.reduction, config.l2_form, ratio),
                b2 * self.window_ratio,
                b3 * _norm_factor(config.gradient, config.reduction, config.l2_form, ratio))

    def ssim_constant(self, config: AttackConfig) -> float:
        """What the SSIM windows outside ``D`` add to the full-resolution loss: ``-b2 (1 - w / W)``."""
        return -config.betas[1] * (1.0 - self.window_ratio)

    def on_crop(self, transform: Survive, photo: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """A sharing transform of whole photos as a transform of crops ``D`` of ``photo`` (3, H, W).

        JPEG needs only the crop: ``D`` starts on the 16-pixel grid and ends on
        it or at the photo's edge, so its JPEG has the photo's blocks and
        decodes like the photo's JPEG except in its outer 2 pixels (chroma
        upsampling reads the next block), which are context, 16 pixels from
        any face. A resize is done on the photo: the crop pasted into it.
        """
        if transform.kind == "jpeg":
            return transform

        def on_photo(crops: torch.Tensor) -> torch.Tensor:
            photos = torch.stack([self.paste(photo.to(c.device), c) for c in crops])
            return self.box.of(transform(photos)).clone()

        return on_photo


# --- the criteria as logits -------------------------------------------------------------


class VerifyMargins(nn.Module):
    """Per face: ``scale * (||e(face) - reference|| - threshold)``, positive when the face no longer matches.

    Args:
        embedder: faces -> embeddings.
        references: (K, D) the embedding each face is compared with (its
            clean descriptor, or its clean identity's mean embedding).
        threshold: same person below this distance.
        scale: logits per unit of distance.
    """

    def __init__(self, embedder: nn.Module, references: torch.Tensor, threshold: float, scale: float) -> None:
        super().__init__()
        self.embedder, self.threshold, self.scale = embedder, float(threshold), float(scale)
        self.register_buffer("references", references.detach().float(), persistent=False)

    def distances(self, faces: torch.Tensor) -> torch.Tensor:
        """(N * K, 3, S, S) -> (N, K) distances to each face's reference."""
        e = self.embedder(faces).float()
        k = self.references.shape[0]
        return (e.view(-1, k, e.shape[1]) - self.references).norm(dim=2)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.scale * (self.distances(faces) - self.threshold)


class IdentifyMargins(nn.Module):
    """Per face: how far the identity scores are from meeting the criterion, times ``scale``.

    Non-targeted: best other identity's score less the clean identity's
    (positive: the top-1 changed); targeted: the target's score less the best
    other's (positive: the target is top-1).

    Args:
        scorer: faces -> (N * K, M) identity scores.
        goal: (K,) per face, the clean identity (non-targeted) or the target.
        targeted: which criterion.
        scale: logits per unit of score.
    """

    def __init__(self, scorer: nn.Module, goal: torch.Tensor, *, targeted: bool, scale: float) -> None:
        super().__init__()
        self.scorer, self.targeted, self.scale = scorer, targeted, float(scale)
        self.register_buffer("goal", goal.detach().long().view(-1), persistent=False)

    def scores(self, faces: torch.Tensor) -> torch.Tensor:
        """(N * K, 3, S, S) -> (N, K, M) identity scores."""
        s = self.scorer(faces).float()
        return s.view(-1, self.goal.shape[0], s.shape[1])

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        s = self.scores(faces)
        idx = self.goal.view(1, -1, 1).expand(s.shape[0], -1, 1)
        own = s.gather(2, idx).squeeze(2)
        other = s.scatter(2, idx, float("-inf")).amax(2)
        return self.scale * (own - other if self.targeted else other - own)


class GalleryScores(nn.Module):
    """A gallery's identity scores in natural units: cosines (or minus distances), without its logit scale."""

    def __init__(self, gallery: Gallery) -> None:
        super().__init__()
        self.gallery = gallery

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.gallery(faces) / self.gallery.scale


class FaceJudge(nn.Module):
    """Faces -> photo logits ``[-v / 2, v / 2]``: ``v`` is the smallest face margin (class 1 when every face meets it).

    The value of ``v`` is the minimum over the photo's K faces; its gradient is
    that of the soft minimum ``-log sum exp(-margin)`` (one logit of
    temperature), so the faces near the worst one are all pushed.
    """

    def __init__(self, margins: nn.Module) -> None:
        super().__init__()
        self.margins = margins

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        m = self.margins(faces)
        hard = m.amin(dim=1)
        soft = -torch.logsumexp(-m, dim=1)
        v = hard.detach() + (soft - soft.detach())
        return torch.stack([-v / 2, v / 2], dim=1)


@dataclass(frozen=True)
class FaceGoal:
    """What each face is judged against: its clean identity and target (identities; None without a gallery)."""

    criterion: Criterion
    clean: tuple[int, ...] | None
    target: tuple[int, ...] | None
    names: tuple[str, ...] | None


def face_judge(recogniser: nn.Module, spec: ModelSpec, clean_faces: torch.Tensor, criterion: Criterion, *,
               targeted: bool) -> tuple[FaceJudge, FaceGoal]:
    """The criterion for a photo's faces, from their clean crops (K, 3, S, S).

    ``recogniser``: a :class:`mnd.models.gallery.Gallery` (an embedding
    network with enrolled identities), an embedding network (``verify`` only,
    against the clean faces), or a face classifier (``identify`` only).
    """
    gallery = recogniser if isinstance(recogniser, Gallery) else None
    with torch.no_grad():
        if criterion == "verify":
            if targeted:
                raise InputError("--targeted", "applies to --criterion identify only")
            if gallery is not None:
                clean = gallery(clean_faces).argmax(1)
                references, threshold = gallery.means[clean], gallery.threshold
                embedder, names = gallery.embedder, tuple(gallery.identities)
            elif spec.embedding:
                embedder, clean, names = recogniser, None, None
                references, threshold = recogniser(clean_faces), getattr(recogniser, "distance_threshold", None)
            else:
                raise InputError("--criterion", f"verify needs an embedding model; {spec.name} is a classifier")
            if threshold is None:
                raise InputError("--criterion", f"{spec.name} has no known verification threshold")
            margins: nn.Module = VerifyMargins(embedder, references, threshold, SCALES["verify"])
            target = None
        else:
            if gallery is None and spec.embedding:
                raise InputError("--criterion", "identify needs --gallery DIR (one sub-folder of photos per identity)")
            scorer = GalleryScores(gallery) if gallery is not None else recogniser
            scale = SCALES["identify"] if gallery is not None else SCALES["classifier"]
            scores = scorer(clean_faces).float()
            clean = scores.argmax(1)
            target = scores.argmin(1) if targeted else None
            margins = IdentifyMargins(scorer, target if target is not None else clean, targeted=targeted, scale=scale)
            names = tuple(gallery.identities) if gallery is not None else None
    goal = FaceGoal(criterion, tuple(clean.tolist()) if clean is not None else None,
                    tuple(target.tolist()) if target is not None else None, names)
    return FaceJudge(margins), goal


# --- one photo ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceAttack:
    """Everything one photo's attack uses: its faces, region, views and judge."""

    faces: Faces
    region: Region
    view: FaceView
    judge: FaceJudge
    goal: FaceGoal


def prepare_attack(recogniser: nn.Module, spec: ModelSpec, photo: torch.Tensor, faces: Faces,
                   settings: Settings) -> FaceAttack:
    """The region, the photo's face view and the judge for a clean (3, H, W) photo."""
    height, width = photo.shape[-2:]
    view = FaceView(faces.cuts, height, width)
    device = next((p.device for p in recogniser.parameters()), photo.device)
    clean_faces = view(quantize(photo[None]).to(device))
    judge, goal = face_judge(recogniser, spec, clean_faces, settings.criterion or "verify",
                             targeted=settings.targeted)
    return FaceAttack(faces, Region.around(view.footprints, height, width), view, judge, goal)


def attack_faces(attack: FaceAttack, photo: torch.Tensor, settings: Settings,
                 device: str | torch.device = "cpu") -> AttackResult:
    """Algorithm 1 on the crop ``D`` of a clean (3, H, W) photo; success means the saved file (and survive transforms).

    Returns:
        The attack's result on ``D`` (paste ``adversarial`` into the photo with
        :meth:`Region.paste`).
    """
    region = attack.region
    crop_view = FaceView(attack.faces.cuts, region.height, region.width, region.box.left, region.box.top)
    goal = torch.tensor([1 if settings.targeted else 0], device=device)
    verdict = Verdict(attack.judge, crop_view, goal, targeted=settings.targeted, read_back=settings.output.as_read_back,
                      survive=[region.on_crop(s, photo) for s in settings.survive],
                      standins=settings.standins(), samples=settings.eot_samples, margin=settings.margin)
    config = config_for("mnd", task="faces", targeted=settings.targeted, max_iter=settings.max_iter,
                        progress=settings.progress, straight_through=False, margin=settings.margin)
    config = config.replace(betas=region.betas(config))
    recognised = torch.tensor([0], device=device)
    return generate(verdict, region.crop(photo)[None].to(device), recognised, config=config,
                    region=region.free.to(device))


def _labels(indices: Sequence[int] | None, names: Sequence[str] | None) -> str | None:
    if indices is None:
        return None
    return " ".join(names[i] if names is not None else str(i) for i in indices)


@torch.no_grad()
def verify_faces(attack: FaceAttack, path: str | Path, clean: torch.Tensor, settings: Settings,
                 device: str | torch.device = "cpu") -> dict[str, Any]:
    """Everything the report says about a saved photo's faces, computed from the file re-read from disk.

    Faces are not detected again: each face is cut from the re-read file with
    the clean photo's geometry. ``success``: every face meets the criterion
    and the file differs from the clean photo; ``survived``: also after each
    ``survive`` transform (None without one); then the same after each
    :data:`mnd.core.robustness.TRANSFORMS`; the per-face distances (verify:
    to the reference; identify with a gallery: to the clean identity's mean);
    PSNR and SSIM of the whole photo (:mod:`mnd.core.metrics`).
    """
    saved = to_tensor(load_rgb(path).pixels)[None]
    judge, view, goal, region = attack.judge, attack.view, attack.goal, attack.region
    faces = view(saved.to(device))
    margins = judge.margins(faces)[0].float().cpu()
    met = margins > 0
    success = bool(met.all()) and differs(saved, clean)
    label = torch.tensor([1 if settings.targeted else 0])
    crop_view = FaceView(attack.faces.cuts, region.height, region.width, region.box.left, region.box.top)

    def still(transforms: dict[str, Survive]) -> dict[str, bool]:
        """Every face still meets the criterion after each transform (of the crop ``D`` where that is exact)."""
        kept = robustness.survival(judge, region.crop(saved), label, label, settings.targeted, view=crop_view,
                                   transforms={n: region.on_crop(t, saved[0]) for n, t in transforms.items()})
        return {n: success and bool(v[0]) for n, v in kept.items()}

    survived = all(still({s.name: s for s in settings.survive}).values()) if settings.survive else None
    shared = still(SHARED)
    distances, adv = _face_details(judge, faces, goal)
    return {
        "success": success,
        "survived": survived,
        **shared,
        "clean_label": _labels(goal.clean, goal.names),
        "adv_label": _labels(adv, goal.names),
        "target_label": _labels(goal.target, goal.names),
        "faces": len(attack.faces),
        "faces_protected": int(met.sum()),
        "criterion": goal.criterion,
        "distances": " ".join(f"{d:.3f}" for d in distances) if distances is not None else "",
        **file_columns(saved, clean),
    }


def _face_details(judge: FaceJudge, faces: torch.Tensor,
                  goal: FaceGoal) -> tuple[list[float] | None, list[int] | None]:
    """Per face of one photo: the distance the criterion measures (identify with a gallery: to the clean
    identity's mean embedding), and the top-1 identity (identify)."""
    margins = judge.margins
    if isinstance(margins, VerifyMargins):
        return margins.distances(faces)[0].tolist(), None
    if not isinstance(margins, IdentifyMargins):
        return None, None
    top = margins.scores(faces)[0].argmax(1).tolist()
    scorer = margins.scorer
    if isinstance(scorer, GalleryScores) and goal.clean is not None:
        clean = torch.tensor(goal.clean, device=faces.device).view(-1, 1)
        return scorer.gallery.distances(faces).gather(1, clean).squeeze(1).tolist(), top
    return None, top


def skipped_row(photo: LoadedImage, spec: ModelSpec, settings: Settings, why: str, seconds: float) -> dict[str, Any]:
    """The report row of a photo that was not protected (no face found): nothing is written for it."""
    return {**photo_columns(photo, spec, settings), "success": None, "faces": 0, "criterion": settings.criterion,
            "file": "", "seconds": round(seconds, 2),
            "note": "; ".join(n for n in (photo.note, f"{why}: skipped, nothing written") if n)}


ALREADY_MET = "every face already meets the criterion on the clean photo: not attacked"


@torch.no_grad()
def check_faces(checked: Sequence[Checked], photo: LoadedImage, saved_path: str | Path,
                device: str | torch.device = "cpu") -> dict[str, str]:
    """The unseen-model columns of a protected face photo: each checked face classifier finds the faces of the
    clean photo its own way (MTCNN, its crop) and reads them on the clean photo and on the re-read file (and its
    JPEG 75); it is fooled when every face's identity changed (None when it finds no face)."""
    if not checked:
        return {}
    clean = to_tensor(photo.pixels)[None]
    saved = to_tensor(load_rgb(saved_path).pixels)[None]
    plain: list[bool | None] = []
    jpeg: list[bool | None] = []
    for c in checked:
        try:
            faces = find_faces(photo.pixels, model_spec(c.name), where=Path(photo.path).name)
        except InputError:
            plain.append(None)
            jpeg.append(None)
            continue
        view = FaceView(faces.cuts, clean.shape[-2], clean.shape[-1])
        per_face, per_face_jpeg = fooled(Checked(c.name, c.model, view), clean, saved)  # one row per face
        plain.append(bool(per_face.all()))
        jpeg.append(bool(per_face_jpeg.all()))
    return columns_of([c.name for c in checked], plain, jpeg)


def protect_face_photo(recogniser: nn.Module, spec: ModelSpec, photo: LoadedImage, path: str | Path,
                       settings: Settings, device: str | torch.device = "cpu", *, stage: Stage | None = None,
                       checked: Sequence[Checked] = ()) -> dict[str, Any]:
    """Protect every face of one photo, write it to ``path`` (or ``stage`` it) and return its report row, checked
    on the file re-read from disk.

    A photo without a face is skipped: its row says so, and nothing is written.
    """
    start = time.perf_counter()
    try:
        faces = find_faces(photo.pixels, spec, where=Path(photo.path).name)
    except InputError as exc:
        return skipped_row(photo, spec, settings, exc.problem, time.perf_counter() - start)
    clean = to_tensor(photo.pixels)
    attack = prepare_attack(recogniser, spec, clean, faces, settings)
    result = attack_faces(attack, clean, settings, device)
    protected = attack.region.paste(clean, result.adversarial[0])
    written, digest = write_photo(protected, path, settings.output, stage)
    row = verify_faces(attack, written, clean, settings, device)
    row.update(file=Path(path).name, sha256=digest, **check_faces(checked, photo, written, device))
    reason = result.reason[0]
    why = ALREADY_MET if reason == NOT_ATTACKED_MISCLASSIFIED else reason
    return report_row(photo, spec, settings, row, result, [photo.note, why], start)
