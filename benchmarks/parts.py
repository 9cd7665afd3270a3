"""Shared by the benchmark scripts: forward and backward time of the parts of one attack iteration."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def time_parts(parts: dict[str, Callable[[], torch.Tensor]], z: torch.Tensor) -> None:
    """Print, for each named part (a function of the iterate ``z`` giving a loss), its forward and backward time."""
    for name, part in parts.items():
        start = time.perf_counter()
        loss = part()
        middle = time.perf_counter()
        torch.autograd.grad(loss.sum(), z)
        end = time.perf_counter()
        print(f"  {name}: forward {middle - start:.2f} s, backward {end - middle:.2f} s")
