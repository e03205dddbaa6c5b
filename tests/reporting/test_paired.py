"""Paired statistics against hand computations and published t-table values."""

from __future__ import annotations

import itertools
import math

import pytest

from tempo.reporting.paired import (
    bootstrap_interval,
    paired_difference,
    seeds_needed,
    t_cdf,
    t_quantile,
)

# Student t quantiles from printed tables (4 decimals)
TABLE = [
    (0.975, 1, 12.7062), (0.975, 2, 4.3027), (0.975, 4, 2.7764), (0.975, 10, 2.2281),
    (0.975, 30, 2.0423), (0.80, 1, 1.3764), (0.80, 5, 0.9195), (0.80, 9, 0.8834),
    (0.80, 20, 0.8600), (0.95, 3, 2.3534),
]  # fmt: skip


@pytest.mark.parametrize(("p", "df", "value"), TABLE)
def test_t_quantile_matches_tables(p, df, value):
    assert t_quantile(p, df) == pytest.approx(value, abs=1e-4)
    assert t_quantile(1 - p, df) == pytest.approx(-value, abs=1e-4)
    assert t_cdf(value, df) == pytest.approx(p, abs=1e-4)


def test_t_cdf_closed_forms():
    # df = 1 is the Cauchy distribution: F(t) = 1/2 + atan(t)/pi
    for t in (-3.0, -0.5, 0.0, 0.7, 4.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    # df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    for t in (-2.0, 0.3, 5.0):
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)


def test_paired_difference_by_hand():
    method = {0: 0.40, 1: 0.45, 2: 0.38, 3: 0.50, 7: 0.9}
    base = {0: 0.38, 1: 0.40, 2: 0.39, 3: 0.46, 5: 0.1}
    got = paired_difference("tampo", "fixed", method, base)
    diffs = [0.02, 0.05, -0.01, 0.04]  # seeds 0-3 only: 5 and 7 are unpaired
    mean = sum(diffs) / 4
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 3)
    half = 3.182446 * std / 2  # t_{0.975, 3} * s / sqrt(4)
    assert got.seeds == (0, 1, 2, 3)
    assert got.differences == pytest.approx(diffs)
    assert got.mean == pytest.approx(mean)
    assert got.std == pytest.approx(std)
    assert got.t_interval == pytest.approx((mean - half, mean + half), abs=1e-6)
    assert (got.wins, got.ties, got.losses) == (3, 0, 1)
    assert not got.resolved  # the interval straddles 0 (half > mean)
    lo, hi = got.bootstrap_interval
    assert min(diffs) <= lo < mean < hi <= max(diffs)


def test_no_common_seed_and_single_pair():
    assert paired_difference("a", "b", {1: 1.0}, {2: 1.0}) is None
    one = paired_difference("a", "b", {1: 0.5}, {1: 0.5})
    assert one.n == 1 and one.t_interval is None and one.ties == 1 and one.seeds_needed is None


def test_bootstrap_matches_the_exact_resampling_distribution():
    values = [0.0, 1.0, 5.0]
    means = sorted(sum(c) / 3 for c in itertools.product(values, repeat=3))  # 27 equally likely
    exact_lo = means[math.floor(0.025 * 27)]  # the 2.5% quantile: the smallest value, 0
    exact_hi = means[math.ceil(0.975 * 27) - 1]  # the 97.5% quantile: 5
    lo, hi = bootstrap_interval(values)
    assert (lo, hi) == (exact_lo, exact_hi)
    # a wider level is never narrower, and equal values give a point interval
    assert bootstrap_interval([0.3] * 5) == (pytest.approx(0.3), pytest.approx(0.3))
    lo80, hi80 = bootstrap_interval([0.1, 0.4, 0.2, 0.9, 0.5], level=0.8)
    lo95, hi95 = bootstrap_interval([0.1, 0.4, 0.2, 0.9, 0.5], level=0.95)
    assert lo95 <= lo80 and hi80 <= hi95


def test_seeds_needed_by_hand():
    # (t_.975(n-1) + t_.80(n-1)) / sqrt(n) <= 1 first holds at n = 10:
    # n = 9: (2.3060 + 0.8889) / 3 = 1.065; n = 10: (2.2622 + 0.8834) / 3.1623 = 0.9947
    assert seeds_needed(1.0, 1.0) == 10
    assert seeds_needed(-0.5, 0.5) == 10  # scale-free, sign-free
    assert seeds_needed(0.0, 1.0) is None and seeds_needed(0.1, None) is None
    assert seeds_needed(1e-4, 1.0, most=50) == 51  # "more than 50"
    # a larger effect never needs more seeds
    assert seeds_needed(2.0, 1.0) <= seeds_needed(1.0, 1.0) <= seeds_needed(0.5, 1.0)
