"""Speed and results of `mnd protect` on faces (dlib_resnet_v1): a 12-megapixel photo, and the embedded face photos.

``--part 12mp``: the astronaut photo enlarged to 4000x3000 (PIL, bicubic) is
protected at full resolution, every face at once (:func:`protect_face_photo`:
detection, attack, writing and the check of the re-read file included), with
``verify`` (no gallery) and with ``identify`` against a two-person gallery
(astronaut and grace_hopper, each enrolled from a mirrored copy of their
photo), non-targeted and targeted; the same face is then attacked as ``mnd
attack --model dlib_resnet_v1 --gallery`` does (MTCNN, dlib's 150x150 chip, the
gallery's logits). Prints the wall times, iterations, the ratios protect /
attack, and what one full-resolution iteration costs, part by part.

``--part embedded``: astronaut and grace_hopper at their own size and the two
side by side, with ``verify`` and ``identify`` (the same gallery): success on
the re-read file, PSNR, iterations, seconds, per-face distances.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/protect_faces.py [--part all|12mp|embedded] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mnd import experiments, models
from mnd.core import losses
from mnd.core.attack import Adam, descent_step
from mnd.core.config import config_for
from mnd.data import embedded
from mnd.data.faces import cut_faces, gallery_from_folder
from mnd.data.imageio import LoadedImage, load_rgb, to_tensor
from mnd.protect.photo import Settings
from mnd.protect.faces import FaceView, find_faces, prepare_attack, protect_face_photo
from parts import time_parts  # benchmarks/parts.py (these scripts run from this folder's path)

SPEC = models.spec("dlib_resnet_v1")
PEOPLE = ("astronaut", "grace_hopper")


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _gallery_folder(root: Path) -> Path:
    """One sub-folder per person, each holding the mirrored photo."""
    for image in embedded.embedded_images(PEOPLE):
        (root / image.name).mkdir(parents=True)
        Image.fromarray(np.ascontiguousarray(image.pixels[:, ::-1])).save(root / image.name / "mirrored.png")
    return root


def _side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    height = max(left.shape[0], right.shape[0])
    return np.concatenate([np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0))) for p in (left, right)], axis=1)


def _row_text(row: dict[str, Any]) -> str:
    labels = f", {row['clean_label']} -> {row['adv_label']}" if row.get("clean_label") else ""
    return (f"success {row['success']}, PSNR {row['psnr']:.1f} dB, iterations {row['iterations']}, "
            f"{row['seconds']:.1f} s, faces {row['faces_protected']}/{row['faces']}, distances {row['distances']}"
            f"{labels}")


def attack_chip(gallery: torch.nn.Module, photo: LoadedImage, *, targeted: bool, max_iter: int) -> tuple[float, Any]:
    """``mnd attack``'s work on one photo: MTCNN, dlib's chips, Algorithm 1 on the chips against the gallery."""
    def run() -> Any:
        chips = cut_faces(photo.pixels, SPEC, where=photo.path).faces
        return experiments.run_method(gallery, chips, None, "mnd", task="faces", targeted=targeted, seed=0,
                                      max_iter=max_iter)

    return _timed(run)


def profile_one_iteration(recogniser: torch.nn.Module, photo: LoadedImage) -> None:
    """Seconds of each part of one full-resolution iteration on the crop the attack sees."""
    clean = to_tensor(photo.pixels)
    settings = Settings(criterion="verify")
    attack = prepare_attack(recogniser, SPEC, clean, find_faces(photo.pixels, SPEC), settings)
    region = attack.region
    view = FaceView(attack.faces.cuts, region.height, region.width, region.box.left, region.box.top)
    x = region.crop(clean)[None]
    z = (x + 0.002 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    config = config_for("mnd", task="faces")
    reference = losses.CleanReference(x)
    print(f"  the crop D: {region.box.width}x{region.box.height} of {region.width}x{region.height} "
          f"({100 * region.pixel_ratio:.1f}% of the pixels), {int(region.free.sum())} free pixels")
    parts = {
        "face view (dlib chip) + dlib ResNet": lambda: attack.judge(view(z))[:, 1],
        "perceptual loss on D (l1 + SSIM + Sobel)": lambda: losses.perceptual_loss(z, x, betas=region.betas(config),
                                                                                   reference=reference),
    }
    time_parts(parts, z)
    with torch.no_grad():
        seconds, _ = _timed(lambda: attack.judge(view(z)))
    print(f"  the success check (view + ResNet, no gradient): {seconds:.2f} s")
    adam = Adam.start(x, config.step_size)
    seconds, _ = _timed(lambda: torch.where(region.free, descent_step(z.detach(), z.detach(), step_size=1e-4,
                                                                       adam=adam), x))
    print(f"  Adam step + projection on D: {seconds:.2f} s")


def part_12mp(tmp: Path, gallery: torch.nn.Module, net: torch.nn.Module, size: tuple[int, int],
              max_iter: int) -> None:
    width, height = size
    path = tmp / "astronaut_12mp.png"
    Image.fromarray(embedded.embedded_images(["astronaut"])[0].pixels).resize(
        (width, height), Image.Resampling.BICUBIC).save(path)
    photo = load_rgb(path)
    print(f"\n== astronaut enlarged to {width}x{height} ({width * height / 1e6:.1f} MP), "
          f"{torch.get_num_threads()} thread(s)")
    seconds, faces = _timed(lambda: find_faces(photo.pixels, SPEC))
    print(f"MTCNN detection alone (included in both commands below): {seconds:.1f} s, {len(faces)} face(s)")
    runs = [("verify, no gallery", net, Settings(criterion="verify", max_iter=max_iter), False),
            ("identify, non-targeted", gallery, Settings(criterion="identify", max_iter=max_iter), False),
            ("identify, targeted", gallery, Settings(criterion="identify", targeted=True, max_iter=max_iter), True)]
    attacks: dict[bool, float] = {}
    for targeted in (False, True):
        seconds, result = attack_chip(gallery, photo, targeted=targeted, max_iter=max_iter)
        attacks[targeted] = seconds
        print(f"mnd attack (150x150 chip, gallery logits 10 x cosine), {'targeted' if targeted else 'non-targeted'}: "
              f"{seconds:.1f} s, iterations {int(result.iterations[0])}, success {bool(result.success[0])}")
    for name, recogniser, settings, targeted in runs:
        seconds, row = _timed(lambda: protect_face_photo(recogniser, SPEC, photo, tmp / "out.png", settings))
        print(f"mnd protect ({name}): {seconds:.1f} s wall; {_row_text(row)}")
        print(f"  ratio protect / attack ({'targeted' if targeted else 'non-targeted'}): "
              f"{seconds / attacks[targeted]:.2f}x")
    print("one full-resolution iteration:")
    profile_one_iteration(net, photo)


def part_embedded(tmp: Path, gallery: torch.nn.Module, net: torch.nn.Module, max_iter: int) -> None:
    pixels = {image.name: image.pixels for image in embedded.embedded_images(PEOPLE)}
    pixels["astronaut+grace_hopper"] = _side_by_side(pixels["astronaut"], pixels["grace_hopper"])
    print(f"\n== embedded face photos at their own size, {torch.get_num_threads()} thread(s)")
    for criterion, recogniser in (("verify", net), ("identify", gallery)):
        for name, photo in pixels.items():
            path = tmp / f"{name}.png"
            Image.fromarray(photo).save(path)
            row = protect_face_photo(recogniser, SPEC, load_rgb(path), tmp / "out.png",
                                     Settings(criterion=criterion, max_iter=max_iter))
            print(f"{criterion:8s} {name:24s} {photo.shape[1]}x{photo.shape[0]}: {_row_text(row)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "12mp", "embedded"), default="all")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the enlarged photo")
    parser.add_argument("--max-iter", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net = models.freeze(models.load(SPEC.name))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        gallery = models.freeze(gallery_from_folder(models.load(SPEC.name), SPEC, _gallery_folder(root / "gallery")))
        if args.part in ("all", "embedded"):
            part_embedded(root, gallery, net, args.max_iter)
        if args.part in ("all", "12mp"):
            width, height = map(int, args.size.split("x"))
            part_12mp(root, gallery, net, (width, height), args.max_iter)


if __name__ == "__main__":
    main()
