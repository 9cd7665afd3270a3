"""The ``mnd book`` command: run a preset's grid, execute the notebooks, build the HTML book.

``mnd.cli`` calls :func:`register` with its sub-parsers, then ``args.func(args)``.

    mnd book --preset embedded                      # offline, CPU (make book)
    mnd book --preset paper --set imagenet_root=/data/ILSVRC2012 --set vggface2_root=/data/VGGFace2
    mnd book --preset my-preset.toml --results results/mine --out book/_build/mine
    mnd book --preset paper --results /shared/r --shard 3/8   # one shard of the grid, no book (a job array)

Everything that can be refused is refused before any work, each one line and
exit status 2: the preset and its ``--set`` values (the device included, as
``mnd attack --device`` checks it: one this machine does not have is refused
here, not when the first model is moved to it), a ``results.csv`` that mnd
did not write (or, with ``--no-run``, none, or one without rows), then the
book source folder.

``mnd book`` never overwrites a file it did not write. It lists what it
writes into the source folder, with each file's SHA-256, in
``notebooks/.mnd-book-source`` there, and on a rerun replaces only the files
of that list that are unchanged since; a file it would write that is not on
the list, or was changed, is refused and left as it is. The checkout's
``book/``, which had no list before, keeps working: the files at its
generated paths are taken as mnd's until it has one.
"""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path

from mnd import book, experiments
from mnd.cli.attack import check_device
from mnd.data.imageio import check_writable_dir
from mnd.data.paths import project_root
from mnd.errors import InputError


def _load_preset(args: argparse.Namespace) -> experiments.Preset:
    try:
        return experiments.load_preset(args.preset, args.set or ())
    except (ValueError, TypeError, KeyError) as exc:  # a value of the wrong type that the preset check missed
        where = "--set" if args.set else args.preset
        raise InputError(where, f"invalid preset value ({exc})") from None


def _check_device(args: argparse.Namespace, preset: experiments.Preset) -> None:
    """The preset's device must be one this machine has (as ``mnd attack --device``), before any work."""
    try:
        check_device(preset.device)
    except InputError as exc:
        given = any(item.partition("=")[0].strip() == "device" for item in args.set or ())
        where = "--set device" if given else preset.path
        raise InputError(where, exc.problem if given else f"device: {exc.problem}") from None


def _check_folders(args: argparse.Namespace, preset: experiments.Preset) -> None:
    """The results and the book source folder must be usable, and the folders the book writes writable.

    Nothing is written before the checks of :func:`mnd.book.check_build` pass
    (a foreign ``results.csv``, a source folder holding files mnd did not write).
    """
    checkout = book.notebook_dir().is_dir()  # without one, book.build says that it needs a source checkout
    if args.shard is not None:  # a shard writes no book: only its results folder matters
        book.check_results(args.results if args.results is not None else project_root() / "results" / preset.name)
    elif checkout:
        book.check_build(preset, results=args.results, source=args.source, run=not args.no_run)
    if not checkout:
        return
    for option, folder in (("results", args.results), ("build", args.out), ("book source", args.source)):
        if folder is not None:
            check_writable_dir(folder, f"{option} folder")


def _shard(args: argparse.Namespace, preset: experiments.Preset) -> int:
    """``--shard I/N``: run that shard of the grid into the results folder and stop (no notebooks, no HTML)."""
    shard = experiments.Shard.parse(args.shard)
    results = args.results if args.results is not None else project_root() / "results" / preset.name
    start = time.perf_counter()
    report = experiments.run_grid(preset, results, progress=not args.quiet, shard=shard)
    print(f"shard {shard.name}: {report.computed} computed, {report.reused} already done, {report.failed} failed "
          f"in {time.perf_counter() - start:.0f} s; rows in {experiments.shard_csv(Path(results), shard)}")
    print("when every shard is done, build the book with the same --preset and --results (without --shard)")
    return 1 if report.failed else 0


def _book(args: argparse.Namespace) -> int:
    preset = _load_preset(args)
    if args.shard is not None:
        if args.no_run:
            raise InputError("--shard", "runs a part of the grid; it cannot be combined with --no-run")
        experiments.Shard.parse(args.shard)  # a bad I/N is reported before any folder is touched
    _check_device(args, preset)
    _check_folders(args, preset)
    if args.shard is not None:
        return _shard(args, preset)
    start = time.perf_counter()
    report = book.build(preset, results=args.results, out=args.out, source=args.source, run=not args.no_run,
                        progress=not args.quiet)
    total = time.perf_counter() - start
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items())
    print(f"book built in {total:.0f} s ({steps}); results in {report.results}")
    print(report.index.resolve())
    return 0


SOURCE_EPILOG = """\
source folder: mnd book writes into it the static pages (intro.md, reading-notes.md,
_toc.yml; not into book/, where they are the sources), notebooks/<page>.ipynb and
reproduction.md, and lists them with their SHA-256 in notebooks/.mnd-book-source.
It never overwrites a file it did not write: a rerun replaces only files of that
list that are unchanged since; any other file at those paths (or one changed since)
is refused before anything runs, and left as it is. Other files are never touched.

Checked before any work, each one line and exit status 2: the preset and --set
values (a device this machine does not have), a results.csv that mnd did not write
(with --no-run: none, or one without rows), then the source folder.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``book`` command to ``subparsers``.

    >>> parser = argparse.ArgumentParser(prog="mnd")
    >>> register(parser.add_subparsers(dest="command", required=True))
    >>> parser.parse_args(["book", "--preset", "tiny", "--set", "max_iter=5"]).set
    ['max_iter=5']
    """
    p = subparsers.add_parser(
        "book",
        help="run a preset's experiments and build the reproducibility book (HTML)",
        description=textwrap.fill(
            "Run the preset's grid (results already on disk are reused), execute every notebook with papermill "
            "into the book's source folder, write the 'what reproduced' page from the results, build the HTML "
            "with Jupyter Book, and print the path of its index.html.", 80),
        epilog=SOURCE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", required=True, metavar="NAME_OR_TOML",
                   help="a packaged preset (embedded, paper, tiny) or the path of a preset .toml file")
    p.add_argument("--results", type=Path, metavar="DIR", help="results folder (default: results/<preset>)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="build folder (default: book/_build/<preset>; the HTML goes to DIR/_build/html)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a preset value, e.g. max_iter=200, device=cuda, imagenet_root=/data/ILSVRC2012 "
                   "(repeatable)")
    p.add_argument("--source", type=Path, metavar="DIR",
                   help="book source folder for the executed notebooks (default: book/); mnd book never overwrites "
                   "a file there that it did not write (see below)")
    p.add_argument("--no-run", action="store_true", help="do not run the grid; use the results folder as it is")
    p.add_argument("--shard", metavar="I/N",
                   help="run only shard I of N of the grid (1 <= I <= N) into --results and stop; shards can run at "
                   "once on machines sharing the folder, and a later run without --shard merges them and builds the "
                   "book")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_book)
