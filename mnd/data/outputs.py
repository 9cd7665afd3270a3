"""An output folder whose files and result rows change together.

``mnd attack`` and ``mnd protect`` write image files and, in the same folder,
a CSV file with one row per image file (``metrics.csv``, ``report.csv``). A
row describes one file: it names it (``file``) and its content (``sha256``).
The order of writes makes sure no interruption, a caught Ctrl-C or an
uncatchable SIGKILL at any instant, leaves a row beside a file it does not
describe:

1. :meth:`OutputFolder.stage`: each new file is written in full under a
   temporary name (``.<name>.XXXXXXXX.tmp``) and flushed to disk; its row is
   computed (``mnd protect`` reads the staged file back from disk for it).
2. :meth:`OutputFolder.publish`, with SIGINT and SIGTERM held back
   (:func:`interrupts_held`): the CSV file is rewritten *without* the rows
   of the files about to be replaced; the staged files are renamed into
   place; the CSV file is rewritten *with* their new rows.

A kill between the two CSV writes leaves a file with no row (the old one or
the new one), never a row describing another file; Ctrl-C and SIGTERM wait
for the three steps to end, so they leave neither. A run holds the folder's
lock (:func:`fcntl.flock` on the folder itself, no file is added), so two
runs never interleave their writes, and it removes the temporary files a
killed run left (:func:`remove_stale`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

from mnd.data.imageio import naming, temporary_beside
from mnd.errors import InputError

STALE = re.compile(r"^\.(?:.+\.(?:png|jpg|csv)|mnd-probe)\.[a-z0-9_]{8}\.tmp$")
"""Temporary files of :func:`mnd.data.imageio.atomic_open` and :meth:`OutputFolder.stage` (mkstemp's 8 random
characters) for the files mnd writes in an output folder, and the writability probe."""

HELD = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends, then act on the first one that came.

    Outside the main thread (where Python cannot set handlers) the block just
    runs. A held SIGINT raises :class:`KeyboardInterrupt` after the block (the
    default handler), a held SIGTERM ends the process as it would have.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        came.append(signum)

    previous = {s: signal.signal(s, hold) for s in HELD}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if came:
            signal.raise_signal(came[0])


@dataclass(frozen=True)
class Staged:
    """A file written in full under a temporary name beside its final ``path``."""

    path: Path
    temporary: Path
    sha256: str
    size: int

    @property
    def name(self) -> str:
        """The final file's name (what a row's ``file`` column says)."""
        return self.path.name

    def discard(self) -> None:
        """Remove the temporary file (a no-op once published)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temporary)


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, in hex (what a row's ``sha256`` column says)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_stale(folder: str | Path) -> list[Path]:
    """Remove the temporary files a killed run left in ``folder`` (names matching :data:`STALE`)."""
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            if STALE.match(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


class OutputFolder:
    """An existing folder, locked for one run: files are staged, then published with their rows.

    Use as a context manager: entering takes the lock (another run writing
    into the same folder is an InputError naming it) and removes stale
    temporary files; leaving discards what was staged and not published.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None
        self._staged: list[Staged] = []

    def __enter__(self) -> OutputFolder:
        fd = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise InputError(self.folder, "another mnd run is writing into this folder; wait for it to end or "
                                 "choose another --out") from None
            raise
        self._fd = fd
        remove_stale(self.folder)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for staged in self._staged:
            staged.discard()
        self._staged.clear()
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def stage(self, name: str, data: bytes) -> Staged:
        """Write ``data`` in full (flushed to disk) under a temporary name beside ``folder/name``."""
        path = self.folder / name
        fd, tmp = temporary_beside(path)
        staged = Staged(path, Path(tmp), hashlib.sha256(data).hexdigest(), len(data))
        self._staged.append(staged)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise naming(exc, path) from None
        return staged

    def publish(self, staged: Sequence[Staged], *, withdraw: Callable[[], None] | None,
                record: Callable[[], None]) -> None:
        """Put staged files in place with their rows, uninterruptible by Ctrl-C or SIGTERM.

        Args:
            staged: files from :meth:`stage`.
            withdraw: writes the CSV file without any row of these files (None
                when it has none: nothing to withdraw).
            record: writes the CSV file with their new rows.
        """
        with interrupts_held():
            if withdraw is not None:
                withdraw()
            for s in staged:
                os.replace(s.temporary, s.path)
                with contextlib.suppress(ValueError):
                    self._staged.remove(s)
            self._sync()
            record()

    def _sync(self) -> None:
        """Make the renames durable (the folder's own entry on disk)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
