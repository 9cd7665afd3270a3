"""mnd.study as a package of its own: the old module names under mnd.book still import the same objects."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import mnd
from mnd import study
from mnd.study import draw, page, protocol, server, store, tables

BOOK_DIR = Path(mnd.__file__).resolve().parent / "book"


def test_no_rating_study_module_is_left_in_the_book() -> None:
    assert sorted(p.name for p in BOOK_DIR.glob("mos*.py")) == []


def test_old_module_names_are_the_new_modules() -> None:
    from mnd.book import mos, mos_page, mos_server, mos_study  # the names before mnd.study
    from mnd.book import ratings

    assert mos is protocol and mos_server is server and mos_page is ratings
    assert mos_study.Study is store.Study and mos_study.write_tables is tables.write_tables
    assert mos_study.create_study is study.create_study and mos.SCALE is study.SCALE
    assert importlib.import_module("mnd.book.mos_study") is study


def test_old_dotted_imports_work_in_a_fresh_interpreter() -> None:
    code = ("import mnd.book.mos_study as s, mnd.book.mos_server as w; from mnd.book.mos import SCALE, make_sheet; "
            "from mnd.book.mos_page import scale_html; import mnd.study.server as v; "
            "print(s.Study.__module__, w is v, len(SCALE), scale_html.__module__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(mnd.__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["mnd.study.store", "True", "7", "mnd.book.ratings"]


def _defined(module: object) -> set[str]:
    """The public names a module's source defines at its top (functions, classes, constants)."""
    tree = ast.parse(Path(module.__file__).read_text())  # type: ignore[attr-defined]
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    names |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    return {n for n in names if not n.startswith("_")}


def test_the_package_exports_every_public_name_of_its_modules() -> None:
    for module in (protocol, store, draw, tables, page, server):
        missing = sorted(_defined(module) - set(study.__all__))
        assert not missing, f"{module.__name__}: {missing}"
        assert all(getattr(study, n) is getattr(module, n) for n in _defined(module))
