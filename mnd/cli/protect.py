"""``mnd protect``: photos in, full-resolution protected photos and report.csv out.

    mnd protect PHOTO_OR_DIR... --out DIR [--model efficientnet_lite0] [--targeted]
        [--gallery DIR] [--criterion verify|identify]
        [--format png|jpeg --quality Q] [--strength low|mid|high] [--survive jpeg:Q|resize:S ...]
        [--max-iter N] [--device cpu] [--quiet]

Image classifiers: :mod:`mnd.protect.photo`; face models (every face of
each photo at once, ``--gallery`` and ``--criterion``):
:mod:`mnd.protect.faces`.

Checked first, in this order, each failure one :class:`mnd.errors.InputError`
(exit status 2): the options, the face gallery's layout, the output folder
(never an input folder nor inside the gallery; the checks of ``mnd
attack``), every output file (never an input photo, never a folder; an
existing ``report.csv`` must be one ``mnd protect`` wrote), then every photo
is read. Only then is the model loaded. Exit status 0 when every saved photo
is adversarial (and survives every ``--survive`` transform), 1 when some are
not; a photo in which no face is found is skipped (its row says so) and does
not count.
"""

from __future__ import annotations

import argparse
import csv
import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import nn
from tqdm.auto import tqdm

from mnd import models
from mnd.cli.attack import check_device, check_margin, check_max_iter, check_out
from mnd.core import robustness
from mnd.data.faces import gallery_from_folder, gallery_photos
from mnd.data.imageio import LoadedImage, atomic_open, check_writable_dir, list_images, load_rgb, remove_created
from mnd.data.outputs import OutputFolder, Staged
from mnd.errors import InputError
from mnd.protect.photo import (
    FORMATS,
    REPORT_COLUMNS,
    OutputFormat,
    Settings,
    load_strengths,
    parse_survive,
    protect_photo,
)
from mnd.protect import unseen
from mnd.protect.faces import CRITERIA, Criterion, protect_face_photo
from mnd.experiments.rows import REPORT, REPORT_CSV, check_replaceable, format_table, read_rows, without_files

DEFAULT_MODEL = "efficientnet_lite0"
EXIT_ALL_PROTECTED = 0
EXIT_NOT_ALL_PROTECTED = 1

