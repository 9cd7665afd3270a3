"""Uncertainty for the book's claims: Wilson intervals, paired per-image differences, the sign test, three verdicts.

Every comparison of two methods in the book is *paired*: the same images
attacked by both, one difference per image. A comparison is decided by the
two-sided exact sign test on those differences (ties dropped) at
:data:`ALPHA`; with fewer than :data:`MIN_PAIRS` usable pairs, or a p-value
at or above :data:`ALPHA`, it is ``inconclusive``. Success rates get a Wilson
95% interval. An output with PSNR below :data:`DEGENERATE_PSNR` dB or SSIM
below :data:`DEGENERATE_SSIM` is *degenerate* (an image a person would not
accept): it counts as a failure everywhere (:func:`usable`).

>>> [round(v, 3) for v in wilson(9, 9)]
[0.701, 1.0]
>>> compare([3.0, 2.0, 1.5, 4.0, 1.5, 2.5], [1.0] * 6).outcome
'holds'
>>> compare([1.0, 2.0], [0.0, 0.0]).outcome  # two pairs: below the stated minimum
'inconclusive'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Z95 = 1.959963984540054
"""The standard normal quantile of a 95% two-sided interval."""

ALPHA = 0.05
"""The sign test's level: a comparison is decided only when its two-sided p-value is below this."""

MIN_PAIRS = 6
"""The fewest usable image pairs on which a comparison is decided (with 5 or fewer, even 5 of 5 going one way
gives a two-sided sign-test p of 0.0625 or more, so no smaller n could ever decide at :data:`ALPHA`)."""

DEGENERATE_PSNR = 20.0
"""Below this PSNR (dB) an output is degenerate: a destroyed image, a failure in every claim."""

DEGENERATE_SSIM = 0.5
"""Below this SSIM an output is degenerate (see :data:`DEGENERATE_PSNR`)."""

Outcome = Literal["holds", "does not hold", "inconclusive"]


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% by default); (nan, nan) when ``n`` is 0.

    >>> [round(v, 3) for v in wilson(0, 9)], [round(v, 3) for v in wilson(1, 2)]
    ([0.0, 0.299], [0.095, 0.905])
    """
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n={n}, got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test p-value for ``wins`` against ``losses`` (ties left out); 1.0 with no pairs.

    >>> sign_test(6, 0), sign_test(5, 0), sign_test(3, 3)
    (0.03125, 0.0625, 1.0)
    """
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def is_degenerate(psnr: Any, ssim: Any) -> bool:
    """Whether an output is degenerate (PSNR < 20 dB or SSIM < 0.5); a missing value is not judged degenerate.

    >>> is_degenerate(4.98, 0.003), is_degenerate(34.0, 0.93), is_degenerate(float("nan"), 0.9)
    (True, False, False)
    """
    p, s = _number(psnr), _number(ssim)
    return (not math.isnan(p) and p < DEGENERATE_PSNR) or (not math.isnan(s) and s < DEGENERATE_SSIM)


def usable(row: Mapping[str, Any]) -> bool:
    """A row that counts as a success in the claims: adversarial, attacked, finite quality, not degenerate."""
    if not truthy(row.get("success")) or not truthy(row.get("attacked", True)):
        return False
    psnr, ssim = _number(row.get("psnr")), _number(row.get("ssim"))
    return math.isfinite(psnr) and not is_degenerate(psnr, ssim)


