"""Shards of the experiment grid: every N-th batch in a process of its own, each with its own result file.

>>> Shard.parse("1/2").owns(0), Shard.parse("1/2").owns(1)
(True, False)

A shard with a claims folder takes batches as it comes to them instead: the
first shard to claim a batch (an exclusive file create) runs it, so shards
that share the folder share the work however uneven its batches are.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnd.errors import InputError
from mnd.experiments.rows import merge_rows, read_rows


def row_key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    """What identifies a grid row: data set, setting, method, image."""
    return (str(row["dataset"]), str(row["setting"]), str(row["method"]), str(row["image"]))


SHARDS_DIR = "shards"
"""Under a results folder: one result file per shard (``results.<I>-of-<N>.csv``); merged ones move to ``merged/``."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1 to ``count``) of a grid: every ``count``-th batch of the grid's work.

    The grid's unit of work is one batch: a data set, a setting, a method and
    ``batch_size`` consecutive images of the data set's list. Batches are
    numbered in the grid's order (data sets, settings, methods, images) and
    shard I of N runs the batches whose number is I - 1 modulo N, exactly as an
    unsharded run would form them, so a sharded run gives the same rows.

    >>> Shard.parse("2/3"), Shard.parse("2/3").name
    (Shard(index=2, count=3, claims=None), '2-of-3')
    """

    index: int
    count: int
    claims: str | None = None  # a folder: claim batches in turn (:meth:`claim`) instead of every count-th

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` with 1 <= I <= N; InputError naming ``--shard`` otherwise."""
        parts = str(text).split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise InputError("--shard", f"expected I/N such as 1/4, got {text!r}")
        index, count = (int(p) for p in parts)
        if not 1 <= index <= count:
            raise InputError("--shard", f"I must be between 1 and N, got {text!r}")
        return cls(index, count)

    @property
    def name(self) -> str:
        """``I-of-N``, as in the shard's file names."""
        return f"{self.index}-of-{self.count}"

    def owns(self, batch: int) -> bool:
        """Whether the grid's ``batch``-th batch (0-based, in grid order) may be this shard's: every ``count``-th,
        or with :attr:`claims` any (the one that claims it first runs it)."""
        return self.claims is not None or batch % self.count == self.index - 1

    def claim(self, batch: int) -> bool:
        """Take the ``batch``-th batch before running it: always True without :attr:`claims`; with them, True for
        the one shard whose exclusive create of ``<claims>/<batch>`` succeeds.

        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> Shard(1, 2, folder).claim(3), Shard(2, 2, folder).claim(3), Shard(2, 2, folder).claim(4)
        (True, False, True)
        """
        if self.claims is None:
            return True
        try:
            os.close(os.open(Path(self.claims) / str(batch), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True


def shard_csv(results: Path, shard: Shard) -> Path:
    """The result file of one shard."""
    return results / SHARDS_DIR / f"results.{shard.name}.csv"


def merge_shards(results: Path, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Path], int]:
    """``rows`` with every unmerged shard file's rows merged in (a shard's row replaces an older one).

    Returns the merged rows, the shard files read and how many rows they
    brought. The caller writes ``results.csv`` first and only then moves the
    files aside (:func:`retire_shards`), so a crash in between merges them again,
    which changes nothing.
    """
    files = sorted((results / SHARDS_DIR).glob("results.*-of-*.csv"))
    count = 0
    for path in files:
        new = [dict(r) for r in read_rows(path)]
        count += len(new)
        rows = merge_rows(rows, new, key=row_key)
    return rows, files, count


def retire_shards(files: Sequence[Path]) -> None:
    """Move merged shard files to ``shards/merged/`` (atomic renames; a later shard run writes a fresh file)."""
    for path in files:
        target = path.parent / "merged" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
