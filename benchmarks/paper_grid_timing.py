"""Time the paper's ImageNet grid at full scale: VGG19, 100 images, 12 methods x 2 settings.

Run: .venv/bin/python benchmarks/paper_grid_timing.py [--device cuda] [--images 100] [--batch 32]

VGG19 has random weights here (the cost does not depend on them, and no
download is needed); the images are the embedded photos tiled to --images.
It prints, per method and setting, the seconds, images per second and mean
iterations, then the projected time of the whole grid (Tables I and II).
With random weights the attack's iteration counts are not the pretrained
model's, so the per-iteration cost is the number to trust; it is printed too.
"""

from __future__ import annotations

import argparse
import time

import torch
from attack_speed import batch_of, sync, vgg19_random  # type: ignore[import-not-found]

from mnd.core import anchors
from mnd.core.config import VARIANTS
from mnd.experiments.methods import run_method


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-iter", type=int, default=1000)
    args = p.parse_args()
    device = torch.device(args.device)
    model = vgg19_random().to(device)
    x_all = batch_of(args.images, 224, device)
    methods = list(VARIANTS) + [m for m in anchors.ANCHORS if m != "rfgsm"]
    total = 0.0
    for targeted in (False, True):
        for method in methods:
            sync(device)
            t0 = time.perf_counter()
            its, won = [], 0
            for s in range(0, args.images, args.batch):
                r = run_method(model, x_all[s : s + args.batch], None, method, targeted=targeted, max_iter=args.max_iter)
                its += r.iterations.tolist()
                won += int(r.success.sum())
            sync(device)
            dt = time.perf_counter() - t0
            total += dt
            mean_it = sum(its) / len(its)
            per_it = dt / max(sum(its) / args.batch, 1)
            print(
                f"{'targeted' if targeted else 'non-targeted':12s} {method:8s} {dt:8.1f} s  {args.images / dt:7.2f} img/s  "
                f"success {won}/{args.images}  mean iterations {mean_it:7.1f}  ~{per_it * 1e3:.1f} ms per batch-iteration",
                flush=True,
            )
    print(f"whole ImageNet grid (2 settings x {len(methods)} methods x {args.images} images): {total:.0f} s")


if __name__ == "__main__":
    main()
