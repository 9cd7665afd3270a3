"""The ``mnd data`` command: choose, verify and export the test images.

``mnd.cli`` calls :func:`register` with its sub-parsers, then ``args.func(args)``;
every handler returns the exit status. :class:`mnd.errors.InputError` is left
to ``mnd.cli``, which prints it as one line and exits with status 2. Output
paths are checked (created and written to) before any work starts.

    mnd data select imagenet --root PATH [--seed N] [--out CSV] [--per-class 10]
    mnd data select vggface2 --root PATH [--seed N] [--out CSV] [--identities 10 --per-identity 10]
    mnd data check imagenet --root PATH [--manifest CSV]
    mnd data check vggface2 --root PATH [--manifest CSV]
    mnd data embedded [--out DIR]

``mnd data embedded`` never overwrites a file: a ``<name>.png`` already in
``DIR`` is left as it is when it holds exactly that photo's pixels (a rerun),
and refused otherwise (one line naming it, exit status 2), before any photo
is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnd import data
from mnd.data.imageio import check_writable_dir, remove_created
from mnd.errors import InputError

DEFAULT_EMBEDDED_DIR = Path("out/embedded")


def _check_manifest_out(path: Path) -> Path | None:
    """Refuse a manifest path that cannot be written, before the (long) selection runs.

    Returns:
        The top-most folder this check created, if any (removed again when
        the selection fails).
    """
    if path.is_dir():
        raise InputError(path, "is a folder; --out takes the manifest's file name")
    return check_writable_dir(path.parent, "manifest's folder")


def _print_selection(selection: data.Selection, out: Path) -> None:
    for item in selection.skipped:
        print(f"skipped {item.path}: {item.reason}", file=sys.stderr)
    print(selection.summary())
    print(f"wrote {len(selection.rows)} rows to {out}")


def _select_imagenet(args: argparse.Namespace) -> int:
    created = _check_manifest_out(args.out)
    try:
        selection = data.select_imagenet10(args.root, seed=args.seed, per_class=args.per_class, split=args.split,
                                           labels=args.labels, progress=not args.quiet)
    except BaseException:
        remove_created(args.out.parent, created)
        raise
    out = data.write_manifest(selection, args.out)
    _print_selection(selection, out)
    return 0


def _select_vggface2(args: argparse.Namespace) -> int:
    created = _check_manifest_out(args.out)
    try:
        selection = data.select_vggface2_10(args.root, seed=args.seed, identities=args.identities,
                                            per_identity=args.per_identity, split=args.split,
                                            cropper=data.vggface2_face, progress=not args.quiet)
    except BaseException:
        remove_created(args.out.parent, created)
        raise
    out = data.write_manifest(selection, args.out)
    _print_selection(selection, out)
    return 0


def _check(args: argparse.Namespace) -> int:
    report = data.check_manifest(args.root, args.manifest, split=args.split, progress=not args.quiet)
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def _embedded(args: argparse.Namespace) -> int:
    """``mnd data embedded``: never overwrites a file (see :func:`mnd.data.export_embedded`)."""
    created = check_writable_dir(args.out)
    names = args.names or data.EMBEDDED_NAMES
    there = {name for name in names if (args.out / f"{name}.png").exists()}
    try:
        paths = data.export_embedded(args.out, names)
    except BaseException:
        remove_created(args.out, created)
        raise
    for path in paths:
        print(path)
    kept = f"; {len(there)} already there with the same pixels, left as they are" if there else ""
    print(f"wrote {len(paths) - len(there)} images to {args.out}{kept}")
    return 0


def _common(parser: argparse.ArgumentParser, *, manifest: Path, select: bool) -> None:
    parser.add_argument("--root", type=Path, required=True, help="your copy of the data set")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    if select:
        parser.add_argument("--seed", type=int, default=0, help="seed of the selection rule (default 0)")
        parser.add_argument("--out", type=Path, default=manifest, help=f"manifest to write (default {manifest})")
    else:
        parser.add_argument("--manifest", type=Path, default=manifest,
                            help=f"manifest to check against (default {manifest})")


def _add_select(subparsers: argparse._SubParsersAction) -> None:
    select = subparsers.add_parser("select", help="choose the test images and write a manifest")
    which = select.add_subparsers(dest="dataset", required=True, metavar="{imagenet,vggface2}")

    imagenet = which.add_parser("imagenet", help="10 images of each of ImageNet classes 0-9 (section IV-B-1)")
    _common(imagenet, manifest=data.DEFAULT_MANIFESTS["imagenet10"], select=True)
    imagenet.add_argument("--per-class", type=int, default=10, help="images per class (default 10)")
    imagenet.add_argument("--split", default="val", help="sub-folder of ROOT to use if present (default val)")
    imagenet.add_argument("--labels", type=Path, default=None,
                          help="labels file for a flat val/ folder (default: found beside the images)")
    imagenet.set_defaults(func=_select_imagenet)

    vggface2 = which.add_parser("vggface2", help="10 face images of each of 10 identities (section IV-C-1)")
    _common(vggface2, manifest=data.DEFAULT_MANIFESTS["vggface2_10"], select=True)
    vggface2.add_argument("--identities", type=int, default=10, help="how many identities (default 10)")
    vggface2.add_argument("--per-identity", type=int, default=10, help="images per identity (default 10)")
    vggface2.add_argument("--split", default=None,
                          help="sub-folder of ROOT holding the identities (default: ROOT, then train; "
                          "test is refused: the classifier never saw its identities)")
    vggface2.set_defaults(func=_select_vggface2)


def _add_check(subparsers: argparse._SubParsersAction) -> None:
    check = subparsers.add_parser("check", help="verify a local copy against a manifest (exit 1 if anything differs)")
    which = check.add_subparsers(dest="dataset", required=True, metavar="{imagenet,vggface2}")
    imagenet = which.add_parser("imagenet", help="check ImageNet-10")
    _common(imagenet, manifest=data.DEFAULT_MANIFESTS["imagenet10"], select=False)
    imagenet.add_argument("--split", default="val", help="sub-folder of ROOT to use if present (default val)")
    imagenet.set_defaults(func=_check)
    vggface2 = which.add_parser("vggface2", help="check VGGFace2-10")
    _common(vggface2, manifest=data.DEFAULT_MANIFESTS["vggface2_10"], select=False)
    vggface2.add_argument("--split", default=None,
                          help="sub-folder of ROOT holding the identities (default: ROOT, then train; "
                          "test is refused: the classifier never saw its identities)")
    vggface2.set_defaults(func=_check)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command and its sub-commands to ``subparsers``.

    >>> parser = argparse.ArgumentParser(prog="mnd")
    >>> register(parser.add_subparsers(dest="command", required=True))
    >>> str(parser.parse_args(["data", "embedded", "--out", "x"]).out)
    'x'
    """
    parser = subparsers.add_parser("data", help="choose, verify and export test images")
    commands = parser.add_subparsers(dest="data_command", required=True,
                                     metavar="{select,check,embedded}")
    _add_select(commands)
    _add_check(commands)
    embedded = commands.add_parser(
        "embedded", help="export the 7 photos shipped by installed packages as PNG",
        description="Write the embedded photos as DIR/<name>.png. Never overwrites a file: a <name>.png already "
        "in DIR is left as it is when it holds exactly that photo's pixels (a rerun), and refused otherwise "
        "(exit status 2, nothing written).")
    embedded.add_argument("--out", type=Path, default=DEFAULT_EMBEDDED_DIR, metavar="DIR",
                          help=f"folder to write (default {DEFAULT_EMBEDDED_DIR}); files already there are never "
                          "overwritten")
    embedded.add_argument("--names", nargs="+", choices=data.EMBEDDED_NAMES, default=None,
                          help="only these images (default all)")
    embedded.set_defaults(func=_embedded)
