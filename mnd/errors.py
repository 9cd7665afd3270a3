"""Exceptions the command line turns into one-line messages and exit status 2."""

from __future__ import annotations

from pathlib import Path


class MndError(Exception):
    """Base class of every error `mnd` raises on purpose."""


class InputError(MndError):
    """A file or argument the user gave cannot be used.

    The message always names the offending file (or argument) first, so the
    command line can print it as one line: ``mnd: error: <where>: <problem>``.
    """

    def __init__(self, where: str | Path, problem: str) -> None:
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{self.where}: {problem}")


class ModelUnavailableError(MndError):
    """A model's weights are not on this machine and cannot be fetched."""
