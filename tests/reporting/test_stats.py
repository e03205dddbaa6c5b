"""The t quantile and the mean / 95% CI helper."""

from __future__ import annotations

import math

import pytest

from tempo.reporting.stats import mean_ci, t_quantile_975


@pytest.mark.parametrize(
    ("df", "expected"),
    [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (10, 2.228), (30, 2.042)],
)
def test_t_quantile_known_values(df: int, expected: float) -> None:
    assert t_quantile_975(df) == pytest.approx(expected, abs=1e-3)


def test_t_quantile_beyond_table() -> None:
    assert t_quantile_975(60) == pytest.approx(2.000, abs=1e-3)
    assert t_quantile_975(120) == pytest.approx(1.980, abs=1e-3)
    assert 2.000 < t_quantile_975(50) < 2.021  # interpolated between the 40 and 60 anchors
    assert t_quantile_975(10**6) == pytest.approx(1.96, abs=1e-3)
    values = [t_quantile_975(df) for df in range(1, 500)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # decreasing
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_mean_ci_three_values_by_hand() -> None:
    est = mean_ci([0.3, 0.4, 0.5])
    assert est is not None
    assert est.n == 3
    assert est.mean == pytest.approx(0.4)
    assert est.std == pytest.approx(0.1)
    assert est.half_width == pytest.approx(4.303 * 0.1 / math.sqrt(3), rel=1e-3)


def test_mean_ci_single_and_empty() -> None:
    est = mean_ci([0.7])
    assert est is not None and est.mean == 0.7 and est.half_width is None and est.n == 1
    assert mean_ci([]) is None
