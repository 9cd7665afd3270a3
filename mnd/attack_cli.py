"""``mnd attack``: photos in, protected 8-bit PNGs and metrics.csv out."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mnd import experiments, models
from mnd.errors import InputError
from mnd.experiments import COLUMNS, RowContext
from mnd.imageio import list_images, load_rgb, save_png


@dataclass(frozen=True)
class Item:
    """One image to attack: its output name, tensor and any conversion note."""

    name: str
    tensor: torch.Tensor
    note: str | None


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(out, "output folder exists and is a file")


def _warn(message: str) -> None:
    print(f"mnd: note: {message}", file=sys.stderr)


def load_items(paths: list[Path], spec: models.ModelSpec) -> list[Item]:
    """Read and prepare every input before anything is attacked or written.

    Classifier inputs are resized and centre-cropped; for face models every
    face MTCNN finds becomes one item named ``<stem>_face<k>``.
    """
    items: list[Item] = []
    for path in paths:
        image = load_rgb(path)
        if image.note:
            _warn(f"{path}: {image.note}")
        if spec.task == "faces":
            crops = face_inputs(image.pixels, spec, str(path))
            for k, crop in enumerate(crops):
                name = path.stem if len(crops) == 1 else f"{path.stem}_face{k}"
                items.append(Item(name, crop, image.note))
        else:
            items.append(Item(path.stem, experiments.prepare(image, spec), image.note))
    names = [it.name for it in items]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(duplicates[0], "two inputs share this file stem; their outputs would overwrite each other")
    return items


def face_inputs(pixels: object, spec: models.ModelSpec, where: str) -> torch.Tensor:
    """Every face in a photo, cut as the model expects: dlib chips or MTCNN crops."""
    from mnd import faces

    if spec.name == "dlib_resnet_v1":
        return faces.dlib_face_chips(pixels, where=where).faces
    return faces.crop_faces(pixels, size=spec.input_size, where=where).faces


def build_model(spec: models.ModelSpec, gallery: Path | None, device: str) -> nn.Module:
    """The model to attack: a classifier, or an embedding network behind a face gallery."""
    model = models.load(spec.name)
    if spec.embedding:
        if gallery is None:
            raise InputError("--gallery", f"{spec.name} returns embeddings: give --gallery DIR (one sub-folder per identity)")
        from mnd.faces import Gallery

        model = Gallery.from_folder(model, gallery)
    elif gallery is not None:
        _warn(f"--gallery is ignored: {spec.name} is a classifier")
    return models.freeze(model.to(device))


def attack_files(args: argparse.Namespace) -> int:
    """Run ``mnd attack`` (see ``mnd attack --help``)."""
    out: Path = args.out
    _check_out(out)
    spec = models.spec(args.model)
    experiments.check_method(args.method)
    if args.batch_size < 1:
        raise InputError("--batch-size", "must be at least 1")
    paths = list_images(args.inputs)
    if not paths:
        raise InputError(" ".join(map(str, args.inputs)), "no images found")
    items = load_items(paths, spec)
    model = build_model(spec, args.gallery, args.device)
    task = args.task or spec.task
    overrides: dict[str, object] = {"progress": not args.quiet, "straight_through": args.straight_through}
    if args.max_iter is not None:
        overrides["max_iter"] = args.max_iter

    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "metrics.csv"
    existing = experiments.read_rows(csv_path)
    ctx = RowContext(method=args.method, model=spec.name, targeted=args.targeted)
    rows: list[dict[str, object]] = []
    from tqdm.auto import tqdm

    for start in tqdm(range(0, len(items), args.batch_size), desc="batches", disable=args.quiet or len(items) <= args.batch_size):
        batch = items[start : start + args.batch_size]
        x = torch.stack([it.tensor for it in batch]).to(args.device)
        result = experiments.run_method(
            model, x, None, args.method, task=task, targeted=args.targeted, seed=args.seed, hparams=args.hparams, **overrides
        )
        for it, adv in zip(batch, result.adversarial):
            save_png(adv, out / f"{it.name}.png")
        rows += experiments.result_rows(result, x, [it.name for it in batch], ctx, [it.note for it in batch])
        experiments.write_rows(csv_path, experiments.merge_rows(existing, rows))

    shown = ["image", "method", "success", "clean_label", "adv_label", "target_label", "psnr", "ssim", "changed_ratio", "iterations", "seconds"]
    print(experiments.format_table(rows, shown))
    attacked = [r for r in rows if "already misclassified" not in str(r["note"])]
    won = sum(bool(r["success"]) for r in attacked)
    print(f"\n{won}/{len(attacked)} attacked images adversarial; wrote {len(rows)} PNGs and {csv_path}")
    return 0


__all__ = ["COLUMNS", "attack_files", "load_items", "build_model"]