@dataclass(frozen=True)
class Paired:
    """Paired per-image differences ``a - b`` (oriented so that positive means ``a`` is better).

    Attributes:
        n: usable pairs.
        median, q1, q3: of the differences (nan when n is 0).
        better, worse, ties: how many images go each way.
        p: two-sided sign-test p-value.
        outcome: ``holds`` (``a`` better, p < :data:`ALPHA`, n >= :data:`MIN_PAIRS`), ``does not hold``
            (``b`` better, the same test), else ``inconclusive``.
    """

    n: int
    median: float
    q1: float
    q3: float
    better: int
    worse: int
    ties: int
    p: float
    outcome: Outcome

    def text(self, digits: int = 2, unit: str = "") -> str:
        """``+1.23 [0.50, 2.10] dB, 6↑ 1↓ 0=, p 0.12`` (median [interquartile range], images each way, p)."""
        if self.n == 0:
            return "no pairs"
        u = f" {unit}" if unit else ""
        ways = f"{self.better}↑ {self.worse}↓" + (f" {self.ties}=" if self.ties else "")
        return (f"{self.median:+.{digits}f} [{self.q1:+.{digits}f}, {self.q3:+.{digits}f}]{u}, {ways}, "
                f"p {self.p:.2g}")


def compare(a: Sequence[float], b: Sequence[float], *, higher_is_better: bool = True, tie: float = 0.0,
            min_pairs: int = MIN_PAIRS) -> Paired:
    """Paired comparison of ``a`` against ``b`` (same images, same order); non-finite pairs are dropped.

    A difference within ``tie`` of zero is a tie (for example 0.005 dB: equal at the printed precision).
    """
    if len(a) != len(b):
        raise ValueError(f"paired values must have the same length, got {len(a)} and {len(b)}")
    sign = 1.0 if higher_is_better else -1.0
    diffs = np.array([sign * (float(x) - float(y)) for x, y in zip(a, b)
                      if math.isfinite(float(x)) and math.isfinite(float(y))], dtype=float)
    n = int(diffs.size)
    better = int((diffs > tie).sum())
    worse = int((diffs < -tie).sum())
    ties = n - better - worse
    p = sign_test(better, worse)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, 0, 0, 0, 1.0, "inconclusive")
    q1, median, q3 = (float(v) for v in np.percentile(diffs, [25, 50, 75]))
    outcome: Outcome = "inconclusive"
    if n >= min_pairs and p < ALPHA:
        outcome = "holds" if better > worse else "does not hold"
    return Paired(n, median, q1, q3, better, worse, ties, p, outcome)


def verdict(outcomes: Sequence[Outcome | bool | None]) -> str:
    """The verdict of a claim from its checks, decided ones first: ``supported`` (every decided check holds),
    ``not supported`` (none), ``partly supported``; with `` (k of n inconclusive)`` when some checks are
    undecided (their paired test cannot tell, or their n is below the minimum); ``inconclusive`` when no check
    is decided; ``no data`` without checks. A bool is a check decided without a test, None an undecided one.

    >>> verdict(["holds", True]), verdict(["holds", "inconclusive"]), verdict([False, "does not hold"])
    ('supported', 'supported (1 of 2 inconclusive)', 'not supported')
    >>> verdict([None, "inconclusive"]), verdict([])
    ('inconclusive', 'no data')
    """
    if not outcomes:
        return "no data"
    decided = [o is True or o == "holds" for o in outcomes if o is not None and o != "inconclusive"]
    undecided = len(outcomes) - len(decided)
    if not decided:
        return "inconclusive"
    text = "supported" if all(decided) else "not supported" if not any(decided) else "partly supported"
    return text + (f" ({undecided} of {len(outcomes)} inconclusive)" if undecided else "")


def rate_text(successes: int, n: int) -> str:
    """``7/9 (45–94%)``: successes of n with the Wilson 95% interval.

    >>> rate_text(7, 9), rate_text(0, 0)
    ('7/9 (45–94%)', '0/0')
    """
    if n <= 0:
        return "0/0"
    low, high = wilson(successes, n)
    return f"{successes}/{n} ({100 * low:.0f}–{100 * high:.0f}%)"


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def truthy(value: Any) -> bool:
    """A table cell read as a yes/no: True, or the text true, 1 or yes (any case).

    >>> truthy(True), truthy("True"), truthy("0"), truthy("")
    (True, True, False, False)
    """
    return value is True or str(value).strip().lower() in ("true", "1", "yes")
