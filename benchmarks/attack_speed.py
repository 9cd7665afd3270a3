"""How much does one MND iteration cost beyond the model's own forward and backward?

Run: .venv/bin/python benchmarks/attack_speed.py [--device cpu|cuda] [--quick] [--parts]

On the same batch, for each batch size and model, it times
  (a) the bare model: forward + backward with respect to the input,
  (b) one MND iteration (default settings, and with --straight-through's single forward)
      while the 8-bit image has not changed (so no re-classification is needed: the
      first ~20 iterations of a default run), and one whose 8-bit image changed
      (objective, gradient, step and a second forward pass to re-classify it),
  (c) one torchattacks BIM iteration,
  (d) a full MND run (default settings) on the embedded photos, tiled to the batch size,
and prints the ratios. Every part is timed once per round, the parts in turn, and each
ratio is the median over rounds of the ratio within a round, so a machine that slows
down for a while (shared or throttled) slows both sides of a ratio alike. Times are
medians over rounds, with the spread (min-max).
Models: efficientnet_lite0 (real, embedded weights) and VGG19 with random
weights (the paper's architecture; weights do not change the cost).
The last line is machine-readable, is for efficientnet_lite0 at batch 32 and takes
each side at its fastest round (noise only ever adds time):
  mnd_iter/bare_fwd_bwd=<x> mnd_iter/bim_iter=<y> batch32/batch1_throughput=<z>
--parts prints instead what an iteration spends beyond the model, part by part
(perceptual loss and its terms, also SSIM through piq and autograd, the Adam step,
the 8-bit bookkeeping), as shares of the bare model at batch 32.
--quick uses 128x128 inputs and fewer repeats so the whole run stays near a
minute on a 2-core CPU; ratios, not seconds, are what it is for.
Like the mnd command, it keeps freed memory in the process (mnd/core/memory.py);
MND_KEEP_FREED_MEMORY=0 measures glibc's default instead.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torchvision.transforms import functional as TF

from mnd import models
from mnd.core import anchors, attack, losses
from mnd.core.config import AttackConfig, config_for
from mnd.core.memory import ENV, keep_freed_memory
from mnd.core.pixels import quantize
from mnd.data.embedded import embedded_images
from mnd.data.imageio import to_tensor


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_once(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def rounds(parts: dict[str, Callable[[], object]], device: torch.device, repeats: int) -> dict[str, list[float]]:
    """Each part timed once per round, the parts in turn (after one warm-up call each).

    A shared or throttled machine can run 20-50% slower for seconds at a time;
    parts timed back to back in the same round see the same slowdown, so the
    ratios are taken within each round and their median is reported.
    """
    for fn in parts.values():
        fn()  # allocator, kernels, oneDNN primitives
    out: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(repeats):
        for name, fn in parts.items():
            out[name].append(timed_once(fn, device))
    return out


def med(ts: list[float]) -> float:
    return statistics.median(ts)


def spread(ts: list[float]) -> str:
    return f"{med(ts) * 1e3:8.1f} ms [{min(ts) * 1e3:.1f}-{max(ts) * 1e3:.1f}]"


def ratio(num: list[float], den: list[float]) -> float:
    """The median over rounds of num / den (paired: both from the same round)."""
    return statistics.median(n / d for n, d in zip(num, den))


def best_ratio(num: list[float], den: list[float]) -> float:
    """min(num) / min(den): each side at its fastest round (noise only ever adds time)."""
    return min(num) / min(den)


def batch_of(size: int, side: int, device: torch.device) -> torch.Tensor:
    imgs = []
    for e in embedded_images():
        t = TF.resize(to_tensor(e.pixels.copy()), side, antialias=True)
        imgs.append(TF.center_crop(t, [side, side]))
    x = torch.stack([imgs[i % len(imgs)] for i in range(size)])
    return quantize(x).to(device)


def vgg19_random() -> nn.Module:
    from torchvision.models import vgg19

    torch.manual_seed(0)
    return models.freeze(models.Normalized(vgg19(weights=None), models.IMAGENET_MEAN, models.IMAGENET_STD))


def never_finishing(config: AttackConfig) -> AttackConfig:
    """The same work per iteration, but steps too small to ever succeed."""
    return config.replace(step_size=1e-12, optimizer="gd")


def per_iteration(times: dict[str, list[float]], name: str, k: int) -> list[float]:
    """(T(k) - T(0)) / k per round: the fixed costs (clean prediction, final check) cancel."""
    return [max(m - z, 0.0) / k for m, z in zip(times[f"{name} x{k}"], times[f"{name} x0"])]


def best_per_iteration(times: dict[str, list[float]], name: str, k: int) -> float:
    """(min T(k) - min T(0)) / k."""
    return max(min(times[f"{name} x{k}"]) - min(times[f"{name} x0"]), 0.0) / k


def bench_model(name: str, model: nn.Module, sizes: list[int], side: int, k: int, repeats: int, device: torch.device, full: bool) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    base = config_for("mnd")
    for b in sizes:
        x = batch_of(b, side, device)
        with torch.no_grad():
            labels = model(x).argmax(1)

        def bare() -> None:
            xx = x.clone().requires_grad_(True)
            logits = model(xx)
            torch.autograd.grad(logits.gather(1, labels[:, None]).sum(), xx)

        ref = losses.CleanReference(x)

        def mnd_worst() -> None:
            # an iteration whose 8-bit image changed: objective, gradient, step, re-classify
            z = x.clone().requires_grad_(True)
            loss, _ = attack.objective(model, z, ref, labels, base)
            (g,) = torch.autograd.grad(loss.sum(), z)
            with torch.no_grad():
                model(quantize(z - 2e-3 * g.sign()))

        mnd, st = never_finishing(base), never_finishing(base).replace(straight_through=True)
        parts: dict[str, Callable[[], object]] = {"bare": bare, "worst": mnd_worst}
        for n in (0, k):
            parts[f"mnd x{n}"] = lambda n=n: attack.generate(model, x, labels, config=mnd.replace(max_iter=n))
            parts[f"mnd_st x{n}"] = lambda n=n: attack.generate(model, x, labels, config=st.replace(max_iter=n))
            # BIM's T(0) is one step, so its difference covers k - 1 steps
            parts[f"bim x{n}"] = lambda n=n: anchors.run("bim", model, x, labels, steps=max(n, 1))
        times = rounds(parts, device, repeats)
        bim_steps = k / max(k - 1, 1)
        t = {"bare": times["bare"], "worst": times["worst"], "mnd": per_iteration(times, "mnd", k),
             "mnd_st": per_iteration(times, "mnd_st", k),
             "bim": [v * bim_steps for v in per_iteration(times, "bim", k)]}
        row = {name: med(v) for name, v in t.items()}
        r = {name: ratio(t[name], t["bare"]) for name in ("mnd", "mnd_st", "worst")}
        r["mnd/bim"], r["mnd_st/bim"] = ratio(t["mnd"], t["bim"]), ratio(t["mnd_st"], t["bim"])
        best = {"mnd": best_per_iteration(times, "mnd", k), "mnd_st": best_per_iteration(times, "mnd_st", k),
                "bim": best_per_iteration(times, "bim", k) * bim_steps}
        fastest = {name: value / min(t["bare"]) for name, value in best.items()}
        row["ratio"], row["ratio_bim"] = fastest["mnd"], best["mnd"] / best["bim"]
        print(flush=True)
        print(f"{name:18s} batch {b:3d}  bare fwd+bwd {spread(t['bare'])}  MND iter {spread(t['mnd'])}  MND-ST iter {spread(t['mnd_st'])}  BIM iter {spread(t['bim'])}  MND iter with re-check {spread(t['worst'])}")
        print(f"{'':18s}            MND/bare {r['mnd']:.2f}  MND-ST/bare {r['mnd_st']:.2f}  MND/BIM {r['mnd/bim']:.2f}  MND-ST/BIM {r['mnd_st/bim']:.2f}  re-check/bare {r['worst']:.2f}  (medians of {repeats} paired rounds)")
        print(f"{'':18s}            fastest rounds: MND/bare {fastest['mnd']:.2f}  MND-ST/bare {fastest['mnd_st']:.2f}  MND/BIM {row['ratio_bim']:.2f}  re-check/bare {best_ratio(t['worst'], t['bare']):.2f}")
        if full:
            cfg = base.replace(max_iter=200)
            sync(device)
            t0 = time.perf_counter()
            res = attack.generate(model, x, config=cfg)
            sync(device)
            seconds = time.perf_counter() - t0
            row["throughput"] = b / seconds
            print(f"{'':18s}            full MND run: {seconds:.2f} s, {row['throughput']:.2f} images/s, success {int(res.success.sum())}/{b}, mean iterations {res.iterations.float().mean():.1f}")
        out[b] = row
    return out


def bench_parts(model: nn.Module, size: int, side: int, repeats: int, device: torch.device) -> None:
    """What one MND iteration spends beyond the model, part by part, as a share of the bare model."""
    x = batch_of(size, side, device)
    with torch.no_grad():
        labels = model(x).argmax(1)
    cfg = config_for("mnd")
    ref = losses.CleanReference(x)
    _ = ref.sobel
    z0 = (x + 1e-3 * torch.randn_like(x)).clamp(0, 1)

    def loss_part(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], object]:
        def run() -> None:
            z = z0.clone().requires_grad_(True)
            torch.autograd.grad(fn(z).sum(), z)
        return run

    def bare() -> None:
        xx = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xx).gather(1, labels[:, None]).sum(), xx)

    adam = attack.Adam.start(x, cfg.step_size)
    grad = torch.randn_like(x)
    parts: dict[str, Callable[[], object]] = {
        "bare model fwd+bwd": bare,
        "perceptual loss, eq. (7)": loss_part(lambda z: attack.perceptual_term(z, ref, cfg)),
        "  SSIM term (ours)": loss_part(ref.ssim),
        "  SSIM term through piq + autograd": loss_part(lambda z: losses.ssim_similarity(z, x)),
        "  Sobel term": loss_part(lambda z: losses.gradient_loss(z, x, x_gradient=ref.sobel)),
        "  l1 deviation": loss_part(lambda z: losses.deviation_loss(z, x)),
        "Adam step + projection": lambda: attack.descent_step(z0, grad, step_size=cfg.step_size, adam=adam),
        "8-bit image + changed rows": lambda: (quantize(z0) != x).flatten(1).any(1).nonzero(),
    }
    times = rounds(parts, device, repeats)
    print(f"\nparts of one MND iteration, efficientnet_lite0, batch {size}, {side}x{side} (fastest of {repeats} rounds, share of the bare model):")
    base = min(times["bare model fwd+bwd"])
    for name, ts in times.items():
        print(f"  {name:36s} {min(ts) * 1e3:8.1f} ms  {min(ts) / base:6.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="128x128 inputs, fewer repeats (about a minute on CPU)")
    p.add_argument("--skip-vgg", action="store_true", help="only efficientnet_lite0")
    p.add_argument("--parts", action="store_true", help="only the parts of one iteration at batch 32")
    args = p.parse_args()
    device = torch.device(args.device)
    kept = keep_freed_memory()  # as the mnd command does
    side, k, repeats = (128, 6, 5) if args.quick else (224, 8, 7)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'}), inputs {side}x{side}, torch {torch.__version__}, freed memory {'kept' if kept else f'handed back ({ENV}=0 or no glibc)'}")
    eff = models.load("efficientnet_lite0").to(device)
    if args.parts:
        bench_parts(eff, 32, side, max(repeats, 7), device)
        return
    r = bench_model("efficientnet_lite0", eff, [1, 8, 32], side, k, repeats, device, full=True)
    if not args.skip_vgg:
        vgg = vgg19_random().to(device)
        sizes = [1] if args.quick and device.type == "cpu" else [1, 8, 32]
        bench_model("vgg19 (random)", vgg, sizes, side, k, repeats, device, full=False)
    b32, b1 = r[32], r[1]
    print(
        f"mnd_iter/bare_fwd_bwd={b32['ratio']:.3f} mnd_iter/bim_iter={b32['ratio_bim']:.3f} "
        f"batch32/batch1_throughput={b32['throughput'] / b1['throughput']:.3f}"
    )


if __name__ == "__main__":
    main()
