"""The A/B statistics on constructed inputs whose answers are known in closed form."""

from __future__ import annotations

import math

import pytest

from lorapipe.evaluate import stats


@pytest.mark.parametrize("a, b, expected", [
    ([1, 2, 3], [2, 2, 1], [1, 0, -1]),
    ([0.0, 5.0], [0.0, 5.0], [0, 0]),
    ([4.9], [5.0], [1]),
    ([], [], []),
])
def test_outcomes_sign_of_difference(a, b, expected):
    assert stats.outcomes(a, b) == expected


def test_outcomes_tolerance_makes_small_differences_ties():
    assert stats.outcomes([3.0, 3.0, 3.0], [3.2, 2.5, 4.0], tie_tolerance=0.25) == [0, -1, 1]


def test_outcomes_rejects_unpaired_lengths():
    with pytest.raises(ValueError, match="same length \\(got 2 and 1\\)"):
        stats.outcomes([1, 2], [1])


@pytest.mark.parametrize("results, expected", [
    ([1, 1, 1, 1], 1.0),
    ([-1, -1], 0.0),
    ([0, 0, 0], 0.5),
    ([1, 0, -1, 1], 0.625),  # (2 wins + 0.5 * 1 tie) / 4
    ([1, 0, 0, 0], 0.625),
])
def test_win_rate_counts_ties_as_half(results, expected):
    assert stats.win_rate(results) == pytest.approx(expected)


def test_win_rate_of_nothing_is_nan():
    assert math.isnan(stats.win_rate([]))


@pytest.mark.parametrize("results, lo, hi", [
    ([1] * 20, 1.0, 1.0),  # no variation: every resample gives the same rate
    ([0] * 20, 0.5, 0.5),
    ([-1] * 7, 0.0, 0.0),
])
def test_ci_degenerate_samples_have_zero_width(results, lo, hi):
    assert stats.win_rate_ci(results, n_resamples=300) == (pytest.approx(lo), pytest.approx(hi))


@pytest.mark.parametrize("p, n", [(0.5, 400), (0.8, 400), (0.3, 1000)])
def test_ci_matches_normal_approximation_for_large_n(p, n):
    # n pairs, a share p of wins and no ties: the win rate is a proportion, whose 95% interval is
    # close to p +- 1.96 * sqrt(p (1 - p) / n) for large n.
    wins = round(p * n)
    results = [1] * wins + [-1] * (n - wins)
    lo, hi = stats.win_rate_ci(results, n_resamples=4000, seed=1)
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    assert lo == pytest.approx(p - half, abs=0.012)
    assert hi == pytest.approx(p + half, abs=0.012)


def test_ci_is_seeded_and_contains_the_estimate():
    results = [1, 1, 0, -1, 1, 0, 1, -1, 1, 1]
    first = stats.win_rate_ci(results, seed=7)
    assert first == stats.win_rate_ci(results, seed=7)
    continuous = [0.1 * i ** 1.5 for i in range(30)]  # a different seed resamples differently
    assert stats.bootstrap_ci(continuous, n_resamples=200, seed=1) != stats.bootstrap_ci(continuous, n_resamples=200,
                                                                                         seed=2)
    assert first[0] <= stats.win_rate(results) <= first[1]


def test_bootstrap_with_custom_statistic_and_bad_level():
    lo, hi = stats.bootstrap_ci([2.0] * 10, statistic=lambda s: float(s.max()), n_resamples=100)
    assert (lo, hi) == (2.0, 2.0)
    with pytest.raises(ValueError, match="level must be between 0 and 1, got 95"):
        stats.bootstrap_ci([1.0], level=95)
    assert all(math.isnan(x) for x in stats.bootstrap_ci([]))


@pytest.mark.parametrize("wins, losses, expected", [
    (10, 0, 2 * 0.5 ** 10),  # 0.001953125
    (0, 10, 2 * 0.5 ** 10),
    (5, 5, 1.0),
    (0, 0, 1.0),
    (1, 0, 1.0),  # one decided pair proves nothing
    (8, 2, 2 * (1 + 10 + 45) / 1024),  # 0.109375
    (15, 5, 2 * sum(math.comb(20, i) for i in range(6)) / 2 ** 20),  # 0.04138946533203125
])
def test_sign_test_exact_two_sided(wins, losses, expected):
    assert stats.sign_test_p(wins, losses) == pytest.approx(expected)


@pytest.mark.parametrize("lo, hi, expected", [
    (0.55, 0.9, "better"), (0.1, 0.45, "worse"), (0.4, 0.6, "unclear"), (0.5, 0.7, "unclear"),
    (float("nan"), float("nan"), "unclear"),
])
def test_verdict_needs_the_whole_interval_on_one_side(lo, hi, expected):
    assert stats.verdict(lo, hi) == expected


def test_paired_mean_delta_constant_shift():
    d = stats.paired_mean_delta([1, 2, 3, 4], [2, 3, 4, 5], n_resamples=200)
    assert d == {"delta": pytest.approx(1.0), "ci_low": pytest.approx(1.0), "ci_high": pytest.approx(1.0)}


@pytest.mark.parametrize("values, mean, var", [([2, 4], 3.0, 1.0), ([5], 5.0, 0.0), ([1, 1, 1, 5], 2.0, 3.0)])
def test_mean_and_population_variance(values, mean, var):
    assert stats.mean(values) == pytest.approx(mean)
    assert stats.variance(values) == pytest.approx(var)
