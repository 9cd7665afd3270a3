"""The package's layers: every module imports only modules of its own layer or below, and no cycle.

:data:`LAYERS` lists the modules bottom to top. A module may import modules of
its own row or of rows above it in the list (lower layers), never of a row
below it. Three checks:

- the import statements of every module (module level and inside functions),
  read from the source: each points down, and the import graph has no cycle;
- each module imported alone in a fresh interpreter (``python -c``): no module
  of a higher layer ends up in ``sys.modules``, so no import hides behind
  another;
- every folder (core, models, data, experiments, study, book, cli) imports only the folders
  listed before it in :data:`FOLDERS`;
- imports of ``mnd`` modules sit at module top, except in the command line's
  entry point, which defers them so that ``mnd --help`` and Ctrl-C during
  start-up stay fast and clean.

A new module must be added to :data:`LAYERS`.
"""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import mnd

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),                                    # bottom: the exceptions every layer raises
    ("core.pixels", "core.losses", "core.metrics", "core.memory"),  # core: 8-bit grid, equations, measures, malloc
    ("core.config",),                               # core: eq. (7)'s weights, variants, hyper-parameter file
    ("core.judge", "core.descent", "core.boosters"),  # core: the success rule, eq. (21)'s step, transfer boosters
    ("core.attack",),                               # core: Algorithm 1
    ("core.refine",),                               # core: MND + refinement (ours, not in the paper)
    ("core.robustness", "core.eot"),                # core: sharing transforms (JPEG, resize), their stand-ins
    ("core.anchors",),                              # core: the torchattacks anchors
    ("core.min_anchors",),                          # core: minimum-perturbation anchors (not in the paper)
    ("core",),
    ("models.weights", "models.nets"),              # models: weight files, the network contract
    ("models.dlib_format", "models.dlib_chips"),    # models: dlib's model file, its face chip
    ("models.dlib_resnet", "models.facenet"),       # models: network builders
    ("models.registry",),                           # models: every model by name
    ("models.gallery",),                            # models: logits over enrolled identities
    ("models.iqa",),                                # models: LPIPS and DISTS (downloaded weights)
    ("models",),
    ("data.paths", "data.imageio"),                 # data: the project's folders, 8-bit image files
    ("data.outputs",),                              # data: output folders whose files and rows change together
    ("data.faces",),                                # data: face detection, the one face-crop choice
    ("data.prepare",),                              # data: the one preprocessing
    ("data.selection",),                            # data: what the paper's two test sets share
    ("data.imagenet10", "data.vggface2_10"),        # data: choosing each test set from a user's copy
    ("data.manifests",),                            # data: a choice written, read and checked
    ("data.testsets", "data.embedded"),             # data: the paper's test sets, the embedded photos
    ("data",),
    ("protect.unseen",),                            # protect: checks on models that never gave a gradient
    ("protect.photo",),                             # protect: whole photos at full resolution (classifiers)
    ("protect.face_cuts",),                         # protect: where the faces are, how each is cut
    ("protect.faces",),                             # protect: every face of a whole photo
    ("protect",),
    ("experiments.methods",),                       # experiments: every method by name
    ("experiments.rows",),                          # experiments: the one row schema
    ("experiments.steps",),                         # experiments: the steps of one attack, recorded and kept
    ("experiments.presets",),                       # experiments: presets
    ("experiments.shards",),                        # experiments: shards of the grid
    ("experiments.grid", "experiments.summary"),    # experiments: the resumable grid, summaries
    ("experiments.parallel", "experiments.stats"),  # experiments: grid processes side by side; uncertainty
    ("experiments.trace",),                         # experiments: loss traces of one attack
    ("experiments.protect", "experiments.protect_faces"),  # experiments: the old names of mnd.protect's modules
    ("experiments",),
    ("study.protocol",),                            # study: the subjective test (protocol, tables)
    ("study.store",),                               # study: a rating study in SQLite
    ("study.draw", "study.tables", "study.page"),   # study: drawing it, its tables, the rater's pages
    ("study.server",),                              # study: the web server
    ("study",),
    ("book.pages",),                                # book: pages and the notebooks' setup
    ("book.tables",),                               # book: tables
    ("book.figures",),                              # book: figures
    ("book.curves",),                               # book: attack strength versus image quality
    ("book.transfer",),                             # book: transfer to models the images were not made on
    ("book.quality", "book.teaching"),              # book: the quality tables; the teaching figure and the budget strip
    ("book.inconsistencies",),                      # book: the paper's own inconsistencies
    ("book.claims",),                               # book: the verdict page
    ("book.ratings",),                              # book: the MOS page (reads a study's tables)
    ("book.guide",),                                # book: the user guide's generated pages
    ("book.build",),                                # book: the build
    ("book",),
    ("cli.attack", "cli.data", "cli.book", "cli.mos"),  # command line: the sub-commands
    ("cli.protect",),                               # command line: protect (uses attack's checks)
    ("cli.main",),                                  # command line: the entry point
    ("cli", "cli.__main__"),
)
"""Modules bottom to top; a row ``("core",)`` is the package's ``__init__`` (it may re-export its modules)."""

