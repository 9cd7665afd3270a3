"""mnd book's checks before any work, its source folder policy and its kernels' shutdown.

The checks run on small folders made here (no grid, no model); the kernel
tests execute one- or two-cell notebooks the way :mod:`mnd.book.build` does.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import nbformat
import pytest

from mnd import book, experiments
from mnd.cli.main import main
from mnd.data.testsets import sha256_file
from mnd.errors import InputError, MndError

build = importlib.import_module("mnd.book.build")  # the module (mnd.book.build is also a function's name)


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Running the grid or a notebook fails the test: everything here must be refused before."""
    import papermill

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("work started before the input was refused")

    monkeypatch.setattr(experiments, "run_grid", forbidden)
    monkeypatch.setattr(papermill, "execute_notebook", forbidden)


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnd: error: "), captured.err
    return lines[0]


def _results(folder: Path) -> Path:
    """A results folder with an mnd results.csv of one row (enough for the checks; no notebook reads it here)."""
    experiments.write_rows(folder / experiments.RESULTS_CSV, [{"dataset": "imagenet"}], experiments.GRID_COLUMNS)
    return folder


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- the device ------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["tpu", "cuda:99"])
def test_a_device_this_machine_lacks_is_one_line_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: None, device: str) -> None:
    results = tmp_path / "results"
    code = main(["book", "--preset", "tiny", "--set", f"device={device}", "--results", str(results),
                 "--out", str(tmp_path / "out"), "--source", str(tmp_path / "source"), "--quiet"])
    assert code == 2
    line = _error_line(capsys)
    assert line.startswith("mnd: error: --set device: ") and device.split(":")[0] in line
    assert not list(tmp_path.iterdir())  # no folder made
    # a shard is checked the same way
    assert main(["book", "--preset", "tiny", "--set", f"device={device}", "--results", str(results),
                 "--shard", "1/2", "--quiet"]) == 2
    assert _error_line(capsys).startswith("mnd: error: --set device: ")


def test_a_device_in_the_preset_file_names_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: None) -> None:
    preset = tmp_path / "mine.toml"
    text = (Path(experiments.__file__).parents[1] / "presets" / "book" / "tiny.toml").read_text()
    preset.write_text(text.replace('device = "cpu"', 'device = "tpu"'))
    assert main(["book", "--preset", str(preset), "--results", str(tmp_path / "r"), "--quiet"]) == 2
    assert _error_line(capsys) == (f"mnd: error: {preset}: device: not a device: 'tpu' "
                                   "(use cpu, cuda, cuda:N or mps)")


# --- a results.csv that mnd did not write ----------------------------------------------------


@pytest.mark.parametrize("run", [False, True])
def test_a_foreign_results_csv_is_refused_before_any_notebook(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: None, run: bool) -> None:
    results = tmp_path / "results"
    results.mkdir()
    foreign = results / experiments.RESULTS_CSV
    foreign.write_text("name,score\nalice,3\n")
    argv = ["book", "--preset", "tiny", "--results", str(results), "--out", str(tmp_path / "out"),
            "--source", str(tmp_path / "source"), "--quiet"]
    assert main(argv + ([] if run else ["--no-run"])) == 2
    line = _error_line(capsys)
    assert line.startswith(f"mnd: error: {foreign}: exists but is not an mnd results file")
    assert foreign.read_text() == "name,score\nalice,3\n" and sorted(os.listdir(results)) == ["results.csv"]
    assert sorted(os.listdir(tmp_path)) == ["results"]  # neither the book source nor the build folder made


def test_no_run_needs_result_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: None) -> None:
    results = tmp_path / "results"
    argv = ["book", "--preset", "tiny", "--no-run", "--results", str(results), "--source", str(tmp_path / "s")]
    assert main(argv) == 2
    assert _error_line(capsys).startswith(f"mnd: error: {results}: no results.csv here")
    results.mkdir()
    experiments.write_rows(results / experiments.RESULTS_CSV, [], experiments.GRID_COLUMNS)  # the header only
    assert main(argv) == 2
    assert _error_line(capsys) == (f"mnd: error: {results / 'results.csv'}: holds no result rows: run without "
                                   "--no-run first (or give --results)")


# --- the book source folder ------------------------------------------------------------------


def test_a_file_mnd_book_did_not_write_is_never_overwritten(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: None) -> None:
    source = tmp_path / "mine"
    source.mkdir()
    (source / "intro.md").write_text("my own introduction\n")
    (source / "notes.md").write_text("keep me\n")
    before = _tree(source)
    for run in ([], ["--no-run"]):
        code = main(["book", "--preset", "tiny", "--results", str(_results(tmp_path / "results")),
                     "--source", str(source), "--out", str(tmp_path / "out"), "--quiet", *run])
        assert code == 2
        assert _error_line(capsys) == (f"mnd: error: {source / 'intro.md'}: exists and mnd book did not write it; "
                                       "mnd book never overwrites a file it did not write: move it away or choose "
                                       "another --source folder")
        assert _tree(source) == before and not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="intro.md: exists and mnd book did not write it"):
        book.stage(source)
    assert _tree(source) == before