EPILOG = """\
strength levels (mnd/presets/protect.toml): low = 1000 iterations, no survive transform;
mid = 1000 iterations, must survive jpeg:85; high = 2000 iterations, must survive jpeg:75
and resize:0.5; max (for models it never saw) = an ensemble of efficientnet_lite0 and
efficientnet_lite1, margin 20, input diversity and translation invariance, must survive
jpeg:75. --survive, --max-iter, --margin and --model replace the level's values.
unseen models: --check MODEL (repeatable) reads each saved file through MODEL's own
preprocessing and reports whether its label changed, on the file and after JPEG 75. A model
that was not checked may still read the photo correctly.

face models (dlib_resnet_v1; inception_resnet_v1_vggface2 where its weights are cached):
every face MTCNN finds is protected at once, success when every face meets --criterion:
  verify    (default without --gallery) a recogniser that enrolled the original photo no
            longer matches it: descriptor distance above the model's threshold (dlib 0.6);
            with --gallery: no longer within the threshold of its clean identity
  identify  (default with --gallery DIR, one sub-folder of photos per identity) the
            top-1 identity changes; with --targeted it becomes the least-likely one
A photo with no face is skipped (its report row says so; nothing is written for it).

outputs: DIR/<stem>.png (or .jpg) at the photo's full resolution, upright, with no
metadata (no EXIF, GPS, ICC profile or text), and DIR/report.csv, one row per saved
file naming it (file) and its content (sha256); DIR must not be a folder the photos are
read from. Rows of other photos (and of the same photo in another format) are kept; a
rerun with the same model and setting replaces its own file and row; a file that another
model or setting (or mnd attack) made is never replaced. An interrupted run never
leaves a row beside a file it does not describe.

exit status:
  0    every saved photo is adversarial (and survives every --survive transform);
       photos with no face (face models) are skipped and do not count
  1    some are not (their rows in report.csv say success=False or survived=False)
  2    bad input: a file, folder or option that cannot be used (one line on stderr)
  130  interrupted (Ctrl-C); photos and rows written so far are intact
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``protect`` command to ``subparsers``."""
    p = subparsers.add_parser(
        "protect", help="protect whole photos at full resolution (classifiers and face models)",
        description="Protect each photo at its full resolution: the model sees it through its own preprocessing, "
        "the perceptual loss is computed on the whole photo, and success is checked on the saved file read back.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="PHOTO_OR_DIR", help="image files or folders of images")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (not an input folder)")
    p.add_argument("--model", help="an image classifier or face model from `mnd models`, or an ensemble of "
                   "classifiers a+b (default: the level's, else efficientnet_lite0)")
    p.add_argument("--check", action="append", default=[], metavar="MODEL",
                   help="an image classifier that never gives a gradient, only reads each saved file: report.csv "
                   "says whether its label changed, on the file and after JPEG 75 (repeatable)")
    p.add_argument("--targeted", action="store_true", help="aim at the least-likely class (eq. 5); "
                   "for faces, the least-likely identity (--criterion identify)")
    p.add_argument("--gallery", type=Path, metavar="DIR", help="face models: one sub-folder of photos per "
                   "identity (at least two)")
    p.add_argument("--criterion", choices=CRITERIA, help="face models: verify (default without --gallery) or "
                   "identify (default with one)")
    p.add_argument("--format", choices=FORMATS, default="png", help="file format (default: %(default)s)")
    p.add_argument("--quality", type=int, metavar="Q", help="JPEG quality 1-100 with --format jpeg (default: 90)")
    p.add_argument("--strength", default="low", metavar="LEVEL", help="low, mid, high or max (default: %(default)s)")
    p.add_argument("--survive", action="append", metavar="T",
                   help="jpeg:Q (Q from 1 to 100) or resize:S (S from 0.1 to below 1): the saved photo must stay "
                   "adversarial after it too (repeatable)")
    p.add_argument("--no-eot", dest="eot", action="store_false",
                   help="with --survive: follow the plain image's gradient only, not random differentiable "
                   "stand-ins of the transforms (expectation over transformation, the default)")
    p.add_argument("--margin", type=float, metavar="M", help="the logit lead the saved photo's wrong answer needs, "
                   "after every --survive transform too (default: the level's; 0 is any win)")
    p.add_argument("--max-iter", type=int, metavar="N", help="iteration budget per photo, at least 1")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=protect_files)


def check_settings(args: argparse.Namespace) -> tuple[models.ModelSpec, Settings, str]:
    """Validate the options before any photo or model is read: (model, settings, device)."""
    strengths = load_strengths()
    if args.strength not in strengths:
        raise InputError("--strength", f"unknown level {args.strength!r}; known: {', '.join(strengths)}")
    level = strengths[args.strength]
    spec = models.spec(args.model or level.model or DEFAULT_MODEL)
    criterion = check_face_options(spec, args)
    check = tuple(unseen.check_names(getattr(args, "check", []) or [], spec.name, task=spec.task))
    if args.quality is not None and args.format != "jpeg":
        raise InputError("--quality", "applies to --format jpeg only")
    quality = 90 if args.quality is None else args.quality
    try:
        robustness.check_quality(quality)
    except ValueError:
        raise InputError("--quality", f"must be an integer from 1 to 100, got {quality}") from None
    check_max_iter(args.max_iter)
    survive = tuple(parse_survive(s) for s in args.survive) if args.survive is not None else level.survive
    check_margin(getattr(args, "margin", None))
    margin = level.margin if getattr(args, "margin", None) is None else args.margin
    settings = Settings(targeted=args.targeted, output=OutputFormat(args.format, quality), survive=survive,
                        max_iter=args.max_iter or level.max_iter, progress=not args.quiet, criterion=criterion,
                        eot=getattr(args, "eot", True), margin=margin, diversity=level.diversity,
                        translation=level.translation, step_size=level.step_size, check=check)
    return spec, settings, check_device(args.device)


