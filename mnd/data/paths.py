"""Where the project's own files are: the project root and the paper's table folder."""

from __future__ import annotations

from pathlib import Path


def project_root() -> Path:
    """The source checkout holding ``mnd/`` (and ``data/``, ``notebooks/``, ``book/``)."""
    return Path(__file__).resolve().parents[2]


def paper_dir() -> Path:
    """``data/paper`` of the checkout: the paper's own table values."""
    return project_root() / "data" / "paper"
