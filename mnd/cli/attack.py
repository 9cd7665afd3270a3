"""``mnd attack``: photos in, protected 8-bit PNGs and metrics.csv out.

Everything that can be checked before the work starts is checked first, in
this order, each failure one :class:`mnd.errors.InputError` (exit status 2):
the options (:func:`check_options`, including the hyper-parameter file), the
face gallery's layout, the output folder (never an input folder, never
inside the gallery, an existing ``metrics.csv`` must be ours, and it must be
writable), then every photo is read. Only then is the model loaded and the
attack run. Exit status: 0 when every attacked image was made adversarial,
1 when some were not (:data:`EXIT_NOT_ALL_ADVERSARIAL`).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from mnd import data, experiments, models
from mnd.core import anchors
from mnd.core.config import (
    BATCH_MAX,
    HPARAMS_FILE,
    MAX_ITER_RULE,
    SEED_MAX,
    config_for,
    valid_diversity,
    valid_margin,
    valid_max_iter,
    valid_translation,
)
from mnd.data import faces
from mnd.data.faces import gallery_photos
from mnd.data.imageio import check_writable_dir, list_images, load_rgb, png_bytes, remove_created, to_tensor
from mnd.data.outputs import OutputFolder
from mnd.errors import InputError
from mnd.protect import unseen
from mnd.experiments.methods import mnd_variant
from mnd.experiments.rows import COLUMNS, METRICS_CSV, RowContext

EXIT_ALL_ADVERSARIAL = 0
EXIT_NOT_ALL_ADVERSARIAL = 1
ANCHOR_IGNORED = ("--hparams", "--max-iter", "--straight-through", "--task", "--diversity", "--translation")
"""Options of MND that the anchors (fixed budgets or their own) cannot use."""


@dataclass(frozen=True)
class InputImage:
    """One image to attack: its output name, tensor and any conversion note."""

    name: str
    tensor: torch.Tensor
    note: str | None


@dataclass(frozen=True)
class Options:
    """``mnd attack``'s options after validation."""

    spec: models.ModelSpec
    method: str
    task: str
    device: str
    overrides: dict[str, object]
    margin: float | None = None
    check: tuple[str, ...] = ()


_NEEDS_GALLERY = "{} returns embeddings: give --gallery DIR (one sub-folder of photos per identity)"


def _warn(message: str) -> None:
    print(f"mnd: note: {message}", file=sys.stderr)


def check_margin(margin: float | None) -> None:
    """InputError naming ``--margin`` unless it is absent or a finite number >= 0."""
    if margin is not None and not valid_margin(margin):
        raise InputError("--margin", f"must be a number >= 0, got {margin}")


def check_max_iter(max_iter: int | None) -> None:
    """InputError naming ``--max-iter`` unless it is absent or an integer from 1 to the stated maximum."""
    if max_iter is not None and not valid_max_iter(max_iter):
        raise InputError("--max-iter", f"must be {MAX_ITER_RULE}, got {max_iter}")