def check_face_options(spec: models.ModelSpec, args: argparse.Namespace) -> Criterion | None:
    """The face criterion (None for an image classifier), after checking --gallery, --criterion and --targeted."""
    if spec.task != "faces":
        for option, given in (("--gallery", args.gallery is not None), ("--criterion", args.criterion is not None)):
            if given:
                raise InputError(option, f"applies to face models only; {spec.name} is an image classifier")
        return None
    if args.gallery is not None and not spec.embedding:
        raise InputError("--gallery", f"{spec.name} names identities itself; --gallery applies to embedding models")
    criterion: Criterion = args.criterion or ("identify" if args.gallery is not None or not spec.embedding
                                              else "verify")
    if criterion == "identify" and spec.embedding and args.gallery is None:
        raise InputError("--criterion", "identify needs --gallery DIR (one sub-folder of photos per identity)")
    if criterion == "verify" and not spec.embedding:
        raise InputError("--criterion", f"verify needs an embedding model; {spec.name} is a classifier (use identify)")
    if args.targeted and criterion != "identify":
        raise InputError("--targeted", "applies to --criterion identify only (it aims at an identity)")
    return criterion


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_targets(out: Path, paths: list[Path], suffix: str) -> list[Path]:
    """The output file of each photo; refused: two photos with one stem, a folder or an input photo in the way."""
    targets = [out / f"{p.stem}{suffix}" for p in paths]
    stems = [t.name for t in targets]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise InputError(twice[0], "two inputs share this file stem; their outputs would overwrite each other")
    for target in [*targets, out / REPORT_CSV]:
        if target.is_dir():
            raise InputError(target, "is a folder where an output file goes; move it or choose another --out")
        if target.exists() and any(_same(target, p) for p in paths):
            raise InputError(target, "is one of the input photos: outputs must never overwrite inputs")
    return targets


