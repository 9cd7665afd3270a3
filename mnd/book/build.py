"""The reproducibility book: run the grid, execute the notebooks, build the HTML.

:func:`build` is ``mnd book``: it runs a preset's grid (:func:`mnd.experiments.grid.run_grid`,
which skips results already on disk), executes the notebooks of
``notebooks/`` with papermill into the book's pages (:data:`PAGES`: one
template may give several pages, each with its own parameters; executed
copies, the clean sources stay untouched), writes the generated "what
reproduced" page from the results, and builds the HTML with Jupyter Book v1
with execution off and warnings as errors.

Everything that can be refused is refused before the grid starts
(:func:`check_build`): a ``results.csv`` that ``mnd`` did not write, and a
book source folder holding, where the book writes, a file that ``mnd book``
did not write. ``mnd book`` never overwrites a file it did not write: it
lists what it writes into a source folder, with each file's SHA-256, in
:data:`SOURCE_MANIFEST`, and on a rerun replaces only files of that list that
are unchanged since (:func:`check_source`).

The notebooks are thin: each starts with :func:`mnd.book.pages.setup`,
then calls the book's helpers (:mod:`~mnd.book.tables`, :mod:`~mnd.book.figures`,
:mod:`~mnd.book.ratings`) and the library; every number they show comes
from the results folder.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnd import experiments
from mnd.book.claims import public_paths, reproduction_page, scrub
from mnd.book.guide import GUIDE_PAGES, guide_pages
from mnd.book.pages import GENERATED_PAGE, KERNEL, NOTEBOOKS, STATIC_PAGES, book_dir, config_file, notebook_dir, page
from mnd.data.imageio import atomic_open
from mnd.data.paths import project_root
from mnd.data.testsets import sha256_file
from mnd.errors import InputError, MndError


NOTEBOOK_WORKERS = 2
"""Notebooks executed at once (each in its own kernel process)."""


@contextlib.contextmanager
def _kernel_environment() -> Iterator[None]:
    """Make the notebook kernels run this Python with this very ``mnd``.

    ``PYTHONPATH`` gets the checkout (a source checkout need not be installed);
    ``JUPYTER_PATH`` puts this environment's kernel specs first, so a
    ``python3`` kernel spec in the user's home cannot send the notebooks to
    another Python; ``PYTHONWARNINGS`` silences tqdm's "IProgress not found"
    (a kernel without ipywidgets keeps plain progress bars), which
    ``tqdm.auto`` warns when ``mnd`` is first imported, before any cell
    could filter it.
    """
    first = {"PYTHONPATH": str(project_root()), "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter")}
    last = {"PYTHONWARNINGS": "ignore:IProgress not found"}  # the last filter given wins
    old = {k: os.environ.get(k) for k in (*first, *last)}
    for key, value in first.items():
        os.environ[key] = os.pathsep.join([value, old[key]] if old[key] else [value])
    for key, value in last.items():
        os.environ[key] = ",".join([old[key], value] if old[key] else [value])
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def preset_argument(preset: experiments.Preset) -> str:
    """How notebooks find the preset: its packaged name, or the absolute path of its file."""
    if preset.path == f"{preset.name}.toml" and preset.name in experiments.preset_names() and not Path(preset.path).exists():
        return preset.name
    return str(Path(preset.path).resolve())


def parameters(preset: experiments.Preset, results: Path, notebook: str) -> dict[str, Any]:
    """The papermill parameters of one page: results, preset, overrides, the page's own, then the preset's own.

    Args:
        preset: the run's preset; its ``[notebooks.<notebook>]`` table comes last.
        results: the results folder.
        notebook: a page of :data:`PAGES`.
    """
    params: dict[str, Any] = {"results": str(Path(results).resolve()), "preset": preset_argument(preset),
                              "overrides": list(preset.overrides)}
    params.update(page(notebook).parameters)
    params.update(preset.notebooks.get(notebook, {}))
    return params


PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
"""``{{ name }}`` in a template's markdown: the page's parameter ``name`` (:func:`fill_markdown`)."""


def fill_markdown(nb: Any, values: Mapping[str, Any], where: str) -> None:
    """Replace every ``{{ name }}`` of the markdown cells of ``nb`` by ``values[name]``, in place.

    A template notebook gives several pages (:data:`PAGES`); what differs in
    their text (title, headings) is a parameter, shown where the markdown
    says ``{{ name }}``.

    Raises:
        MndError: a placeholder without a value (``where`` names the page).
    """
    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise MndError(f"{where}: the markdown shows {{{{ {key} }}}} but the page has no parameter {key!r}")
        return str(values[key])

    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = PLACEHOLDER.sub(value, cell.source)


SOURCE_MANIFEST = "notebooks/.mnd-book-source"
"""Where a book source folder lists the files ``mnd book`` wrote into it (relative to the folder).

