"""The mnd command line: protect photos against image classifiers and face recognisers.

``mnd attack`` protects photos; ``mnd models`` lists the models; ``mnd data``
selects and checks the paper's test sets. Bad input ends with one line,
``mnd: error: <file>: <problem>``, and exit status 2; results are written
atomically, so nothing already on disk is lost or half-written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mnd import __version__
from mnd.errors import InputError, MndError, ModelUnavailableError

EXIT_USAGE = 2


def _add_attack(sub: argparse._SubParsersAction) -> None:
    from mnd.experiments import METHODS

    p = sub.add_parser(
        "attack",
        help="make adversarial (privacy-preserving) versions of photos",
        description="Resize and centre-crop each photo to the model's input, attack it, and write "
        "DIR/<stem>.png (8-bit, exactly what was checked) and DIR/metrics.csv.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders of images")
    p.add_argument("--model", default="efficientnet_lite0", help="a name from `mnd models` (default: %(default)s)")
    p.add_argument("--method", default="mnd", choices=METHODS, metavar="METHOD", help=f"one of {', '.join(METHODS)}")
    p.add_argument("--targeted", action="store_true", help="aim at the least-likely class (eq. 5)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--task", choices=["imagenet", "faces"], help="which preset of betas (default: the model's task)")
    p.add_argument("--hparams", type=Path, help="a hyper-parameter TOML file (default: the packaged one)")
    p.add_argument("--max-iter", type=int, help="override the preset's iteration limit")
    p.add_argument("--straight-through", action="store_true", help="one forward pass per iteration (see docs)")
    p.add_argument("--batch-size", type=int, default=8, help="images attacked together (default: %(default)s)")
    p.add_argument("--gallery", type=Path, metavar="DIR", help="face gallery: one sub-folder of photos per identity")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for the anchors' randomness (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_attack)


def _cmd_attack(args: argparse.Namespace) -> int:
    from mnd.attack_cli import attack_files

    return attack_files(args)


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models and whether each works offline")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from mnd import models
    from mnd.experiments import format_table

    rows = []
    for name in sorted(models.REGISTRY):
        s = models.REGISTRY[name]
        rows.append(
            {
                "model": name,
                "task": s.task,
                "input": f"{s.input_size}x{s.input_size}",
                "available": "yes" if models.available(name) else "no (needs download)",
                "weights": s.weights_hint,
            }
        )
    print(format_table(rows, ["model", "task", "input", "available", "weights"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mnd`` (all sub-commands)."""
    parser = argparse.ArgumentParser(prog="mnd", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"mnd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_attack(sub)
    _add_models(sub)
    from mnd.cli_data import register as add_data

    add_data(sub)
    from mnd.cli_book import register as add_book

    add_book(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mnd`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"mnd: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ModelUnavailableError as exc:
        print(f"mnd: error: model unavailable: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MndError as exc:
        print(f"mnd: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mnd: interrupted; results written so far are intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
