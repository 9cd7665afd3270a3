"""Speed of `mnd protect` on a 12-megapixel photo, as a ratio against `mnd attack` (224 px) of the same photo.

An embedded photo (chelsea, 451x300) is enlarged to 4000x3000 (bicubic) and
protected at full resolution on the CPU (EfficientNet-Lite0, non-targeted,
PNG); the same photo is then attacked as ``mnd attack`` does (its 224x224
model input). Prints both wall times, the iterations each took and the ratio,
then profiles one iteration of the full-resolution attack (which part of the
loss costs what). Like the mnd command it keeps freed memory in the process
(mnd/core/memory.py); MND_KEEP_FREED_MEMORY=0 measures glibc's default.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/protect_speed.py [--threads N] [--size 4000x3000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from mnd import models
from mnd.core import losses
from mnd.core.attack import generate
from mnd.core.config import config_for
from mnd.core.memory import ENV, keep_freed_memory
from mnd.data import embedded
from mnd.data.imageio import load_rgb, to_tensor
from mnd.data.prepare import prepare_image
from mnd.protect import photo as protect
from parts import time_parts  # benchmarks/parts.py (these scripts run from this folder's path)


def _timed(label: str, fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    print(f"{label}: {seconds:.1f} s")
    return seconds, out


def profile_one_iteration(model: torch.nn.Module, spec: models.ModelSpec, photo: torch.Tensor) -> None:
    """Seconds of each part of one full-resolution iteration (forward and backward)."""
    view = protect.ClassifierView(spec)
    x = photo[None]
    z = x.clone().requires_grad_(True)
    cfg = config_for("mnd", task="imagenet")
    start = time.perf_counter()
    ref = losses.CleanReference(x)
    _ = ref.sobel
    print(f"  clean reference (SSIM statistics, Sobel map), once: {time.perf_counter() - start:.2f} s")
    parts = {
        "view (resize + crop) + model": lambda: losses.adversarial_loss(model(view(z)), torch.tensor([0]),
                                                                        targeted=False),
        "perceptual loss (l1 + SSIM + Sobel)": lambda: losses.perceptual_loss(z, x, betas=cfg.betas,
                                                                              reference=ref),
    }
    time_parts(parts, z)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the enlarged photo")
    parser.add_argument("--max-iter", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory()  # as the mnd command does
    width, height = map(int, args.size.split("x"))
    spec = models.spec("efficientnet_lite0")
    model = models.freeze(models.load(spec.name))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.png"
        Image.fromarray(embedded.embedded_images(["chelsea"])[0].pixels).resize(
            (width, height), Image.Resampling.BICUBIC).save(path)
        photo = load_rgb(path)
        print(f"photo {width}x{height} ({width * height / 1e6:.1f} MP), {args.threads} thread(s), freed memory "
              f"{'kept' if kept else f'handed back ({ENV}=0 or no glibc)'}")
        small = prepare_image(photo, spec)[None]
        cfg = config_for("mnd", task="imagenet", max_iter=args.max_iter)
        attack_s, result = _timed("mnd attack (224x224 input)", lambda: generate(model, small, config=cfg))
        print(f"  iterations {int(result.iterations[0])}, success {bool(result.success[0])}")
        settings = protect.Settings(max_iter=args.max_iter)
        protect_s, row = _timed("mnd protect (full resolution, write + verify included)",
                                lambda: protect.protect_photo(model, spec, photo, Path(tmp) / "out.png", settings))
        print(f"  iterations {row['iterations']}, success {row['success']}, PSNR {row['psnr']:.1f} dB, "
              + ", ".join(f"{t} {row[t]}" for t in ("jpeg95", "jpeg85", "jpeg75", "resize50")))
        print(f"ratio protect / attack: {protect_s / attack_s:.1f}x")
        print("one full-resolution iteration:")
        profile_one_iteration(model, spec, to_tensor(photo.pixels))


if __name__ == "__main__":
    main()
