"""Exceptions the command line turns into one-line messages and exit status 2."""

from __future__ import annotations

import errno
import os
import stat
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


def check_regular_file(path: str | Path) -> Path:
    """``path`` if it names a regular file (through links); else an InputError naming it.

    Refused at once, before anything opens it: a missing file, a folder, a
    link that loops or points nowhere, and what is not a regular file (a FIFO
    or socket, which would block a reader forever, or a device).

    >>> check_regular_file("/dev/null")
    Traceback (most recent call last):
    ...
    mnd.errors.InputError: /dev/null: not a regular file (a character device)
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(path, "a symbolic link loop (the link points back at itself)") from None
        if exc.errno == errno.ENOENT:
            dangling = os.path.lexists(path)
            raise InputError(path, "a symbolic link to a missing file" if dangling else "no such file") from None
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise InputError(path, "is a folder, expected a file")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _SPECIAL if test(mode)), "a special file")
        raise InputError(path, f"not a regular file ({kind})")
    return path


_SPECIAL = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"))


def read_text_file(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of a file the user named (a preset, a hyper-parameter file...); one InputError naming it
    when it is not a readable regular file of text (see :func:`check_regular_file`)."""
    check_regular_file(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the {what} ({getattr(exc, 'strerror', None) or exc})") from None
