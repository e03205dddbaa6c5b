"""Fixed-temperature sweeps: does the outcome have an interior optimum in T?

A testbed is *calibrated* for temperature studies when, on a headline metric, the best fixed
temperature of a sweep lies strictly inside the swept range and both the coolest and the
hottest swept temperature are worse than it, each with a paired 95% t-interval (over seeds,
which see the same prompts) that excludes 0. Then there is something for an adaptive method to
find. Runs are grouped by their label ``<prefix>T<temperature>`` (e.g. ``fixed-T0.7``, the
name `conf/experiment/temperature_sweep.yaml` gives them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tempo.reporting.paired import PairedDifference, paired_difference
from tempo.reporting.runs import Run
from tempo.reporting.stats import Estimate, mean_ci
from tempo.reporting.tables import MetricSpec, Table, fmt, seed_values

_TEMPERATURE_LABEL = re.compile(r"T(\d+(?:\.\d+)?)$")


def label_temperature(label: str) -> float | None:
    """The temperature at the end of a sweep label (``fixed-T1.3`` -> 1.3), else None."""
    match = _TEMPERATURE_LABEL.search(label)
    return float(match.group(1)) if match else None


@dataclass(frozen=True)
class SweepPoint:
    """One swept temperature: its label, per-seed values and their mean with a 95% CI."""

    temperature: float
    label: str
    values: dict[int, float]
    estimate: Estimate


@dataclass(frozen=True)
class Calibration:
    """One metric over a temperature sweep and the interior-optimum verdict."""

    metric: str
    points: tuple[SweepPoint, ...]  # by temperature
    best: SweepPoint
    coolest_minus_best: PairedDifference | None  # None when the coolest point is the best
    hottest_minus_best: PairedDifference | None

    @property
    def interior(self) -> bool:
        """Best strictly inside the range, both ends worse with intervals excluding 0."""
        ends = (self.coolest_minus_best, self.hottest_minus_best)
        return all(d is not None and d.resolved and d.mean < 0 for d in ends)


def sweep_points(runs: list[Run], spec: MetricSpec) -> list[SweepPoint]:
    """Per temperature label, the finished runs' per-seed values of `spec` (by temperature)."""
    points = []
    for label, by_seed in seed_values(runs, spec).items():
        temperature = label_temperature(label)
        estimate = mean_ci(list(by_seed.values()))
        if temperature is not None and estimate is not None:
            points.append(SweepPoint(temperature, label, by_seed, estimate))
    return sorted(points, key=lambda p: p.temperature)


def calibrate(runs: list[Run], spec: MetricSpec) -> Calibration | None:
    """The verdict for one metric (higher is better); None with fewer than 3 temperatures."""
    points = sweep_points(runs, spec)
    if len(points) < 3:
        return None
    best = max(points, key=lambda p: p.estimate.mean)

    def against_best(end: SweepPoint) -> PairedDifference | None:
        if end is best:
            return None
        return paired_difference(end.label, best.label, end.values, best.values)

    return Calibration(
        metric=spec.title,
        points=tuple(points),
        best=best,
        coolest_minus_best=against_best(points[0]),
        hottest_minus_best=against_best(points[-1]),
    )


def _difference_cell(diff: PairedDifference | None) -> str:
    if diff is None:
        return "(is the best)"
    if diff.t_interval is None:
        return f"{fmt(diff.mean)} (n=1)"
    lo, hi = diff.t_interval
    return f"{fmt(diff.mean)} [{fmt(lo)}, {fmt(hi)}] (end better on {diff.wins}/{diff.n} seeds)"


def calibration_table(results: list[Calibration]) -> Table:
    """Per metric: mean ± 95% CI at every temperature, the best T, both ends minus the best
    (paired t-interval) and whether the optimum is interior."""
    temperatures = sorted({p.temperature for c in results for p in c.points})
    headers = ["metric", *(f"T={t:g}" for t in temperatures), "best T"]
    headers += ["coolest - best", "hottest - best", "interior optimum"]
    rows = []
    for cal in results:
        by_t = {p.temperature: p.estimate for p in cal.points}
        cells = []
        for t in temperatures:
            est = by_t.get(t)
            if est is None:
                cells.append("")
            else:
                half = fmt(est.half_width) if est.half_width is not None else "n/a"
                cells.append(f"{fmt(est.mean)} ± {half}")
        rows.append(
            [
                cal.metric,
                *cells,
                f"{cal.best.temperature:g}",
                _difference_cell(cal.coolest_minus_best),
                _difference_cell(cal.hottest_minus_best),
                "yes" if cal.interior else "no",
            ]
        )
    note = (
        "Cells: mean ± 95% t-interval over seeds. Differences: per-seed paired (same seed = same "
        "prompts), mean [95% t-interval]. Interior optimum: the best T is inside the range and "
        "both ends are worse with an interval that excludes 0."
    )
    return Table("Fixed-temperature sweep", headers, rows, note)
