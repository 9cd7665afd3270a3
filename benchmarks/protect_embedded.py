"""Protection that survives sharing: `mnd protect` on the seven embedded photos, plain and with --survive.

Runs ``mnd protect`` (EfficientNet-Lite0, non-targeted, PNG) on the embedded
photos three times: plain, with ``--survive jpeg:75`` (expectation over
transformation through differentiable stand-ins, the default), and with
``--survive jpeg:75 --no-eot`` (the plain gradient, iterating until the real
transform agrees); prints per photo and in total: success on the saved file,
PSNR at full resolution, mean PSNR cost against plain, and whether the saved
photo is still adversarial after JPEG 95/85/75 and a 0.5x resize.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/protect_embedded.py [--out DIR] [--survive jpeg:75]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
from pathlib import Path

import torch

from mnd.cli.main import main
from mnd.core import robustness
from mnd.data import embedded


def run(photos: Path, out: Path, extra: list[str]) -> list[dict[str, str]]:
    """One ``mnd protect`` run; its report rows."""
    main(["protect", str(photos), "--out", str(out), "--quiet", *extra])
    with open(out / "report.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def totals(label: str, rows: list[dict[str, str]]) -> str:
    """One line: successes, median PSNR and survival counts."""
    n = len(rows)
    ok = sum(r["success"] == "True" for r in rows)
    psnr = statistics.median(float(r["psnr"]) for r in rows)
    kept = "  ".join(f"{t} {sum(r[t] == 'True' for r in rows)}/{n}" for t in robustness.TRANSFORMS)
    mean = statistics.fmean(float(r["psnr"]) for r in rows)
    return f"{label:32s} success {ok}/{n}  median PSNR {psnr:.1f} dB  mean {mean:.2f} dB  {kept}"


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="keep the outputs here (default: a temporary folder)")
    parser.add_argument("--survive", default="jpeg:75", help="the robust run's --survive (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        photos = root / "photos"
        embedded.export_embedded(photos)
        plain = run(photos, root / "plain", [])
        robust = run(photos, root / "survive", ["--survive", args.survive])
        no_eot = run(photos, root / "survive-no-eot", ["--survive", args.survive, "--no-eot"])
    runs = (("plain", plain), (f"--survive {args.survive}", robust), (f"--survive {args.survive} --no-eot", no_eot))
    for label, rows in runs:
        print(f"\n{label}")
        for r in rows:
            print(f"  {r['image']:18s} success {r['success']:5s} psnr {float(r['psnr']):6.2f}  it {r['iterations']:>4s}  "
                  + "  ".join(f"{t} {r[t]:5s}" for t in robustness.TRANSFORMS) + f"  {float(r['seconds']):.0f} s")
    print()
    for label, rows in runs:
        print(totals(label, rows))
    cost = {label: statistics.fmean(float(p["psnr"]) - float(r["psnr"]) for p, r in zip(plain, rows))
            for label, rows in runs[1:]}
    print("quality cost against plain (mean PSNR difference per photo): "
          + ", ".join(f"{label}: {value:.2f} dB" for label, value in cost.items()))


if __name__ == "__main__":
    main_benchmark()
