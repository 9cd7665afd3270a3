"""The mnd command line: protect photos against image classifiers and face recognisers.

``mnd attack`` protects photos; ``mnd models`` lists the models; ``mnd data``
selects and checks the paper's test sets; ``mnd book`` builds the
reproducibility book. Bad input ends with one line,
``mnd: error: <file or option>: <problem>``, and exit status 2; Ctrl-C ends
with one line and status 130. Results are written atomically, so nothing
already on disk is lost or half-written, and an output never overwrites an
input.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from mnd import __version__
from mnd.errors import InputError, MndError, ModelUnavailableError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

GUIDE = ("user guide: the part \"Using mnd\" of the book that `mnd book` builds, in "
         "book/_build/<preset>/_build/html/ (install.html first){page}")
"""The paragraph every ``--help`` ends with; ``{page}`` names the command's own page of the guide."""

GUIDE_PAGES = {
    "attack": "guide_columns.html (the columns of metrics.csv)",
    "protect": "guide_protect.html (what protection does and does not promise)",
    "book": "guide_book.html (presets, --set, GPUs, papermill)",
    "mos": "guide_study.html (running a rating study)",
    "data": "guide_book.html (presets and data sets)",
}
"""Sub-command -> its page of the user guide."""


ATTACK_EPILOG = """\
anchors: bim, pgd, mifgsm, di2fgsm and rfgsm run torchattacks' defaults (eps 8/255,
alpha 2/255, 10 steps). Not in the paper: bim_min and pgd_min (the smallest eps on the
8-bit grid up to 16/255), ddn, fmn_l2, fmn_linf, alma_ssim and cw_l2 (adversarial-library's
minimum-norm attacks, installed from requirements-advlib.txt), and mnd_refine (MND, then
our refinement along the decision boundary; its knobs in mnd/presets/refine.toml).
--hparams, --max-iter, --straight-through and --task apply to the MND methods only (to
mnd_refine's MND phase) and are refused with an anchor; --margin applies to every method.

outputs: DIR/<stem>.png and DIR/metrics.csv, one row per PNG naming it (file) and its
content (sha256); DIR must not be a folder the photos are read from (outputs never
overwrite inputs), and an existing metrics.csv there must be one that mnd wrote (its rows
are kept). A rerun of the same method, model and setting replaces its own PNGs and rows;
a PNG that another method or setting (or mnd protect) made is never replaced: give each
its own --out. An interrupted run (Ctrl-C, or a kill) never leaves a row beside a file it
does not describe: the old row is withdrawn before its PNG is replaced.

exit status:
  0    every attacked image was made adversarial (an image that cannot be
       attacked, e.g. the model's output on it is not finite, does not count;
       its note in metrics.csv says why)
  1    some attacked images were not made adversarial (the last line says how many;
       their rows in metrics.csv say success=False)
  2    bad input: a file, folder or option that cannot be used (one line on stderr)
  130  interrupted (Ctrl-C); results written so far are intact
"""


