"""Moved to :mod:`mnd.protect.photo` (``mnd protect`` is a package of its own); the old name still gives its names."""

from typing import Any

from mnd.protect import photo as _moved
from mnd.protect.photo import *  # noqa: F401,F403


def __getattr__(name: str) -> Any:
    """Every other name of :mod:`mnd.protect.photo`, private ones included."""
    return getattr(_moved, name)
