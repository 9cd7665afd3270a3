"""The ``mnd mos`` commands: run the subjective test (section IV-B-5) in a browser and tabulate it.

``mnd.cli`` calls :func:`register` with its sub-parsers, then ``args.func(args)``.

    mnd mos serve results/embedded --study pilot --dataset imagenet --setting targeted
    mnd mos tables results/embedded --study pilot        # -> results/embedded/mos/pilot_tables.csv
    mnd mos export results/embedded --study pilot        # -> results/embedded/mos/pilot_ratings.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mnd import experiments
from mnd.study import draw, server, store, tables
from mnd.errors import InputError


def _study(args: argparse.Namespace) -> store.Study:
    """Create (or reuse) the study when --dataset/--setting are given, else open the existing one."""
    store.check_name(args.study)
    if not (args.results / experiments.RESULTS_CSV).is_file():
        raise InputError(args.results, f"no {experiments.RESULTS_CSV} here: not a grid results folder")
    given = getattr(args, "dataset", None), getattr(args, "setting", None)
    if given == (None, None):
        return store.open_study(args.results, args.study)
    if None in given:
        raise InputError("--setting" if given[1] is None else "--dataset", "give both --dataset and --setting")
    return draw.create_study(args.results, args.study, args.dataset, args.setting, seed=args.seed,
                                     images=args.images, controls=args.controls, anchors=args.anchors)


def _serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise InputError("--port", f"{args.port} is not a port number (0 to 65535; 0 picks a free one)")
    return server.serve(_study(args), args.host, args.port)


def _tables(args: argparse.Namespace) -> int:
    control_limit = tables.check_control_limit(args.control_limit, "--control-limit")
    study = _study(args)
    out = args.out or args.results / "mos" / f"{args.study}_tables.csv"
    report = tables.write_tables(study, out, control_limit=control_limit)
    print(report.summary())
    print(out)
    return 0


def _export(args: argparse.Namespace) -> int:
    study = _study(args)
    out = args.out or args.results / "mos" / f"{args.study}_ratings.csv"
    count = tables.export_ratings(study, out)
    print(f"{count} ratings")
    print(out)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", type=Path, metavar="RESULTS_DIR", help="the grid's results folder (results.csv, PNGs)")
    p.add_argument("--study", required=True, metavar="NAME",
                   help="the study's name; its file is RESULTS_DIR/mos/NAME.sqlite")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``mos`` command (``serve``, ``tables``, ``export``) to ``subparsers``.

    >>> parser = argparse.ArgumentParser(prog="mnd")
    >>> register(parser.add_subparsers(dest="command", required=True))
    >>> args = parser.parse_args(["mos", "serve", "results", "--study", "s1", "--port", "0"])
    >>> args.host, args.port, args.seed
    ('127.0.0.1', 0, 0)
    """
    mos_parser = subparsers.add_parser(
        "mos", help="the subjective test in a browser: serve it, export the ratings, compute the MOS tables",
        description="Section IV-B-5's subjective test: raters compare MND and an anchor side by side on TABLE V's "
        "scale in a local web page; ratings go to RESULTS_DIR/mos/<study>.sqlite as they are given.")
    sub = mos_parser.add_subparsers(dest="mos_command", required=True, metavar="ACTION")

    p = sub.add_parser("serve", help="serve the rating page (creates the study on first use)",
                       description="Serve the study's rating page until Ctrl-C. The first time, give --dataset and "
                       "--setting to draw the study; later, the same values (or none) reuse it.")
    _common(p)
    p.add_argument("--dataset", help="data set of the results folder (needed to create the study)")
    p.add_argument("--setting", choices=list(experiments.SETTINGS), help="attack setting (needed to create the study)")
    p.add_argument("--images", type=int, default=8, help="images in the study (default: %(default)s, as the paper)")
    p.add_argument("--controls", type=int, default=2,
                   help="hidden control pairs, the clean image against itself, 0 to "
                   f"{draw.MAX_CONTROLS} (default: %(default)s)")
    p.add_argument("--anchors", nargs="+", metavar="ANCHOR",
                   help="anchors MND is compared with (default: every MOS anchor in the results)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw and of each rater's order (default: 0)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only; 0.0.0.0: the network)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0 picks a free one)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("tables", help="compute the MOS tables (Tables III/IV/VIII/IX layout) as CSV",
                       description="Flip each score to 'MND versus the anchor', leave out raters who failed the "
                       "control pairs, and write per image and anchor the mean and std, plus Average rows. A text "
                       "cell that a spreadsheet would run as a formula (starting with =, +, -, @) gets a leading '.")
    _common(p)
    p.add_argument("--out", type=Path, metavar="CSV", help="output (default: RESULTS_DIR/mos/<study>_tables.csv)")
    p.add_argument("--control-limit", type=float, default=tables.CONTROL_LIMIT,
                   help="leave out raters whose mean |score| on the control pairs is above this, "
                   "a finite number >= 0 (default: %(default)s)")
    p.set_defaults(func=_tables)

    p = sub.add_parser("export", help="write every raw rating as CSV",
                       description="Write every raw rating as CSV, one row per rating. A text cell that a "
                       "spreadsheet would run as a formula (starting with =, +, -, @) gets a leading '.")
    _common(p)
    p.add_argument("--out", type=Path, metavar="CSV", help="output (default: RESULTS_DIR/mos/<study>_ratings.csv)")
    p.set_defaults(func=_export)
