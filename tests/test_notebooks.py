"""The whole book with the tiny preset: grid, every notebook under papermill, Jupyter Book.

One build per test module (about a minute and a half on two CPU cores); the
tests then inspect what it produced. A second grid run must reuse every result.
"""

from __future__ import annotations

import threading
import types
from pathlib import Path
from typing import Any

import nbformat
import pytest

from mnd import book, experiments
from mnd.data.paths import project_root

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tiny_book: dict) -> dict:
    return tiny_book


@pytest.mark.parametrize("name", book.NOTEBOOKS)
def test_notebook_executed_without_errors(built: dict, name: str) -> None:
    path = built["root"] / "source" / "notebooks" / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["papermill"]["parameters"]["preset"] == "tiny"
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o.text for o in outputs if o.output_type == "stream"]  # no warning, no stray print
    shown = [o for o in outputs if o.output_type == "display_data"]
    assert shown, f"{name} displayed nothing"
    assert not any("not run" in str(o.get("data", {}).get("text/markdown", "")) for o in shown), \
        f"{name}: a data set of the tiny preset did not run"


def test_book_built_without_warnings(built: dict) -> None:
    index = built["report"].index
    assert index.name == "index.html" and index.exists()
    html = index.parent
    for name in book.NOTEBOOKS:
        assert (html / "notebooks" / f"{name}.html").exists()
    for page in ("intro.html", "reading-notes.html", "reproduction.html"):
        assert (html / page).exists()
    log = (built["root"] / "out" / "jupyter-book.log").read_text()
    assert "WARNING" not in log and "ERROR" not in log
    page = (built["root"] / "source" / "reproduction.md").read_text()
    for k in range(1, 7):
        assert f"## {k}. " in page
    assert (html / "reproduction.html").read_text().count("supported") >= 1


TEXT_SUFFIXES = (".html", ".ipynb", ".md", ".txt", ".js", ".json")


def test_no_machine_path_in_the_built_book(built: dict) -> None:
    html = built["report"].index.parent
    root = built["root"]
    forbidden = {str(p) for folder in (root, root / "results", root / "out", root / "source", project_root())
                 for p in (folder, folder.resolve())}
    forbidden.add(str(Path.home()) + "/")
    files = [p for p in html.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES]
    assert len(files) > 20  # pages, the downloadable notebook sources, the search index
    leaks = {(p.relative_to(html).as_posix(), path) for p in files
             for path in forbidden if path in p.read_text(encoding="utf-8", errors="replace")}
    assert not leaks


def test_pages_hide_injected_parameters_and_label_both_means(built: dict) -> None:
    html = built["report"].index.parent
    for name in book.NOTEBOOKS:
        page = (html / "notebooks" / f"{name}.html").read_text()
        assert "# Parameters" not in page and "tag_injected-parameters" not in page, name
    imagenet = (html / "notebooks" / "02_imagenet.html").read_text()
    for words in (">all attacked</th>", ">successes</th>", ">paper</th>", "efficientnet_lite0 on 2 embedded photos",
                  "no difference column"):
        assert words in imagenet, words
    assert "Δ" not in imagenet  # the tiny preset is not the paper's model and data
    faces = (html / "notebooks" / "03_faces.html").read_text()
    for item in book.PAGES:
        if "title" in item.parameters:  # a page of a template: its own title and headings
            page = (html / "notebooks" / f"{item.name}.html").read_text()
            assert f"<title>{item.parameters['title']} &#8212;" in page, item.name
            for key in ("title", "tables", "figure"):
                assert f">{item.parameters[key]}<a class=\"headerlink\"" in page, (item.name, key)
    assert "<h2>Tables VI (non-targeted) and VII (targeted)<a" in faces and "Section IV-C of the paper" in faces
    assert "dlib_resnet_v1 on 2 embedded photos" in faces and "<caption>astronaut, targeted</caption>" in faces
    verdict = (html / "reproduction.html").read_text()
    assert "all attacked" in verdict and "inconsistencies" in verdict


def test_figures_written_once_and_reproducibly(built: dict) -> None:
    figures = sorted((built["root"] / "results" / "figures").glob("*.png"))
    names = {p.name for p in figures}
    assert any(n.startswith("comparison_imagenet") for n in names)
    assert any(n.startswith("comparison_faces") for n in names)
    assert any(n.startswith("heatmaps_") for n in names) and any(n.startswith("difference_") for n in names)
    assert all(b"tIME" not in p.read_bytes() for p in figures)