def test_reruns_replace_only_the_files_mnd_book_wrote_and_nobody_changed(tmp_path: Path) -> None:
    source = tmp_path / "source"
    book.stage(source)
    listing = json.loads((source / book.SOURCE_MANIFEST).read_text())
    assert listing["written_by"] == "mnd book"
    assert listing["files"] == {name: sha256_file(source / name) for name in book.STATIC_PAGES}
    (source / "notes.md").write_text("mine\n")
    book.stage(source)  # a rerun: its own unchanged files are replaced, the others left alone
    book.check_source(source)
    assert (source / "notes.md").read_text() == "mine\n"
    (source / "intro.md").write_text("edited by hand\n")
    with pytest.raises(InputError, match=r"intro.md: was changed since mnd book wrote it"):
        book.check_source(source)
    with pytest.raises(InputError, match=r"intro.md: was changed since mnd book wrote it"):
        book.stage(source)
    assert (source / "intro.md").read_text() == "edited by hand\n"
    (source / "intro.md").unlink()  # deleted: written again
    book.stage(source)
    assert (source / "intro.md").read_bytes() == (book.book_dir() / "intro.md").read_bytes()


def test_a_file_being_written_when_a_run_stopped_counts_as_mnd_books(tmp_path: Path) -> None:
    source = tmp_path / "source"
    book.stage(source)
    manifest = source / book.SOURCE_MANIFEST
    listing = json.loads(manifest.read_text())
    listing["files"]["notebooks/01_losses.ipynb"] = None  # papermill was writing it
    manifest.write_text(json.dumps(listing))
    (source / "notebooks" / "01_losses.ipynb").write_text("{half written")
    book.check_source(source)


def test_links_folders_and_a_foreign_list_are_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.md"
    elsewhere.write_text("not mnd's\n")
    source = tmp_path / "a"
    source.mkdir()
    (source / "_toc.yml").symlink_to(elsewhere)
    with pytest.raises(InputError, match=r"a/_toc.yml: is a link"):
        book.check_source(source)
    source = tmp_path / "b"
    (source / "reproduction.md").mkdir(parents=True)
    with pytest.raises(InputError, match=r"b/reproduction.md: is in the way"):
        book.check_source(source)
    source = tmp_path / "c"
    source.mkdir()
    (source / "notebooks").write_text("a file")
    with pytest.raises(InputError, match=r"c/notebooks: is in the way"):
        book.check_source(source)
    source = tmp_path / "d"
    (source / "notebooks").mkdir(parents=True)
    (source / book.SOURCE_MANIFEST).write_text('{"files": {"intro.md": null}}')  # not written by mnd book
    with pytest.raises(InputError, match=r"d/notebooks/.mnd-book-source: is not the list of files that mnd book"):
        book.check_source(source)
    (source / book.SOURCE_MANIFEST).write_text("{not json")
    with pytest.raises(InputError, match=r"\.mnd-book-source: is not the list .* cannot be read"):
        book.stage(source)
    assert elsewhere.read_text() == "not mnd's\n"