def write_report(path: Path, rows: Sequence[Mapping[str, object]]) -> None:
    """``report.csv``, atomically (written with every photo, so an interrupted run keeps its rows)."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=REPORT_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)


def _summary(rows: list[dict[str, object]], report: Path, settings: Settings) -> int:
    """Print the one-screen summary; return the exit status."""
    faces = settings.criterion is not None
    shown = ["image", "success", "survived", *robustness.TRANSFORMS, *(["faces", "distances"] if faces else []),
             "psnr", "width", "height", "iterations", "seconds"]
    if not settings.survive:
        shown.remove("survived")
    print(format_table(rows, shown))
    done = [r for r in rows if r["success"] is not None]  # a photo with no face is skipped
    protected = sum(bool(r["success"]) and r["survived"] is not False for r in done)
    print(f"\nwrote {len(done)} photos ({settings.output.name}) and {report}")
    for name in robustness.TRANSFORMS:
        print(f"  still adversarial after {name}: {sum(bool(r.get(name)) for r in done)}/{len(done)}")
    if faces:
        found = sum(int(r["faces"] or 0) for r in done)
        met = sum(int(r["faces_protected"] or 0) for r in done)
        print(f"{met}/{found} faces protected on the saved files (criterion: {settings.criterion})")
        skipped = len(rows) - len(done)
        if skipped:
            print(f"{skipped} photo(s) skipped: no face found (see the note column)")
    wanted = f" and survive {', '.join(s.name for s in settings.survive)}" if settings.survive else ""
    print(f"{protected}/{len(done)} saved photos adversarial{wanted} (on {rows[0]['model'] if rows else 'the model'}, "
          "the model attacked)")
    lines = unseen.unseen_summary(done)
    for line in lines:
        print(f"  {line}")
    if not lines:
        print(f"  no other model was checked (--check MODEL): {unseen.CAVEAT}")
    return EXIT_ALL_PROTECTED if protected == len(done) else EXIT_NOT_ALL_PROTECTED


def _load(paths: list[Path], spec: models.ModelSpec, checked: Sequence[str] = ()) -> list[LoadedImage]:
    """Read every photo (upright) and refuse one smaller than a classifier's input (or a checked one's), before any
    work."""
    photos = []
    readers = [s for s in [spec, *map(models.spec, checked)] if s.task != "faces"]
    for path in paths:
        photo = load_rgb(path)
        h, w = photo.pixels.shape[:2]
        for s in readers:
            if min(h, w) < s.input_size:
                raise InputError(path, f"image is {w}x{h}, smaller than the {s.input_size}x{s.input_size} that "
                                 f"{s.name} needs")
        photos.append(photo)
    return photos


def _build(spec: models.ModelSpec, gallery: Path | None, device: str) -> nn.Module:
    """The model: a classifier, a face embedding network, or one behind the face gallery enrolled from ``gallery``."""
    model = models.load(spec.name)
    if gallery is not None:
        model = gallery_from_folder(model, spec, gallery)
    return models.freeze(model.to(device))


def protect_files(args: argparse.Namespace) -> int:
    """Run ``mnd protect`` (see ``mnd protect --help``); returns the exit status.

    Rows of photos this run does not protect are kept. Each protected photo
    is staged under a temporary name, checked as re-read from there, and
    published with its row (:class:`mnd.data.outputs.OutputFolder`): no
    interruption leaves a row beside a file it does not describe.
    """
    spec, settings, device = check_settings(args)
    if args.gallery is not None:
        gallery_photos(args.gallery)
    out: Path = args.out
    paths = list_images(args.inputs)
    if not paths:
        raise InputError(" ".join(map(str, args.inputs)), "no images found")
    check_out(out, [Path(p) for p in args.inputs], paths, args.gallery)
    targets = check_targets(out, paths, settings.output.suffix)
    report = out / REPORT_CSV
    try:
        existing: list[dict[str, object]] = list(read_rows(report, REPORT_COLUMNS))
    except InputError:
        raise InputError(report, "exists and is not a report that mnd protect wrote (or is damaged); move it or "
                         "choose another --out") from None
    experiment = {"model": spec.name, "targeted": settings.targeted, "criterion": settings.criterion or ""}
    check_replaceable(out, [t.name for t in targets], REPORT, experiment, {REPORT_CSV: REPORT_COLUMNS})
    created = check_writable_dir(out)
    rows: list[dict[str, object]] = []
    try:
        with OutputFolder(out) as folder:
            photos = _load(paths, spec, settings.check)
            model = _build(spec, args.gallery, device)
            checked = unseen.load_checked(settings.check, device)
            protect = protect_face_photo if settings.criterion is not None else protect_photo
            for photo, target in tqdm(list(zip(photos, targets)), desc="photos", unit="photo",
                                      disable=args.quiet or len(photos) < 2):
                staged: list[Staged] = []

                def stage(path: Path, data: bytes) -> Path:
                    staged.append(folder.stage(path.name, data))
                    return staged[-1].temporary

                row = protect(model, spec, photo, target, settings, device, stage=stage, checked=checked)
                kept = without_files(existing, [target.name], REPORT)
                withdraw = (None if len(kept) == len(existing)
                            else functools.partial(write_report, report, kept + rows))
                rows.append(row)
                existing = kept
                folder.publish(staged, withdraw=withdraw, record=functools.partial(write_report, report,
                                                                                   existing + rows))
    except BaseException:
        if not rows:
            remove_created(out, created)
        raise
    return _summary(rows, report, settings)
