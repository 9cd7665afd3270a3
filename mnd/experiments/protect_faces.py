"""Moved to :mod:`mnd.protect.faces` (``mnd protect`` is a package of its own); the old name still gives its names."""

from typing import Any

from mnd.protect import faces as _moved
from mnd.protect.faces import *  # noqa: F401,F403


def __getattr__(name: str) -> Any:
    """Every other name of :mod:`mnd.protect.faces`, private ones included."""
    return getattr(_moved, name)
