"""The book's uncertainty: Wilson intervals and the sign test against scipy, paired comparisons, verdicts."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from mnd.experiments import stats


@pytest.mark.parametrize(("k", "n"), [(0, 1), (1, 2), (7, 9), (9, 9), (3, 20), (50, 100)])
def test_wilson_matches_scipy(k, n):
    ci = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = stats.wilson(k, n)
    assert low == pytest.approx(ci.low, abs=1e-9) and high == pytest.approx(ci.high, abs=1e-9)


def test_wilson_refuses_impossible_counts_and_has_no_interval_without_images():
    with pytest.raises(ValueError, match="between 0 and n"):
        stats.wilson(3, 2)
    assert all(math.isnan(v) for v in stats.wilson(0, 0))


@pytest.mark.parametrize(("wins", "losses"), [(6, 0), (5, 1), (0, 7), (4, 4), (10, 3), (1, 0)])
def test_sign_test_matches_scipy_binomial(wins, losses):
    assert stats.sign_test(wins, losses) == pytest.approx(scipy_stats.binomtest(wins, wins + losses).pvalue)


def test_compare_counts_each_way_and_summarises_the_differences():
    a = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 9.0]
    b = [9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0]
    paired = stats.compare(a, b)
    assert (paired.n, paired.better, paired.worse, paired.ties) == (7, 6, 0, 1)
    assert paired.median == pytest.approx(3.0) and paired.q1 == pytest.approx(1.5) and paired.q3 == pytest.approx(4.5)
    assert paired.outcome == "holds" and paired.p == pytest.approx(1 / 32)
    assert paired.text(1, "dB") == "+3.0 [+1.5, +4.5] dB, 6↑ 0↓ 1=, p 0.031"


def test_compare_lower_is_better_turns_the_sign_and_the_outcome():
    paired = stats.compare([0.1] * 6, [0.2] * 6, higher_is_better=True)
    assert paired.outcome == "does not hold"
    assert stats.compare([0.1] * 6, [0.2] * 6, higher_is_better=False).outcome == "holds"


def test_compare_is_inconclusive_on_too_few_pairs_or_a_split():
    assert stats.compare([2.0] * 5, [1.0] * 5).outcome == "inconclusive"  # 5 of 5: p 0.0625
    assert stats.compare([2, 2, 2, 0, 0, 0], [1] * 6).outcome == "inconclusive"
    nan = float("nan")
    assert stats.compare([2.0, nan] * 4, [1.0] * 8).n == 4  # non-finite pairs are dropped
    with pytest.raises(ValueError, match="same length"):
        stats.compare([1.0], [1.0, 2.0])


def test_compare_tie_tolerance_makes_equal_at_print_precision_a_tie():
    paired = stats.compare([0.9996] * 7, [0.9995] * 7, tie=0.0005)
    assert paired.ties == 7 and paired.outcome == "inconclusive"


def test_degenerate_outputs_are_not_usable_successes():
    good = {"success": "True", "attacked": "True", "psnr": "34.0", "ssim": "0.95"}
    assert stats.usable(good)
    assert not stats.usable({**good, "psnr": "4.98", "ssim": "0.003"})  # the destroyed ALMA-SSIM image
    assert not stats.usable({**good, "ssim": "0.4"})
    assert not stats.usable({**good, "success": "False"})
    assert not stats.usable({**good, "psnr": "nan"})


def test_verdict_has_a_third_answer():
    assert stats.verdict(["holds", "holds"]) == "supported"
    assert stats.verdict(["holds", "does not hold"]) == "partly supported"
    assert stats.verdict(["does not hold"]) == "not supported"
    assert stats.verdict(["holds", "inconclusive"]) == "supported (1 of 2 inconclusive)"
    assert stats.verdict(["does not hold", None, None]) == "not supported (2 of 3 inconclusive)"
    assert stats.verdict([None, "inconclusive"]) == "inconclusive"
    assert stats.verdict([]) == "no data"


def test_rate_text_gives_the_interval():
    assert stats.rate_text(2, 2) == "2/2 (34–100%)"
