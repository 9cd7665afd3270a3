"""The grid in several processes at once: one shard each, one torch thread each, merged at the end."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from pathlib import Path

import torch

from mnd.experiments.grid import GridReport, run_grid
from mnd.experiments.presets import Preset
from mnd.experiments.shards import Shard


def _shard_worker(preset: Preset, results: str, index: int, count: int) -> tuple[int, int, dict[str, float]]:
    """One grid process of :func:`run_workers` (one torch thread): computed rows, failed rows, CPU seconds."""
    torch.set_num_threads(1)
    start = os.times()
    report = run_grid(preset, results, progress=False, shard=Shard(index, count))
    end = os.times()
    return report.computed, report.failed, {"user": end.user - start.user, "system": end.system - start.system}


def run_workers(preset: Preset, results: str | Path, *, progress: bool = True) -> GridReport:
    """:func:`run_grid` in :attr:`Preset.workers` processes side by side, then merged.

    Each process runs one shard (:class:`Shard`) with one torch thread (two
    one-thread processes did ~1.24 times the work of one two-thread process on
    a 2-core machine); the final unsharded :func:`run_grid` merges their files
    into ``results.csv`` and computes nothing that they did. With one worker it
    is :func:`run_grid`. The report's ``cpu_seconds`` add up the workers'.
    """
    if preset.workers <= 1:
        return run_grid(preset, results, progress=progress)
    Path(results).mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    cpu: dict[str, float] = {}
    with concurrent.futures.ProcessPoolExecutor(preset.workers, mp_context=context) as pool:
        jobs = [pool.submit(_shard_worker, preset, str(results), i, preset.workers) for i in range(1, preset.workers + 1)]
        for job in concurrent.futures.as_completed(jobs):
            _, _, seconds = job.result()
            for key, value in seconds.items():
                cpu[key] = cpu.get(key, 0.0) + value
    report = run_grid(preset, results, progress=progress)
    report.computed += report.merged
    report.reused -= report.merged
    report.cpu_seconds = cpu
    return report
