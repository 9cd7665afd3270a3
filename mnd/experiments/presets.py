"""Presets: which data sets, models, methods and settings a grid runs (TOML files, ``mnd/presets/book``).

>>> [s.name for s in load_preset("tiny").datasets]
['imagenet', 'faces']
>>> parse_override("max_iter=50")
('max_iter', 50)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import tomllib
import torch

from mnd import models
from mnd.core.config import BATCH_MAX, MAX_ITER, SEED_MAX, TASKS, THREADS_MAX, Task, config_for, valid_margin
from mnd.errors import InputError, read_text_file
from mnd.experiments.methods import METHODS, check_method
from mnd.protect.unseen import check_names as check_unseen
from mnd.models.iqa import check_names

Setting = Literal["non-targeted", "targeted"]


Source = Literal["embedded", "imagenet10", "vggface2_10", "folder"]


SETTINGS: tuple[Setting, ...] = ("non-targeted", "targeted")


SOURCES: tuple[Source, ...] = ("embedded", "imagenet10", "vggface2_10", "folder")


ROOT_ENV = {"imagenet10": "MND_IMAGENET_ROOT", "vggface2_10": "MND_VGGFACE2_ROOT"}
"""Environment variables a preset may use for the user's data set folders."""


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
            per sub-folder (:func:`mnd.data.faces.gallery_from_folder`).
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
    unseen: tuple[str, ...] = ()
    """Models that only read each saved image (:mod:`mnd.protect.unseen`): the rows' unseen-model columns."""

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
        straight_through: see :class:`mnd.core.config.AttackConfig`.
        margin: the logit margin success needs, for every method (not in the
            paper; None keeps the hyper-parameter file's, 0).
        threads: ``torch.set_num_threads`` (None: torch's default).
        notes: caveats shown in the book (e.g. why ``max_iter`` is capped).
        notebooks: notebook name -> papermill parameters the book passes.
        overrides: the ``--set`` options applied, as given.
        tradeoff_methods: methods beyond the paper's tables (sweep points such
            as ``bim@eps=4``, minimum-norm attacks) that the grid runs for the
            trade-off chapter, on the first ``tradeoff_images`` images of each
            data set (all when None); the ``[tradeoff]`` table of the file.
        tradeoff_images: see ``tradeoff_methods``.
        tradeoff_max_iter: the iteration cap of the trade-off chapter's MND
            methods (margins, refinement) that are not among :attr:`methods`
            (None: the same cap as the paper's methods); the paper's own
            methods always keep theirs.
        tradeoff_skip: (setting or data set, method) pairs of the trade-off
            chapter that the grid does not run (a budget cut, stated in the
            preset's notes): a setting's pair skips the method on every data
            set, a data set's in both settings.
        workers: grid processes run side by side, each a shard with one
            torch thread (1: one process with the preset's ``threads``).
        weighted_metrics: quality metrics that need downloaded weights
            (``lpips``, ``dists``: :mod:`mnd.models.iqa`) added to every row;
            the offline presets ask for none.
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
    margin: float | None = None
    threads: int | None = None
    notes: str = ""
    notebooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    tradeoff_methods: tuple[str, ...] = ()
    tradeoff_images: int | None = None
    tradeoff_max_iter: int | None = None
    tradeoff_skip: tuple[tuple[str, str], ...] = ()
    weighted_metrics: tuple[str, ...] = ()
    workers: int = 1

    @property
    def grid_methods(self) -> tuple[str, ...]:
        """Every method the grid runs: :attr:`methods`, then the trade-off chapter's others."""
        return self.methods + tuple(m for m in self.tradeoff_methods if m not in self.methods)

    def images_for(self, method: str, names: Sequence[str], setting: str | None = None,
                   dataset: str | None = None) -> list[str]:
        """The images of a data set (``names``, in order) that the grid attacks with ``method`` (in ``setting``,
        of the data set called ``dataset``).

        >>> p = Preset("p", "", "p.toml", (), ("mnd",), tradeoff_methods=("ddn",), tradeoff_images=2,
        ...            tradeoff_skip=(("targeted", "ddn"), ("faces", "ddn")))
        >>> p.images_for("mnd", ["a", "b", "c"]), p.images_for("ddn", ["a", "b", "c"]), p.images_for("ddn", "ab", "targeted")
        (['a', 'b', 'c'], ['a', 'b'], [])
        >>> p.images_for("ddn", "ab", "non-targeted", "faces"), p.images_for("ddn", "ab", "non-targeted", "imagenet")
        ([], ['a', 'b'])
        """
        if method in self.methods:
            return list(names)
        if (setting, method) in self.tradeoff_skip or (dataset, method) in self.tradeoff_skip:
            return []
        return list(names) if self.tradeoff_images is None else list(names)[: self.tradeoff_images]

    def is_tradeoff_only(self, method: str) -> bool:
        """Whether ``method`` is one of the trade-off chapter's, not among the paper's :attr:`methods`."""
        return method in self.tradeoff_methods and method not in self.methods

    def overrides_for(self, method: str) -> dict[str, Any]:
        """The MND overrides one method runs with: the preset's, with :attr:`tradeoff_max_iter` for the chapter's own.

        >>> Preset("p", "", "p.toml", (), ("mnd",), tradeoff_methods=("mnd@margin=1",),
        ...        tradeoff_max_iter=300).overrides_for("mnd@margin=1")["max_iter"]
        300
        """
        out = self._overrides()
        if self.tradeoff_max_iter is not None and self.is_tradeoff_only(method):
            out["max_iter"] = self.tradeoff_max_iter
        return out

    def max_iter_for(self, method: str, task: Task = "imagenet") -> int:
        """The MND iteration cap ``method`` runs with (see :meth:`overrides_for`)."""
        if self.tradeoff_max_iter is not None and self.is_tradeoff_only(method):
            return self.tradeoff_max_iter
        return self.effective_max_iter(task)

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
        return config_for("mnd", task=task, hparams=self.hparams, **self._overrides()).max_iter

    def _overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {"straight_through": self.straight_through}
        if self.max_iter is not None:
            out["max_iter"] = self.max_iter
        if self.margin is not None:
            out["margin"] = self.margin
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for run.json)."""
        return asdict(self)


WORKERS_MAX = 64
"""The most grid processes a preset may ask for."""

IMAGES_MAX = 1_000_000
"""The largest ``[tradeoff] images`` (a cap on the images per data set)."""

_PRESET_KEYS = {
    "name", "description", "datasets", "methods", "settings", "device", "seed", "batch_size", "max_iter",
    "hparams", "straight_through", "threads", "notes", "notebooks", "margin", "tradeoff",
    "weighted_metrics", "workers",
}


_DATASET_KEYS = {
    "title", "source", "model", "task", "images", "limit", "root", "manifest", "split", "gallery", "unseen",
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
        return read_text_file(path, "preset"), str(path)
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
        unseen=_unseen(name, spec.get("unseen", []), model, where),
    )


def _unseen(name: str, names: Any, model: str, where: str) -> tuple[str, ...]:
    """A data set's ``unseen`` list, checked like ``--check`` (models that read the attacked model's input)."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(where, f"datasets.{name}.unseen must be a list of model names, got {names!r}")
    return tuple(check_unseen(names, model, where=f"{where}: datasets.{name}.unseen", same_input_as=models.spec(model)))


def _whole(data: dict[str, Any], key: str, where: str, *, minimum: int, maximum: int) -> int | None:
    """The whole-number setting ``key`` of a preset (None when unset, empty or 0 for a cap).

    Raises:
        InputError: naming the preset file and the key: not a whole number, or outside ``minimum`` to ``maximum``.
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
    if not minimum <= number <= maximum:
        raise InputError(where, f"{key} must be from {minimum} to {maximum}, got {number}")
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
    methods = tuple(data.get("methods", METHODS))
    for method in methods:
        check_method(method)
    settings = tuple(data.get("settings", SETTINGS))
    if not settings or set(settings) - set(SETTINGS):
        raise InputError(where, f"settings must be a non-empty list of {', '.join(SETTINGS)}, got {list(settings)}")
    max_iter = _whole(data, "max_iter", where, minimum=1, maximum=MAX_ITER)
    batch_size = _whole(data, "batch_size", where, minimum=1, maximum=BATCH_MAX)
    threads = _whole(data, "threads", where, minimum=1, maximum=THREADS_MAX)
    seed = _whole(data, "seed", where, minimum=0, maximum=SEED_MAX)
    notebooks = data.get("notebooks", {})
    if not isinstance(notebooks, dict) or not all(isinstance(v, dict) for v in notebooks.values()):
        raise InputError(where, "[notebooks.<name>] tables must hold notebook parameters")
    tradeoff_methods, tradeoff_images, tradeoff_max_iter, tradeoff_skip = _tradeoff(
        data.get("tradeoff", {}), where, list(data["datasets"]))
    workers = _whole(data, "workers", where, minimum=1, maximum=WORKERS_MAX)
    hparams = data.get("hparams") or None
    margin = data.get("margin")
    if margin is not None and not valid_margin(margin):
        raise InputError(where, f"margin must be a number >= 0, got {margin!r}")
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
        margin=float(margin) if margin is not None else None,
        threads=threads,
        notes=str(data.get("notes", "")).strip(),
        notebooks={str(k): dict(v) for k, v in notebooks.items()},
        overrides=tuple(overrides),
        tradeoff_methods=tradeoff_methods,
        tradeoff_images=tradeoff_images,
        tradeoff_max_iter=tradeoff_max_iter,
        tradeoff_skip=tradeoff_skip,
        weighted_metrics=_weighted(data.get("weighted_metrics", []), where),
        workers=workers if workers is not None else 1,
    )


def _weighted(names: Any, where: str) -> tuple[str, ...]:
    """The ``weighted_metrics`` list, checked (:data:`mnd.models.iqa.WEIGHTED_METRICS`)."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(where, f"weighted_metrics must be a list of metric names, got {names!r}")
    return check_names(names, f"{where} weighted_metrics")


def _tradeoff(table: Any, where: str, datasets: Sequence[str] = ()) -> tuple[
        tuple[str, ...], int | None, int | None, tuple[tuple[str, str], ...]]:
    """The ``[tradeoff]`` table: its methods (each checked), how many images of each data set they attack,
    the iteration cap of its MND methods and the (setting or data set, method) pairs it skips
    (``[tradeoff.skip]``: setting or data set name -> methods)."""
    if not isinstance(table, dict) or set(table) - {"methods", "images", "max_iter", "skip"}:
        raise InputError(where, "[tradeoff] must be a table with methods, images, max_iter and skip only")
    methods = table.get("methods", [])
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise InputError(where, f"[tradeoff] methods must be a list of method names, got {methods!r}")
    for method in methods:
        check_method(method)
    images = _whole(table, "images", f"{where} [tradeoff]", minimum=1, maximum=IMAGES_MAX)
    max_iter = _whole(table, "max_iter", f"{where} [tradeoff]", minimum=1, maximum=MAX_ITER)
    skip = table.get("skip", {})
    if not isinstance(skip, dict) or set(skip) - set(SETTINGS) - set(datasets):
        raise InputError(where, f"[tradeoff.skip] must map settings ({', '.join(SETTINGS)}) or data sets "
                         f"({', '.join(datasets)}) to method lists")
    pairs = []
    for setting, names in skip.items():
        if not isinstance(names, list) or not all(isinstance(m, str) and m in methods for m in names):
            raise InputError(where, f"[tradeoff.skip] {setting} must list methods of [tradeoff] methods, got {names!r}")
        pairs += [(str(setting), m) for m in names]
    return tuple(methods), images, max_iter, tuple(pairs)


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