def _add_attack(sub: argparse._SubParsersAction) -> None:
    from mnd.experiments.methods import METHODS

    p = sub.add_parser(
        "attack",
        help="make adversarial (privacy-preserving) versions of photos",
        description="Resize and centre-crop each photo to the model's input, attack it, and write "
        "DIR/<stem>.png (8-bit, exactly what was checked) and DIR/metrics.csv.",
        epilog=ATTACK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders of images")
    p.add_argument("--model", default="efficientnet_lite0", help="a name from `mnd models` (default: %(default)s)")
    p.add_argument("--method", default="mnd", metavar="METHOD",
                   help=f"one of {', '.join(METHODS)} (default: %(default)s)")
    p.add_argument("--targeted", action="store_true", help="aim at the least-likely class (eq. 5)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (not an input folder)")
    p.add_argument("--task", choices=["imagenet", "faces"],
                   help="which preset of betas (default: the model's task; MND methods only)")
    p.add_argument("--hparams", type=Path, metavar="TOML",
                   help="a hyper-parameter TOML file (default: the packaged one; MND methods only)")
    p.add_argument("--max-iter", type=int, metavar="N",
                   help="override the preset's iteration limit, at least 1 (MND methods only)")
    p.add_argument("--margin", type=float, metavar="M",
                   help="success needs a logit lead of at least M, >= 0 (default: the hyper-parameter "
                   "file's, 0: the paper's argmax; not in the paper)")
    p.add_argument("--straight-through", action="store_true",
                   help="one forward pass per iteration (see docs; MND methods only)")
    p.add_argument("--check", action="append", default=[], metavar="MODEL",
                   help="a model that never gives a gradient, only reads the saved file: metrics.csv says whether "
                   "its label changed, on the file and after JPEG 75 (repeatable; same input size as --model)")
    p.add_argument("--diversity", type=float, metavar="P",
                   help="transfer booster: probability of input diversity (DI2FGSM's random resize and pad) at "
                   "each step, 0 to 1 (MND methods only; not in the paper)")
    p.add_argument("--translation", type=int, metavar="K",
                   help="transfer booster: smooth the adversarial gradient with a KxK Gaussian (TI), K odd, 3 to 31 "
                   "(MND methods only; not in the paper)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="images attacked together, at least 1 (default: %(default)s)")
    p.add_argument("--gallery", type=Path, metavar="DIR",
                   help="face gallery: one sub-folder of photos per identity, at least two identities")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for the anchors' randomness, 0 to 2**32-1 (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_attack)


def _cmd_attack(args: argparse.Namespace) -> int:
    from mnd.cli.attack import attack_files

    return attack_files(args)


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models and whether each works offline")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from mnd import models
    from mnd.experiments.rows import format_table

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


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, ``mnd: error: <where>: <problem>``, and exit status 2."""

    def error(self, message: str) -> NoReturn:  # noqa: D102 - argparse's hook
        match = re.match(r"argument ([^:]+): (.*)", message, re.DOTALL)
        where, problem = (match.group(1), match.group(2)) if match else (self.prog, message)
        problem = " ".join(problem.split())
        self.exit(EXIT_USAGE, f"mnd: error: {where}: {problem} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mnd`` (all sub-commands)."""
    parser = _Parser(prog="mnd", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"mnd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_attack(sub)
    _add_models(sub)
    from mnd.cli.data import register as add_data

    add_data(sub)
    from mnd.cli.book import register as add_book

    add_book(sub)
    from mnd.cli.mos import register as add_mos

    add_mos(sub)
    from mnd.cli.protect import register as add_protect

    add_protect(sub)
    _point_to_guide(parser, "")
    for name, command in sub.choices.items():
        page = GUIDE_PAGES.get(name)
        _point_to_guide(command, f"; this command: {page}" if page else "")
    return parser


def _point_to_guide(parser: argparse.ArgumentParser, page: str) -> None:
    """End ``parser``'s help with :data:`GUIDE` (after its own epilog, if any)."""
    line = textwrap.fill(GUIDE.format(page=page), 80, break_on_hyphens=False)
    parser.epilog = f"{parser.epilog.rstrip()}\n\n{line}" if parser.epilog else line


def _error(where: object, problem: object) -> None:
    """Print ``mnd: error: <where>: <problem>`` as one line."""
    print(f"mnd: error: {where}: {' '.join(str(problem).split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mnd`` console script; returns the exit status.

    Everything, the lazy imports of torch and the models included, runs inside
    the handlers below: a user mistake is one line and status 2, Ctrl-C is one
    line and status 130, never a traceback.
    """
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, or a usage error already printed
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
        from mnd.core.memory import keep_freed_memory

        keep_freed_memory()  # attacks reuse freed pages instead of faulting them in every iteration
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("mnd: interrupted; results written so far are intact", file=sys.stderr)
        return EXIT_INTERRUPTED
    except InputError as exc:
        _error(exc.where, exc.problem)
        return EXIT_USAGE
    except ModelUnavailableError as exc:
        _error("model unavailable", exc)
        return EXIT_USAGE
    except MndError as exc:
        print(f"mnd: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader of stdout went away (mnd models | head -1)
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # a file the checks above could not foresee (disk full, removed meanwhile)
        _error(exc.filename or "mnd", exc.strerror or exc)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