FOLDERS: tuple[str, ...] = ("errors", "core", "models", "data", "protect", "experiments", "study", "book", "cli")
"""The sub-packages bottom to top: a folder imports only the folders before it (and itself)."""

DATA_PACKAGES: tuple[str, ...] = ("presets",)
"""Folders of data files read with importlib.resources (no code): below everything."""

RANK: dict[str, int] = {f"mnd.{name}": rank for rank, row in enumerate(LAYERS) for name in row}
RANK["mnd"] = 0  # the package itself holds only the version
RANK.update({f"mnd.{name}": 0 for name in DATA_PACKAGES})

LAZY_MND_IMPORTS_ALLOWED = {"mnd.cli.main"}
"""Modules that may import ``mnd`` modules inside functions (start-up speed of the command line)."""

PACKAGE_DIR = Path(mnd.__file__).resolve().parent


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="mnd.")
                  if not m.ispkg or (PACKAGE_DIR / Path(*m.name.split(".")[1:]) / "__init__.py").exists())


def _source(module: str) -> Path:
    parts = module.split(".")[1:]
    path = PACKAGE_DIR.joinpath(*parts)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _imports_in(source: str) -> list[tuple[str, int, bool]]:
    """(imported mnd module, line, inside a function) for every import statement of a module's source."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names
                             if a.name == "mnd" or a.name.startswith("mnd."))
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                if child.module == "mnd" or child.module.startswith("mnd."):
                    # from mnd import data / from mnd.core import attack (modules) or from mnd.core.attack import x
                    found.extend((f"{child.module}.{a.name}" if f"{child.module}.{a.name}" in RANK else child.module,
                                  child.lineno, in_function) for a in child.names)
            visit(child, nested)

    visit(ast.parse(source), False)
    return found


def _mnd_imports(module: str) -> list[tuple[str, int, bool]]:
    return _imports_in(_source(module).read_text())


def _upward(imports: dict[str, list[tuple[str, int, bool]]]) -> list[str]:
    """One line per import of a module of a higher layer (an unknown module counts as the highest)."""
    return [f"{module} (layer {RANK[module]}) imports {target} (layer {RANK.get(target, '?')}) at line {line}"
            for module, found in imports.items() for target, line, _ in found
            if RANK.get(target, 10**6) > RANK[module]]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the import graph (its modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                loop = path + [node]
                return loop[loop.index(nxt):] + [nxt]
            if nxt not in state:
                found = walk(nxt, path + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = walk(start, [])
            if found:
                return found
    return None


def _folder(module: str) -> int:
    """The rank of a module's folder in :data:`FOLDERS` (``mnd`` itself: the bottom; unknown: the top)."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in DATA_PACKAGES:
        return 0
    return FOLDERS.index(parts[1]) if parts[1] in FOLDERS else len(FOLDERS)


def _higher(module: str, loaded: list[str]) -> list[str]:
    """The modules of ``loaded`` in a folder above ``module``'s.

    Importing a module runs its package's ``__init__`` first, which loads the
    package's other modules: so a fresh import is checked folder by folder, and
    the order inside a folder by the source check.
    """
    return [m for m in loaded if _folder(m) > _folder(module)]


def test_every_module_has_a_layer() -> None:
    modules = set(_modules())
    assert modules, "no module found"
    missing = sorted(modules - set(RANK))
    assert not missing, f"add these modules to LAYERS in {__file__}: {missing}"
    stale = sorted(set(RANK) - modules - {"mnd"} - {f"mnd.{name}" for name in DATA_PACKAGES})
    assert not stale, f"LAYERS names modules that no longer exist: {stale}"


def test_folders_import_only_folders_below() -> None:
    upward = [f"{m} imports {target} (line {line})" for m in _modules() for target, line, _ in _mnd_imports(m)
              if _folder(target) > _folder(m)]
    assert not upward, "a folder imports a folder above it:\n" + "\n".join(upward)
    assert [_folder(f"mnd.{name}.x") for name in FOLDERS] == list(range(len(FOLDERS)))


