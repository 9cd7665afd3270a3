"""The grid in several processes at once: one shard each, one torch thread each, merged at the end.

The processes share a claims folder (:attr:`Shard.claims`): each takes the
next batch no other has taken, so a process never waits idle while the other
still has a queue (batches are uneven: 8 photos and then 1, an early-stopping
MND beside a 100-step minimum-norm attack).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

import torch

from mnd.experiments.grid import GridReport, run_grid
from mnd.experiments.presets import Preset
from mnd.experiments.rows import GRID_COLUMNS, RESULTS_CSV, read_rows, write_rows
from mnd.experiments.shards import SHARDS_DIR, Shard, merge_shards, retire_shards


def _shard_worker(preset: Preset, results: str, index: int, count: int,
                  claims: str) -> tuple[int, int, dict[str, float]]:
    """One grid process of :func:`run_workers` (one torch thread): computed rows, failed rows, CPU seconds."""
    torch.set_num_threads(1)
    start = os.times()
    report = run_grid(preset, results, progress=False, shard=Shard(index, count, claims))
    end = os.times()
    return report.computed, report.failed, {"user": end.user - start.user, "system": end.system - start.system}


def run_workers(preset: Preset, results: str | Path, *, progress: bool = True) -> GridReport:
    """:func:`run_grid` in :attr:`Preset.workers` processes side by side, then merged.

    Each process runs one shard (:class:`Shard`) with one torch thread (two
    one-thread processes did ~1.24 times the work of one two-thread process on
    a 2-core machine), taking batches from a shared claims folder as it comes
    to them (made for this run, removed after it); the final unsharded :func:`run_grid` merges their files
    into ``results.csv`` and computes nothing that they did. With one worker it
    is :func:`run_grid`. The report's ``cpu_seconds`` add up the workers'.
    """
    if preset.workers <= 1:
        return run_grid(preset, results, progress=progress)
    results = Path(results)
    (results / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    _merge_leftovers(results)
    claims = tempfile.mkdtemp(prefix="claims-", dir=results / SHARDS_DIR)  # this run's own: a crashed run's never block
    context = multiprocessing.get_context("spawn")
    cpu: dict[str, float] = {}
    try:
        with concurrent.futures.ProcessPoolExecutor(preset.workers, mp_context=context) as pool:
            jobs = [pool.submit(_shard_worker, preset, str(results), i, preset.workers, claims)
                    for i in range(1, preset.workers + 1)]
            for job in concurrent.futures.as_completed(jobs):
                _, _, seconds = job.result()
                for key, value in seconds.items():
                    cpu[key] = cpu.get(key, 0.0) + value
    finally:
        shutil.rmtree(claims, ignore_errors=True)
    report = run_grid(preset, results, progress=progress)
    report.computed += report.merged
    report.reused -= report.merged
    report.cpu_seconds = cpu
    return report


def _merge_leftovers(results: Path) -> None:
    """Merge the shard files an interrupted run left into ``results.csv`` first, so every process starts from the
    same table (each process reads only its own shard file besides it)."""
    csv_path = results / RESULTS_CSV
    rows, files, _ = merge_shards(results, [dict(r) for r in read_rows(csv_path)])
    if files:
        write_rows(csv_path, rows, GRID_COLUMNS)
        retire_shards(files)