A JSON file: ``{"written_by": "mnd book", "files": {path: sha256}}``, the
paths relative to the source folder. A path whose SHA-256 is ``null`` was
being written when a run stopped (interrupted, or a notebook running): it
counts as ``mnd book``'s own. It lives in ``notebooks/`` (the executed
notebooks' folder, which the checkout's ``book/.gitignore`` already leaves
out of git) and is no page of the book.
"""


_MANIFEST_LOCK = threading.Lock()  # notebooks finish in worker threads and record their files at once


def _is_book_dir(source: Path) -> bool:
    return source.resolve() == book_dir().resolve()


def source_files(source: str | Path, names: Sequence[str] = NOTEBOOKS) -> list[str]:
    """What :func:`build` writes into ``source``, relative to it, in the order it writes them.

    The static pages (:data:`STATIC_PAGES`, unless ``source`` is the
    checkout's ``book/``, where they are the sources), the executed notebook
    of each page of ``names``, the generated page and the user guide's
    generated pages (:data:`mnd.book.guide.GUIDE_PAGES`).
    """
    static = [] if _is_book_dir(Path(source)) else list(STATIC_PAGES)
    return [*static, *(f"notebooks/{name}.ipynb" for name in names), GENERATED_PAGE, *GUIDE_PAGES]


def _read_manifest(source: Path) -> dict[str, str | None] | None:
    """The files ``mnd book`` wrote into ``source`` (:data:`SOURCE_MANIFEST`), or None when it has no list."""
    path = source / SOURCE_MANIFEST
    if not os.path.lexists(path):
        return None
    problem = "is not the list of files that mnd book wrote into this folder; move it away"
    if path.is_symlink() or not path.is_file():
        raise InputError(path, problem)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(path, f"{problem} (it cannot be read: {exc})") from None
    files = data.get("files") if isinstance(data, dict) and data.get("written_by") == "mnd book" else None
    if not isinstance(files, dict) or not all(isinstance(v, (str, type(None))) for v in files.values()):
        raise InputError(path, problem)
    return files


def _not_ours(path: Path, recorded: Mapping[str, str | None], name: str, adopt: bool) -> str | None:
    """Why ``mnd book`` may not write ``path`` (``name`` in ``source``), or None when it may."""
    if not os.path.lexists(path):
        return None
    if path.is_symlink():
        return "is a link; mnd book writes only files it made itself: move it away or choose another --source folder"
    if not path.is_file():
        return "is in the way (not a file): move it away or choose another --source folder"
    if name in recorded:
        digest = recorded[name]
        if digest is None or sha256_file(path) == digest:  # None: being written when a run stopped
            return None
        return ("was changed since mnd book wrote it; mnd book never overwrites a file it did not write: "
                "move it away (or delete it) to have it written again")
    if adopt:  # book/ of the checkout before mnd book kept a list: its generated paths (book/.gitignore) are ours
        return None
    return ("exists and mnd book did not write it; mnd book never overwrites a file it did not write: "
            "move it away or choose another --source folder")


def _check_files(source: Path, names: Sequence[str]) -> None:
    if os.path.lexists(source) and not source.is_dir():
        raise InputError(source, "the book source folder exists and is not a folder")
    notebooks = source / "notebooks"
    if os.path.lexists(notebooks) and not notebooks.is_dir():
        raise InputError(notebooks, "is in the way: mnd book writes the executed notebooks into a folder of this name")
    recorded = _read_manifest(source)
    adopt = recorded is None and _is_book_dir(source)
    for name in names:
        problem = _not_ours(source / name, recorded or {}, name, adopt)
        if problem is not None:
            raise InputError(source / name, problem)


def check_source(source: str | Path, names: Sequence[str] = NOTEBOOKS) -> None:
    """Refuse a book source folder where :func:`build` would overwrite a file it did not write.

    ``mnd book`` writes into ``source`` only the files of :func:`source_files`
    and replaces one only when it wrote it itself and it is unchanged since
    (its SHA-256 is in :data:`SOURCE_MANIFEST`); every other file of the folder
    is left alone. In the checkout's ``book/``, which had no list before,
    the files at its generated paths (``book/.gitignore``) are taken as
    ``mnd book``'s until it has one. Nothing is written here.

    Raises:
        InputError: naming the first file (or the folder) in the way.
    """
    source = Path(source)
    _check_files(source, source_files(source, [page(name).name for name in names]))


def _note(source: Path, name: str, digest: str | None) -> None:
    """Record in :data:`SOURCE_MANIFEST` that ``mnd book`` writes (``None``) or wrote ``name`` in ``source``."""
    with _MANIFEST_LOCK:
        files = _read_manifest(source)
        if files is None:  # the first list: in book/ it takes over the files at its generated paths (see _not_ours)
            adopted = source_files(source) if _is_book_dir(source) else []
            files = {n: sha256_file(source / n) for n in adopted
                     if (source / n).is_file() and not (source / n).is_symlink()}
        files[name] = digest
        listing = {"written_by": "mnd book", "files": dict(sorted(files.items()))}
        with atomic_open(source / SOURCE_MANIFEST, "w", encoding="utf-8") as handle:
            json.dump(listing, handle, indent=1)
            handle.write("\n")


def _writing(source: Path, name: str) -> Path:
    """Note that ``mnd book`` is about to write ``name`` in ``source`` (a crash then leaves it ours); its path."""
    _note(source, name, None)
    return source / name


def _wrote(source: Path, name: str) -> None:
    """Record the SHA-256 of ``name`` in ``source``, which ``mnd book`` has just written (when it exists)."""
    if (source / name).is_file():
        _note(source, name, sha256_file(source / name))


def _write_file(source: Path, name: str, content: str | bytes) -> None:
    """Write ``name`` in ``source`` atomically and record it as ``mnd book``'s (checked again just before)."""
    _check_files(source, [name])
    path = _writing(source, name)
    mode, kwargs = ("wb", {}) if isinstance(content, bytes) else ("w", {"encoding": "utf-8"})
    with atomic_open(path, mode, **kwargs) as handle:
        handle.write(content)
    _wrote(source, name)


def stage(source: str | Path) -> None:
    """Make ``source`` a book source folder: copy the static pages there unless it is ``book/`` itself.

    Raises:
        InputError: a static page's path holds a file that ``mnd book`` did
            not write, or changed since (:func:`check_source`); nothing is
            written then.
    """
    source = Path(source)
    if _is_book_dir(source):
        source.mkdir(parents=True, exist_ok=True)
        return
    _check_files(source, STATIC_PAGES)
    source.mkdir(parents=True, exist_ok=True)
    for name in STATIC_PAGES:
        _write_file(source, name, (book_dir() / name).read_bytes())


HIDDEN_TAGS: dict[str, str] = {"injected-parameters": "remove-cell", "parameters": "hide-input"}
"""Tag added to a cell of an executed notebook -> the Jupyter Book tag that hides it in the book.

Papermill's injected cell holds this machine's paths and is removed from the page; the notebook's own
defaults (not the values of this run) are folded away.
"""


_BINARY_OUTPUTS = ("image/png", "image/jpeg", "image/gif", "application/pdf")


def _scrub_tree(node: Any, paths: Sequence[tuple[str, str]]) -> Any:
    if isinstance(node, str):
        return scrub(node, paths)
    if isinstance(node, list):
        return [_scrub_tree(v, paths) for v in node]
    if isinstance(node, dict):
        return {k: v if k in _BINARY_OUTPUTS else _scrub_tree(v, paths) for k, v in node.items()}
    return node


def publish_notebook(path: str | Path, paths: Sequence[tuple[str, str]]) -> None:
    """Make an executed notebook fit for the book: fill in its text, hide the parameter cells, remove machine paths.

    Fills the markdown's ``{{ name }}`` with the parameters papermill
    passed (:func:`fill_markdown`), adds the Jupyter Book tags of
    :data:`HIDDEN_TAGS` and replaces every
    machine path of ``paths`` (:func:`public_paths`) in cell sources,
    text outputs and metadata (papermill records its input and output paths
    there), so neither the HTML page nor its downloadable ``.ipynb`` shows
    them. Image outputs are left as they are.
    """
    import nbformat  # optional: the book extra

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    fill_markdown(nb, nb.metadata.get("papermill", {}).get("parameters", {}), path.name)
    for cell in nb.cells:
        tags = list(cell.metadata.get("tags", []))
        for tag, hide in HIDDEN_TAGS.items():
            if tag in tags and hide not in tags:
                tags.append(hide)
        if tags:
            cell.metadata["tags"] = tags
    clean = nbformat.from_dict(_scrub_tree(nb, paths))
    with atomic_open(path, "w", encoding="utf-8") as handle:
        nbformat.write(clean, handle)


@functools.cache
def kernel_manager_class() -> type:
    """jupyter_client's ``AsyncKernelManager``, but an idle kernel is shut down without an interrupt.

    jupyter_client's ``shutdown_kernel`` first sends the kernel SIGINT, then
    the shutdown request. papermill shuts the kernel down as soon as the reply
    to its last ``kernel_info_request`` arrives; ipykernel sends that reply
    from inside its message handler, and until the handler has returned it
    turns SIGINT into a KeyboardInterrupt, which it logs as ``[IPKernelApp]
    ERROR | KeyboardInterrupt caught in kernel.``: a successful notebook then
    prints an error (seen with two notebooks at a time on a busy machine).
    This manager sends the shutdown request first and waits up to half of
    ``shutdown_wait_time`` for the kernel to exit; only a kernel still running
    then (a cell that does not return) gets jupyter_client's usual shutdown:
    the interrupt, then SIGTERM and SIGKILL.
    """
    from jupyter_client.manager import AsyncKernelManager  # optional: the book extra (papermill's kernels)

    class QuietShutdownKernelManager(AsyncKernelManager):  # type: ignore[misc, valid-type]
        async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            if not now and not restart and self.owns_kernel and self.has_kernel:
                await self.request_shutdown()
                try:
                    await asyncio.wait_for(self._exited(), timeout=self.shutdown_wait_time / 2)
                except asyncio.TimeoutError:
                    pass  # still running: interrupt it, then terminate it, as jupyter_client does
                else:
                    await self.provisioner.wait()  # reaped: the usual shutdown below only cleans up
                    now = True
            await super().shutdown_kernel(now=now, restart=restart)

        async def _exited(self) -> None:
            while await self.is_alive():
                await asyncio.sleep(0.02)

    return QuietShutdownKernelManager


def execute_notebooks(
    preset: experiments.Preset,
    results: Path,
    source: Path,
    *,
    names: Sequence[str] = NOTEBOOKS,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Execute the pages' notebooks with papermill into ``source/notebooks/<page>.ipynb`` (executed copies).

    Args:
        preset: the run's preset.
        results: its results folder.
        source: the book's source folder.
        names: pages of :data:`PAGES`, each executed from its template with its parameters.
        log: where progress lines go.

    Each executed copy is recorded as ``mnd book``'s in :data:`SOURCE_MANIFEST`
    (its SHA-256 once written, a failed page's copy too), and one is replaced
    only when ``mnd book`` wrote it and it is unchanged since
    (:func:`check_source`).

    Raises:
        InputError: an unknown page, or an executed copy's path holding a
            file that ``mnd book`` did not write (nothing runs then).
        MndError: a notebook failed; the executed copy (with the error) is kept.
    """
    import papermill  # optional: the book extra

    source = Path(source)
    pages = [page(name) for name in names]
    _check_files(source, [f"notebooks/{item.name}.ipynb" for item in pages])
    out_dir = source / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    manager = kernel_manager_class()

    failed = threading.Event()  # after a failure, pages not started yet are not run; those running finish

    def run(item: Any) -> Path | None:
        if failed.is_set():
            return None
        start = time.perf_counter()
        name = f"notebooks/{item.name}.ipynb"
        target = _writing(source, name)
        try:
            papermill.execute_notebook(
                str(notebook_dir() / f"{item.template}.ipynb"), str(target),
                parameters=parameters(preset, results, item.name),
                kernel_name=KERNEL, cwd=str(out_dir), progress_bar=False, log_output=False,
                extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no kernel start-up chatter
                kernel_manager_class=manager,  # no SIGINT to an idle kernel at shutdown
            )
            publish_notebook(target, public_paths(preset, results, source))
        except papermill.PapermillExecutionError as exc:
            failed.set()
            raise MndError(f"notebook {item.name} failed ({exc.ename}: {exc.evalue}); see {target}") from None
        except BaseException:
            failed.set()
            raise
        finally:
            _wrote(source, name)  # the executed copy, a failed one too, is mnd book's
        log(f"executed {item.name} in {time.perf_counter() - start:.0f} s")
        return target

    # Each notebook runs in its own kernel process; two at a time keep two cores busy (a kernel spends
    # most of its time starting Python and importing torch, on one core). The longest start first.
    with _kernel_environment(), concurrent.futures.ThreadPoolExecutor(max_workers=NOTEBOOK_WORKERS) as pool:
        futures = {item.name: pool.submit(run, item) for item in sorted(pages, key=lambda p: -p.seconds)}
    written = [futures[item.name].result() for item in pages]  # raises the first failed page, in page order
    return [path for path in written if path is not None]  # None: skipped after a failure, raised above


def build_html(source: Path, out: Path, *, quiet: bool = True) -> Path:
    """Build the book in ``source`` with Jupyter Book v1: execution off, ``-W -n --keep-going``.

    Returns:
        the built ``index.html``.

    Raises:
        MndError: the build failed or warned (the output says why).
    """
    command = [
        sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(source),
        "--config", str(config_file()), "--toc", str(source / "_toc.yml"), "--path-output", str(out),
        "-W", "-n", "--keep-going", "--all",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    log = out / "jupyter-book.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(done.stdout + done.stderr)
    index = out / "_build" / "html" / "index.html"
    if done.returncode != 0 or not index.exists():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise MndError(f"jupyter-book build failed (exit {done.returncode}); full log in {log}:\n{tail}")
    return index


@dataclass
class BookReport:
    """What :func:`build` did and how long each step took."""

    index: Path
    results: Path
    grid: experiments.GridReport | None
    seconds: dict[str, float]


def _folders(preset: experiments.Preset, results: str | Path | None, out: str | Path | None,
             source: str | Path | None) -> tuple[Path, Path, Path]:
    """The results, build and source folders of :func:`build`, defaults filled in."""
    return (Path(results) if results is not None else project_root() / "results" / preset.name,
            Path(out) if out is not None else book_dir() / "_build" / preset.name,
            Path(source) if source is not None else book_dir())


def check_results(results: str | Path, *, run: bool = True) -> None:
    """Refuse a results folder the book cannot use, before any work.

    Its ``results.csv``, when there is one, must be one that ``mnd`` wrote
    (:func:`mnd.experiments.read_rows` with :data:`mnd.experiments.GRID_COLUMNS`):
    the grid merges into it and the notebooks read it. Without ``run`` (use the
    results as they are) it must exist and hold rows.

    Raises:
        InputError: naming the folder or its ``results.csv``.
    """
    path = Path(results) / experiments.RESULTS_CSV
    if os.path.lexists(path) and not path.is_file():
        raise InputError(path, "is not a file")
    if not run and not path.is_file():
        raise InputError(results, f"no {experiments.RESULTS_CSV} here: run without --no-run first (or give --results)")
    rows = experiments.read_rows(path, experiments.GRID_COLUMNS)
    if not run and not rows:
        raise InputError(path, "holds no result rows: run without --no-run first (or give --results)")


def check_build(
    preset: experiments.Preset,
    *,
    results: str | Path | None = None,
    source: str | Path | None = None,
    run: bool = True,
) -> None:
    """What :func:`build` refuses before any work: the results, then the source folder.

    :func:`check_results`, then :func:`check_source`.

    Raises:
        InputError: naming the file or folder at fault; nothing is written.
    """
    results_dir, _, source_dir = _folders(preset, results, None, source)
    check_results(results_dir, run=run)
    check_source(source_dir)


def build(
    preset: experiments.Preset,
    *,
    results: str | Path | None = None,
    out: str | Path | None = None,
    source: str | Path | None = None,
    run: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> BookReport:
    """``mnd book``: grid, notebooks, generated page, HTML.

    Everything :func:`check_build` refuses is refused first, before the grid
    runs. The book never overwrites a file it did not write: in the source
    folder it replaces only files it wrote itself and that are unchanged
    since (:func:`check_source`).

    Args:
        preset: from :func:`mnd.experiments.presets.load_preset`.
        results: results folder (default ``results/<preset name>`` in the checkout).
        out: build folder (default ``book/_build/<preset name>``); the HTML is
            in ``<out>/_build/html``.
        source: the book's source folder receiving the executed notebooks and
            the generated page (default ``book/``; another folder gets a copy
            of the static pages).
        run: run the grid first (False: use the results as they are).
        progress: progress bars.
        log: where progress lines go.

    Raises:
        InputError: no source checkout, or what :func:`check_build` refuses.
        MndError: a notebook failed, or the HTML build did.
    """
    root = project_root()
    if not notebook_dir().is_dir() or not book_dir().is_dir():
        raise InputError(root, "mnd book needs a source checkout (notebooks/ and book/ beside mnd/)")
    results, out, source = _folders(preset, results, out, source)
    check_build(preset, results=results, source=source, run=run)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    report = experiments.run_workers(preset, results, progress=progress) if run else None
    seconds["grid"] = time.perf_counter() - start
    if report is not None:
        log(f"grid: {report.computed} computed, {report.reused} reused, {report.failed} failed -> {report.csv}")
    stage(source)
    start = time.perf_counter()
    execute_notebooks(preset, results, source, log=log)
    seconds["notebooks"] = time.perf_counter() - start
    _write_file(source, GENERATED_PAGE, reproduction_page(preset, results))
    for name, text in guide_pages(preset, results).items():  # the user guide's generated pages
        _write_file(source, name, text)
    start = time.perf_counter()
    index = build_html(source, out)
    seconds["html"] = time.perf_counter() - start
    return BookReport(index=index, results=results, grid=report, seconds=seconds)