def test_imports_point_down_and_form_no_cycle() -> None:
    imports = {m: [i for i in _mnd_imports(m) if i[0] != m] for m in _modules()}
    upward = _upward(imports)
    assert not upward, "upward imports:\n" + "\n".join(upward)
    cycle = _cycle({m: {t for t, _, _ in found} for m, found in imports.items()})
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_source_checks_catch_an_upward_import_and_a_cycle() -> None:
    source = ("from mnd.experiments import grid\nfrom mnd import errors, data\n\ndef f():\n    import mnd.cli\n"
              "    from mnd.data.faces import cut_faces\n")
    found = _imports_in(source)
    assert found == [("mnd.experiments.grid", 1, False), ("mnd.errors", 2, False), ("mnd.data", 2, False),
                     ("mnd.cli", 5, True), ("mnd.data.faces", 6, True)]
    upward = _upward({"mnd.core.metrics": found})
    assert len(upward) == 4 and all("mnd.core.metrics (layer 1)" in line for line in upward)
    assert not _upward({"mnd.cli": found})
    assert _upward({"mnd.data.faces": [("mnd.data", 1, False)]})  # a module may not import its own package
    assert _cycle({"mnd.a": {"mnd.b"}, "mnd.b": {"mnd.c"}, "mnd.c": {"mnd.a"}}) == ["mnd.a", "mnd.b", "mnd.c",
                                                                                    "mnd.a"]
    assert _cycle({"mnd.a": {"mnd.b"}, "mnd.b": set()}) is None
    assert _higher("mnd.models.registry", ["mnd", "mnd.errors", "mnd.models.weights", "mnd.data.faces"]) == [
        "mnd.data.faces"]


def test_mnd_imports_sit_at_module_top() -> None:
    lazy = [f"{_source(m).name}:{line}: {target}" for m in _modules() if m not in LAZY_MND_IMPORTS_ALLOWED
            for target, line, in_function in _mnd_imports(m) if in_function]
    assert not lazy, "imports of mnd modules inside functions (move them to the top):\n" + "\n".join(lazy)


# The fresh-interpreter check: one `python -c` that imports the heavy third-party
# packages once, then forks a child per module (where fork exists), so each module
# is imported alone into a clean set of mnd modules without paying for torch each time.
_PROBE = textwrap.dedent(
    """
    import importlib, json, os, sys
    modules = json.loads(sys.argv[1])

    def loaded(name):
        importlib.import_module(name)
        return sorted(m for m in sys.modules if m == "mnd" or m.startswith("mnd."))

    if not hasattr(os, "fork"):
        print(json.dumps({modules[0]: loaded(modules[0])}))
        raise SystemExit
    for heavy in ("numpy", "PIL.Image", "torch", "torchvision", "timm", "piq", "tqdm.auto", "scipy"):
        try:
            importlib.import_module(heavy)
        except ImportError:
            pass
    assert not [m for m in sys.modules if m == "mnd" or m.startswith("mnd.")]
    out = {}
    for name in modules:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                text = json.dumps(loaded(name))
            except BaseException as exc:
                text = json.dumps("error: %s: %s" % (type(exc).__name__, exc))
            with os.fdopen(write, "w") as handle:
                handle.write(text)
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as handle:
            out[name] = json.loads(handle.read())
        os.waitpid(pid, 0)
    print(json.dumps(out))
    """
)


def _loaded_alone(modules: list[str]) -> dict[str, list[str] | str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(PACKAGE_DIR.parent) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    runs = [modules] if hasattr(os, "fork") else [[m] for m in modules]
    out: dict[str, list[str] | str] = {}
    for batch in runs:
        done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(batch)], capture_output=True, text=True,
                              env=env, cwd=PACKAGE_DIR.parent, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        out.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def test_importing_each_module_alone_loads_no_higher_layer() -> None:
    modules = [m for m in _modules() if not m.endswith(".__main__")]  # importing __main__ runs the command
    loaded = _loaded_alone(modules)
    problems = []
    for module in modules:
        got = loaded[module]
        if isinstance(got, str):
            problems.append(f"{module}: {got}")
        elif _higher(module, got):
            problems.append(f"import {module} (layer {RANK[module]}) loads higher layers: {_higher(module, got)}")
    assert not problems, "\n".join(problems)
    assert loaded["mnd.errors"] == ["mnd", "mnd.errors"]  # the probe sees what an import loads, nothing more
    assert "mnd.experiments.grid" in loaded["mnd.cli.book"] and "mnd.models" in loaded["mnd.data"]