def test_second_run_reuses_every_result(built: dict) -> None:
    root = built["root"]
    stamps = {p: p.stat().st_mtime_ns for p in (root / "results").rglob("*.png") if "figures" not in p.parts}
    rows = (root / "results" / experiments.RESULTS_CSV).read_text()
    again = experiments.run_grid(built["preset"], root / "results", progress=False)
    first = built["report"].grid
    # only attacks that raised the first time are tried again (they have no PNG)
    assert again.computed == again.failed == first.failed
    assert again.reused == first.computed + first.reused - first.failed
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (root / "results" / experiments.RESULTS_CSV).read_text() == rows


def test_a_skipped_dataset_degrades_gracefully(built: dict, tmp_path: Path) -> None:
    import json
    import shutil

    results = tmp_path / "results"
    shutil.copytree(built["root"] / "results", results)
    run = json.loads((results / experiments.RUN_JSON).read_text())
    run["datasets"]["faces"] = {"status": "skipped", "reason": "ModelUnavailableError: no face model here"}
    (results / experiments.RUN_JSON).write_text(json.dumps(run))
    (path,) = book.execute_notebooks(built["preset"], results, tmp_path / "source", names=["03_faces"],
                                     log=lambda line: None)
    nb = nbformat.read(path, as_version=4)
    texts = [str(o.get("data", {}).get("text/markdown", "")) for c in nb.cells if c.cell_type == "code"
             for o in c.get("outputs", [])]
    assert any("was not run" in t and "no face model here" in t for t in texts)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]


def test_notebooks_run_side_by_side_and_a_failure_names_the_first_failed_page(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    import papermill

    from mnd.errors import MndError

    build = importlib.import_module("mnd.book.build")  # the module (mnd.book.build is also a function's name)
    templates = tmp_path / "templates"
    templates.mkdir()

    def meet(mine: str, other: str) -> str:
        """Each notebook says it started and waits for the other: only notebooks run at once both finish."""
        return (f"import pathlib, time\npathlib.Path({str(tmp_path / mine)!r}).touch()\n"
                f"for _ in range(600):\n    if pathlib.Path({str(tmp_path / other)!r}).exists(): break\n"
                f"    time.sleep(0.1)\nelse:\n    raise TimeoutError('not run side by side')")

    # the longest pages start first (Page.seconds): 04 and 08 side by side, 06 queued behind them
    pages = (("04_heatmaps", meet("a", "b") + "\nraise ValueError('boom')"),
             ("08_tradeoff", meet("b", "a")), ("06_pixel_ratio", "1"))
    for name, code in pages:
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                "display_name": "Python 3"}})
        nb.cells = [nbformat.v4.new_code_cell("preset = ''", metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell(code)]
        nbformat.write(nb, templates / f"{build.page(name).template}.ipynb")
    monkeypatch.setattr(build, "notebook_dir", lambda: templates)
    # The good page returns only once the failure is registered, however slow the machine: otherwise its
    # worker, free first, could take the queued page before the failing kernel has shut down.
    failures: list[threading.Event] = []

    def event() -> threading.Event:
        failures.append(threading.Event())
        return failures[-1]

    real_execute = papermill.execute_notebook

    def execute(source: str, target: str, **kwargs: Any) -> Any:
        out = real_execute(source, target, **kwargs)
        if Path(target).stem == "08_tradeoff":
            failures[0].wait(120)
        return out

    monkeypatch.setattr(build, "threading", types.SimpleNamespace(Event=event))
    monkeypatch.setattr(papermill, "execute_notebook", execute)
    lines: list[str] = []
    with pytest.raises(MndError, match=r"^notebook 04_heatmaps failed \(ValueError: boom\)"):
        book.execute_notebooks(experiments.load_preset("tiny"), tmp_path / "results", tmp_path / "source",
                               names=["06_pixel_ratio", "04_heatmaps", "08_tradeoff"], log=lines.append)
    # the two ran at once, the good one to the end, and the failed one kept its executed copy with the
    # error; the page queued behind them was not started after the failure
    assert [line.split(" in ")[0] for line in lines] == ["executed 08_tradeoff"]
    assert (tmp_path / "source" / "notebooks" / "04_heatmaps.ipynb").is_file()
    assert not (tmp_path / "source" / "notebooks" / "06_pixel_ratio.ipynb").exists()
