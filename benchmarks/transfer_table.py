"""Transfer on the embedded photos: every method, its quality, and whether it fools models it was not made on.

Runs a grid (non-targeted, EfficientNet-Lite0 as the attacked model, Lite1
and Lite2 as unseen models that only read the saved PNGs; then the
Lite0+Lite1 ensemble as the surrogate with Lite2 unseen) and prints one
Markdown table: per data set and method, n, mean PSNR, white-box success
(on the model or ensemble attacked, with its margin), and the share of
images on which Lite1 / Lite2 read another label than on the original, on
the saved file and after JPEG 75. The grid resumes: rerun with the same
``--results`` to print the table again without recomputing.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/transfer_table.py --results DIR [--methods m1 m2 ...]
"""

from __future__ import annotations

import argparse
import math
import statistics
import textwrap
from pathlib import Path

from mnd import experiments
from mnd.protect.unseen import unseen_of

SINGLE = [
    "mnd", "l1_ssim", "mnd_refine", "bim_min", "pgd_min", "ddn", "fmn_l2",
    "bim", "pgd", "mifgsm", "di2fgsm", "tifgsm", "vmifgsm", "sinifgsm",
    "mifgsm@eps=4", "di2fgsm@eps=4", "tifgsm@eps=4", "mifgsm@eps=16", "tifgsm@eps=16",
    "mnd@margin=8", "mnd@margin=20", "mnd@margin=20,diversity=0.5,translation=7,step=0.001",
    "noise@eps=1", "noise@eps=4",
]
"""Methods against Lite0 alone (Lite1 and Lite2 unseen)."""

ENSEMBLE = [
    "mnd", "mnd@margin=20", "mnd@margin=20,diversity=0.5,translation=7,step=0.001",
    "mifgsm@eps=4", "di2fgsm@eps=4", "mifgsm",
]
"""Methods against the Lite0+Lite1 ensemble (Lite2 unseen)."""


DATASETS = {
    "lite0": ("EfficientNet-Lite0 attacked; Lite1 and Lite2 unseen", "efficientnet_lite0",
              ["efficientnet_lite1", "efficientnet_lite2"]),
    "ensemble": ("Lite0+Lite1 ensemble attacked; Lite2 unseen", "efficientnet_lite0+efficientnet_lite1",
                 ["efficientnet_lite2"]),
}
"""Each grid of the table: its title, the model attacked and the models that only read."""


def preset_text(dataset: str, methods: list[str]) -> str:
    """The preset of one of the two grids (:data:`DATASETS`) over the embedded photos."""
    for m in methods:
        experiments.check_method(m)
    title, model, unseen = DATASETS[dataset]
    return textwrap.dedent(f"""
        name = "transfer-{dataset}"
        description = "Transfer of every method to models it was not made on (benchmarks/transfer_table.py)."
        seed = 0
        batch_size = 16
        threads = 1
        settings = ["non-targeted"]
        methods = {methods!r}

        [datasets.{dataset}]
        title = "{title}"
        source = "embedded"
        model = "{model}"
        unseen = {unseen!r}
        """).replace("'", '"')


def _share(flags: list[bool | None]) -> str:
    known = [f for f in flags if f is not None]
    return f"{sum(known)}/{len(known)}" if known else "–"


def table(rows: list[dict], order: list[str]) -> str:
    """The Markdown table of a grid's rows (methods in ``order``)."""
    lines = ["| attacked | method | n | PSNR (mean) | white-box | Lite1 | Lite1 JPEG 75 | Lite2 | Lite2 JPEG 75 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for dataset in ("lite0", "ensemble"):
        for method in order:
            sel = [r for r in rows if r["dataset"] == dataset and r["method"] == method and r["attacked"]]
            if not sel:
                continue
            psnr = [r["psnr"] for r in sel if math.isfinite(r["psnr"])]
            cells = []
            for model in ("efficientnet_lite1", "efficientnet_lite2"):
                verdicts = [unseen_of(r).get(model) for r in sel]
                if all(v is None for v in verdicts):
                    cells += ["(attacked)", "(attacked)"] if dataset == "ensemble" and model.endswith("1") else ["–", "–"]
                    continue
                cells += [_share([v[0] if v else None for v in verdicts]), _share([v[1] if v else None for v in verdicts])]
            mean = f"{statistics.fmean(psnr):.1f}" if psnr else "–"
            lines.append(f"| {sel[0]['model']} | {method} | {len(sel)} | {mean} | "
                         f"{sum(bool(r['success']) for r in sel)}/{len(sel)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="the grid's results folder (resumed)")
    parser.add_argument("--single", nargs="*", default=SINGLE, help="methods against Lite0 alone")
    parser.add_argument("--ensemble", nargs="*", default=ENSEMBLE, help="methods against the ensemble")
    args = parser.parse_args(argv)
    rows = []
    for dataset, methods in (("lite0", args.single), ("ensemble", args.ensemble)):
        if not methods:
            continue
        folder = args.results / dataset
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "transfer.toml"
        path.write_text(preset_text(dataset, methods))
        experiments.run_grid(experiments.load_preset(str(path)), folder, progress=True)
        rows += [r for r in experiments.read_results(folder) if r["dataset"] == dataset and r["method"] in methods]
    print(table(rows, list(dict.fromkeys(args.single + args.ensemble))))


if __name__ == "__main__":
    main()