def test_the_checkouts_book_folder_keeps_working(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    book.check_source(book.book_dir())  # the real default: its committed pages are sources, never written
    assert "intro.md" not in book.source_files(book.book_dir())
    checkout = tmp_path / "book"
    checkout.mkdir()
    for name in book.STATIC_PAGES:
        (checkout / name).write_text(f"committed {name}\n")
    (checkout / "notebooks").mkdir()
    (checkout / "notebooks" / "02_imagenet.ipynb").write_text("{}")  # from a build before the list existed
    (checkout / "reproduction.md").write_text("old verdict\n")
    monkeypatch.setattr(build, "book_dir", lambda: checkout)
    book.check_source(checkout)
    book.stage(checkout)  # writes nothing into book/ itself
    assert {p.name for p in checkout.iterdir()} == {*book.STATIC_PAGES, "notebooks", "reproduction.md"}
    build._write_file(checkout, book.GENERATED_PAGE, "new verdict\n")
    # the first list takes over what was there (a build stopped by a failed page leaves the others as they were)
    assert json.loads((checkout / book.SOURCE_MANIFEST).read_text())["files"] == {
        "notebooks/02_imagenet.ipynb": sha256_file(checkout / "notebooks" / "02_imagenet.ipynb"),
        "reproduction.md": sha256_file(checkout / "reproduction.md")}
    book.check_source(checkout)
    (checkout / "reproduction.md").write_text("edited\n")
    with pytest.raises(InputError, match="reproduction.md: was changed since"):
        book.check_source(checkout)


# --- executing notebooks: records, refusals, and a quiet kernel shutdown ---------------------


def _templates(folder: Path, cells: dict[str, str]) -> Path:
    """A templates folder: for each page a notebook with a parameters cell and ``code``."""
    folder.mkdir()
    for name, code in cells.items():
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                "display_name": "Python 3"}})
        nb.cells = [nbformat.v4.new_code_cell("preset = ''", metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell(code)]
        nbformat.write(nb, folder / f"{build.page(name).template}.ipynb")
    return folder


SLOW_REPLY_TAIL = """\
kernel = get_ipython().kernel
reply = kernel.shell_handlers["kernel_info_request"]


async def slow_tail(*args):
    await reply(*args)
    import time
    time.sleep(1)  # the reply has gone out but the handler has not returned: where a busy machine is slow


kernel.shell_handlers["kernel_info_request"] = slow_tail
"""


FAILING_REPLY_TAIL = SLOW_REPLY_TAIL.replace("time.sleep(1)", "raise ValueError('a real kernel error')")


def test_a_successful_notebook_prints_no_kernel_error_and_real_ones_still_show(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """papermill shuts the kernel down once the reply to its last kernel_info request is in; a kernel that is
    still inside that handler must not be interrupted (it logged "ERROR | KeyboardInterrupt caught in kernel.").
    An error the kernel logs for a real reason is still printed."""
    templates = _templates(tmp_path / "templates", {"01_losses": SLOW_REPLY_TAIL, "04_heatmaps": SLOW_REPLY_TAIL,
                                                    "08_tradeoff": FAILING_REPLY_TAIL})
    monkeypatch.setattr(build, "notebook_dir", lambda: templates)
    preset = experiments.load_preset("tiny")
    lines: list[str] = []
    paths = book.execute_notebooks(preset, tmp_path / "results", tmp_path / "source",
                                   names=["01_losses", "04_heatmaps"], log=lines.append)  # two at a time
    captured = capfd.readouterr()
    assert "ERROR" not in captured.out + captured.err, captured.out + captured.err
    assert [p.name for p in paths] == ["01_losses.ipynb", "04_heatmaps.ipynb"] and len(lines) == 2
    book.execute_notebooks(preset, tmp_path / "results", tmp_path / "source", names=["08_tradeoff"],
                           log=lines.append)
    err = capfd.readouterr().err
    assert "ERROR | Exception in message handler" in err and "ValueError: a real kernel error" in err
    assert "KeyboardInterrupt" not in err


def test_a_kernel_still_busy_at_shutdown_is_still_stopped() -> None:
    """Only an idle kernel is spared the interrupt: one whose cell does not return is interrupted, then killed."""
    import asyncio
    import time

    async def shut_down_a_busy_kernel() -> tuple[bool, float]:
        manager = build.kernel_manager_class()(kernel_name="python3", shutdown_wait_time=1.0)
        await manager.start_kernel(extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
        client = manager.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=60)
            client.execute("import time\nwhile True: time.sleep(0.1)")
            await asyncio.sleep(0.3)
            start = time.perf_counter()
            await manager.shutdown_kernel()
            return await manager.is_alive(), time.perf_counter() - start
        finally:
            client.stop_channels()

    alive, seconds = asyncio.run(shut_down_a_busy_kernel())
    assert not alive and seconds < 4


def test_executed_notebooks_are_recorded_and_a_changed_one_is_refused_before_any_kernel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import papermill

    templates = _templates(tmp_path / "templates", {"01_losses": "1 + 1", "08_tradeoff": "raise ValueError('boom')"})
    monkeypatch.setattr(build, "notebook_dir", lambda: templates)
    preset, source = experiments.load_preset("tiny"), tmp_path / "source"
    with pytest.raises(MndError, match="08_tradeoff failed"):
        book.execute_notebooks(preset, tmp_path / "results", source, names=["01_losses", "08_tradeoff"],
                               log=lambda line: None)
    files = json.loads((source / book.SOURCE_MANIFEST).read_text())["files"]
    for name in ("01_losses", "08_tradeoff"):  # the failed page's copy, kept with its error, is mnd book's too
        path = source / "notebooks" / f"{name}.ipynb"
        assert files[f"notebooks/{name}.ipynb"] == sha256_file(path)
    book.execute_notebooks(preset, tmp_path / "results", source, names=["01_losses"], log=lambda line: None)
    copy = source / "notebooks" / "01_losses.ipynb"
    copy.write_text(copy.read_text().replace('"1 + 1"', '"2 + 2"'))
    edited = copy.read_bytes()

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a kernel started")

    monkeypatch.setattr(papermill, "execute_notebook", forbidden)
    with pytest.raises(InputError, match=r"notebooks/01_losses.ipynb: was changed since mnd book wrote it"):
        book.execute_notebooks(preset, tmp_path / "results", source, names=["01_losses"], log=lambda line: None)
    assert copy.read_bytes() == edited