def check_device(name: str) -> str:
    """``name`` if it is a torch device this machine has (cpu, cuda, cuda:N, mps).

    Raises:
        InputError: naming ``--device``: not a device string, another device
            type, or a device this machine does not have.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError("--device", f"not a device: {name!r} (use cpu, cuda, cuda:N or mps)") from None
    if device.type == "cpu":
        return name
    with warnings.catch_warnings():  # torch warns when it finds no driver; the error below says so
        warnings.simplefilter("ignore")
        if device.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                raise InputError("--device", f"{name}: no CUDA GPU is available here (torch {torch.__version__})")
            if device.index is not None and device.index >= count:
                raise InputError("--device", f"{name}: this machine has {count} CUDA GPU(s), numbered 0 to {count - 1}")
            return name
        if device.type == "mps":
            if not torch.backends.mps.is_available():
                raise InputError("--device", f"{name}: Apple's MPS is not available here; use cpu")
            return name
    raise InputError("--device", f"unsupported device type {device.type!r} (use cpu, cuda, cuda:N or mps)")


def check_options(args: argparse.Namespace) -> Options:
    """Validate ``mnd attack``'s options once, before any image or model is read.

    For MND methods the hyper-parameter file and the overrides are turned into
    an :class:`mnd.core.config.AttackConfig` here, so a bad file is reported first.

    Raises:
        InputError: naming the option (or the ``--hparams`` file) at fault.
    """
    spec = models.spec(args.model)
    experiments.check_method(args.method)
    mnd_method = experiments.is_mnd(args.method)
    if not mnd_method:
        runs = ("torchattacks' defaults (eps 8/255, alpha 2/255, 10 steps)" if args.method in anchors.ANCHORS
                else "its own budget (see 'mnd attack --help')")
        given = {
            "--hparams": args.hparams is not None,
            "--max-iter": args.max_iter is not None,
            "--straight-through": args.straight_through,
            "--task": args.task is not None,
            "--diversity": getattr(args, "diversity", None) is not None,
            "--translation": getattr(args, "translation", None) is not None,
        }
        for option in ANCHOR_IGNORED:
            if given[option]:
                raise InputError(
                    option,
                    f"does not apply to the anchor {args.method!r}, which runs {runs}; "
                    "it applies to the MND methods only",
                )
    if not 1 <= args.batch_size <= BATCH_MAX:
        raise InputError("--batch-size", f"must be from 1 to {BATCH_MAX}, got {args.batch_size}")
    if not 0 <= args.seed <= SEED_MAX:
        raise InputError("--seed", f"must be between 0 and {SEED_MAX}, got {args.seed}")
    check_max_iter(args.max_iter)
    margin = getattr(args, "margin", None)
    check_margin(margin)
    device = check_device(args.device)
    task = args.task or spec.task
    overrides: dict[str, object] = {"progress": not args.quiet, "straight_through": args.straight_through}
    if args.max_iter is not None:
        overrides["max_iter"] = args.max_iter
    for option, key, valid, rule in (("--diversity", "diversity", valid_diversity, "a probability from 0 to 1"),
                                     ("--translation", "translation", valid_translation,
                                      "0 or an odd kernel size from 3 to 31")):
        value = getattr(args, key, None)
        if value is None:
            continue
        if not valid(value):
            raise InputError(option, f"must be {rule}, got {value}")
        if args.straight_through and value:
            raise InputError(option, "cannot be combined with --straight-through (its one forward pass also decides "
                             "success on the plain image)")
        overrides[key] = value
    check = tuple(unseen.check_names(getattr(args, "check", []) or [], spec.name, same_input_as=spec))
    if mnd_method:
        where = args.hparams if args.hparams is not None else HPARAMS_FILE
        margins = {} if margin is None else {"margin": margin}
        try:
            config_for(mnd_variant(args.method) or args.method, task=task, targeted=args.targeted,
                       hparams=args.hparams, **overrides, **margins)
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(where, f"invalid hyper-parameters ({exc})") from None
    return Options(spec=spec, method=args.method, task=task, device=device, overrides=overrides, margin=margin,
                   check=check)


def _same(a: Path, b: Path) -> bool:
    """The same file or folder (through symbolic and hard links where both exist)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_out(out: Path, inputs: list[Path], images: list[Path], gallery: Path | None) -> None:
    """Refuse an output folder that could overwrite or mix with an input.

    Policy: outputs never overwrite inputs. The output folder may not be an
    input folder or the folder of an input photo, nor the face gallery or a
    folder inside it (the outputs would be enrolled next time).

    Raises:
        InputError: naming the output folder.
    """
    if out.exists() and not out.is_dir():
        raise InputError(out, "output folder exists and is a file")
    folders = [p for p in inputs if p.is_dir()] + [p.parent for p in images]
    for folder in dict.fromkeys(folders):
        if _same(out, folder):
            also = "" if str(folder) == str(out) else f" ({folder})"
            raise InputError(
                out,
                f"the output folder is also an input folder{also}: outputs must never overwrite or mix with the "
                "photos they protect; choose another --out",
            )
    if gallery is not None and _inside(out, gallery):
        raise InputError(out, f"the output folder is inside the --gallery folder {gallery}; choose another --out")


def check_targets(out: Path, items: list[InputImage], images: list[Path]) -> None:
    """No output file may be an input photo or a folder (checked before anything is written)."""
    for target in [out / f"{it.name}.png" for it in items] + [out / METRICS_CSV]:
        if target.is_dir():
            raise InputError(target, "is a folder where an output file goes; move it or choose another --out")
        if target.exists() and any(_same(target, p) for p in images):
            raise InputError(target, "is one of the input photos: outputs must never overwrite inputs")


def load_items(paths: list[Path], spec: models.ModelSpec) -> list[InputImage]:
    """Read and prepare every input before anything is attacked or written.

    Classifier inputs are resized and centre-cropped
    (:func:`mnd.data.prepare_image`); for face models every face MTCNN finds,
    cut as the model takes it (:func:`mnd.data.faces.cut_faces`), becomes one
    image named ``<stem>_face<k>``.
    """
    items: list[InputImage] = []
    for path in paths:
        image = load_rgb(path)
        if image.note:
            _warn(f"{path}: {image.note}")
        if spec.task == "faces":
            crops = faces.cut_faces(image.pixels, spec, where=str(path)).faces
            for k, crop in enumerate(crops):
                name = path.stem if len(crops) == 1 else f"{path.stem}_face{k}"
                items.append(InputImage(name, crop, image.note))
        else:
            items.append(InputImage(path.stem, data.prepare_image(image, spec), image.note))
    names = [it.name for it in items]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(duplicates[0], "two inputs share this file stem; their outputs would overwrite each other")
    return items


