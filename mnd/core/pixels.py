"""The 8-bit grid: the values a saved PNG holds, on which every success is decided."""

from __future__ import annotations

import torch


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Project onto [0, 1] on the 8-bit grid: the values a PNG holds (the feasible set of the attacks).

    >>> quantize(torch.tensor([-0.5, 0.25, 0.75, 2.0])).mul(255).tolist()
    [0.0, 64.0, 191.0, 255.0]
    """
    return x.clamp(0, 1).mul_(255).round_().div_(255)
