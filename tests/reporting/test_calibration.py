"""The fixed-temperature sweep verdict against hand computations."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tempo.reporting.calibration import calibrate, calibration_table, label_temperature
from tempo.reporting.runs import FINISHED, Run
from tempo.reporting.tables import MetricSpec

KEY = "eval/arithmetic/accuracy"
SPEC = MetricSpec(KEY, "final")
T975_2 = 4.302653  # t_{0.975, 2}


def sweep(values: dict[float, list[float]], status: str = FINISHED) -> list[Run]:
    """Finished runs labelled fixed-T<t> with the given per-seed final accuracies."""
    runs = []
    for temperature, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            runs.append(
                Run(
                    path=Path(f"/x/{temperature}/{seed}"),
                    label=f"fixed-T{temperature}",
                    seed=seed,
                    status=status,
                    steps=10,
                    task="arithmetic",
                    summary={"final": {KEY: value}},
                )
            )
    return runs


def test_label_temperature():
    assert label_temperature("fixed-T1.3") == 1.3
    assert label_temperature("fixed-T1") == 1.0
    assert label_temperature("meta_policy") is None


def test_an_interior_optimum_with_paired_intervals_by_hand():
    runs = sweep(
        {
            0.4: [0.30, 0.32, 0.31],
            1.0: [0.40, 0.41, 0.45],
            1.6: [0.20, 0.25, 0.21],
        }
    )
    cal = calibrate(runs, SPEC)
    assert cal.best.temperature == 1.0
    assert cal.best.estimate.mean == pytest.approx(1.26 / 3)
    cool = cal.coolest_minus_best
    diffs = [-0.10, -0.09, -0.14]
    mean = sum(diffs) / 3
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    assert cool.mean == pytest.approx(mean)
    assert cool.t_interval[0] == pytest.approx(mean - T975_2 * std / math.sqrt(3), abs=1e-5)
    assert cool.t_interval[1] == pytest.approx(mean + T975_2 * std / math.sqrt(3), abs=1e-5)
    assert cal.hottest_minus_best.mean == pytest.approx((-0.20 - 0.16 - 0.24) / 3)
    assert cal.interior
    table = calibration_table([cal])
    assert table.headers[1:4] == ["T=0.4", "T=1", "T=1.6"]
    assert table.rows[0][4] == "1" and table.rows[0][-1] == "yes"


def test_an_end_that_is_best_or_not_resolved_is_no_interior_optimum():
    best_at_end = calibrate(sweep({0.4: [0.5, 0.6], 1.0: [0.4, 0.45], 1.6: [0.1, 0.2]}), SPEC)
    assert best_at_end.best.temperature == 0.4
    assert best_at_end.coolest_minus_best is None and not best_at_end.interior
    # the coolest end is worse on average but its paired interval straddles 0
    noisy = calibrate(
        sweep({0.4: [0.30, 0.50, 0.39], 1.0: [0.41, 0.42, 0.40], 1.6: [0.1] * 3}), SPEC
    )
    assert noisy.best.temperature == 1.0
    lo, hi = noisy.coolest_minus_best.t_interval
    assert lo < 0 < hi and noisy.coolest_minus_best.mean < 0
    assert not noisy.interior
    assert calibration_table([noisy]).rows[0][-1] == "no"


def test_fewer_than_three_temperatures_or_unfinished_runs_give_no_verdict():
    assert calibrate(sweep({0.4: [0.3], 1.0: [0.4]}), SPEC) is None
    assert calibrate(sweep({0.4: [0.3], 1.0: [0.4], 1.6: [0.1]}, status="failed"), SPEC) is None


def test_pairs_only_seeds_both_temperatures_have():
    runs = sweep({0.4: [0.30, 0.32], 1.0: [0.40, 0.41, 0.90], 1.6: [0.2, 0.2, 0.2]})
    cal = calibrate(runs, SPEC)
    assert cal.coolest_minus_best.seeds == (0, 1)
    assert cal.coolest_minus_best.mean == pytest.approx(-0.095)