def check_gallery(spec: models.ModelSpec, gallery: Path | None) -> None:
    """An embedding model needs a gallery of at least two identities; a classifier ignores one."""
    if spec.embedding:
        if gallery is None:
            raise InputError("--gallery", _NEEDS_GALLERY.format(spec.name))
        gallery_photos(gallery)
    elif gallery is not None:
        _warn(f"--gallery is ignored: {spec.name} is a classifier")


def build_model(spec: models.ModelSpec, gallery: Path | None, device: str) -> nn.Module:
    """The model to attack: a classifier, or an embedding network behind a face gallery."""
    model = models.load(spec.name)
    if spec.embedding:
        if gallery is None:
            raise InputError("--gallery", _NEEDS_GALLERY.format(spec.name))
        model = faces.gallery_from_folder(model, spec, gallery)
    return models.freeze(model.to(device))


def attack_files(args: argparse.Namespace) -> int:
    """Run ``mnd attack`` (see ``mnd attack --help``); returns the exit status.

    Each batch's PNGs are staged under temporary names and published with
    their rows (:class:`mnd.data.outputs.OutputFolder`): no interruption
    leaves a row beside a file it does not describe.
    """
    options = check_options(args)
    spec = options.spec
    out: Path = args.out
    check_gallery(spec, args.gallery)
    paths = list_images(args.inputs)
    if not paths:
        raise InputError(" ".join(map(str, args.inputs)), "no images found")
    check_out(out, [Path(p) for p in args.inputs], paths, args.gallery)
    csv_path = out / METRICS_CSV
    existing: list[dict[str, object]] = list(experiments.read_rows(csv_path, COLUMNS))
    created = check_writable_dir(out)
    written = False
    try:
        with OutputFolder(out) as folder:
            items = load_items(paths, spec)
            check_targets(out, items, paths)
            experiments.check_replaceable(out, [f"{it.name}.png" for it in items], experiments.METRICS,
                                          {"method": args.method, "model": spec.name, "targeted": args.targeted},
                                          {METRICS_CSV: COLUMNS})
            model = build_model(spec, args.gallery, options.device)
            checked = unseen.load_checked(options.check, options.device)
            ctx = RowContext(method=args.method, model=spec.name, targeted=args.targeted)
            rows: list[dict[str, object]] = []
            attacked = won = 0
            batches = range(0, len(items), args.batch_size)
            for start in tqdm(batches, desc="batches", disable=args.quiet or len(items) <= args.batch_size):
                batch = items[start : start + args.batch_size]
                x = torch.stack([it.tensor for it in batch]).to(options.device)
                result = experiments.run_method(
                    model, x, None, args.method, task=options.task, targeted=args.targeted, seed=args.seed,
                    hparams=args.hparams, margin=options.margin,
                    **(options.overrides if experiments.is_mnd(args.method) else {}),
                )
                staged = [folder.stage(f"{it.name}.png", png_bytes(adv)) for it, adv in zip(batch, result.adversarial)]
                new = experiments.result_rows(result, x, [it.name for it in batch], ctx, [it.note for it in batch],
                                              model=model)
                if checked:  # the checked models read the files back, as a user's copy would be
                    reread = torch.stack([to_tensor(load_rgb(file.temporary).pixels) for file in staged])
                    for row, extra in zip(new, unseen.unseen_columns(checked, x.cpu(), reread)):
                        row.update(extra)
                for row, file in zip(new, staged):
                    row.update(file=file.name, sha256=file.sha256)
                names = [file.name for file in staged]
                kept = experiments.without_files(existing, names)
                withdraw = (None if len(kept) == len(existing)
                            else functools.partial(experiments.write_rows, csv_path, kept + rows))
                rows += new
                existing = kept
                folder.publish(staged, withdraw=withdraw,
                               record=functools.partial(experiments.write_rows, csv_path, existing + rows))
                written = True
                attacked += int(result.attacked.sum())
                won += int((result.success & result.attacked).sum())
    except BaseException:
        if not written:
            remove_created(out, created)
        raise

    shown = ["image", "method", "success", "clean_label", "adv_label", "target_label", "psnr", "ssim",
             "changed_ratio", "iterations", "seconds"]
    shown += [c for c in ("margin", "eps") if any(r.get(c) not in (None, 0.0) for r in rows)]
    print(experiments.format_table(rows, shown))
    skipped = len(rows) - attacked
    not_attacked = f"; {skipped} not attacked (see the note column)" if skipped else ""
    print(f"\nwrote {len(rows)} PNGs and {csv_path}{not_attacked}")
    for line in unseen.unseen_summary(rows):
        print(line)
    failed = attacked - won
    if failed:
        print(f"{won}/{attacked} attacked images adversarial; {failed} not made adversarial (exit status 1)")
        return EXIT_NOT_ALL_ADVERSARIAL
    print(f"{won}/{attacked} attacked images adversarial")
    return EXIT_ALL_ADVERSARIAL


__all__ = [
    "COLUMNS", "EXIT_ALL_ADVERSARIAL", "EXIT_NOT_ALL_ADVERSARIAL", "attack_files", "build_model", "check_device",
    "check_options", "check_out", "load_items",
]
