"""Paired comparisons of methods against a baseline across seeds (no scipy).

Runs with the same seed see the same prompts in the same order, so a method and the baseline
are compared by their per-seed differences d_s = method_s - baseline_s: the mean difference
with a Student-t interval and a bootstrap percentile interval, the wins / ties / losses over
seeds, and the number of seeds a paired t-test would need to resolve the observed difference
(two-sided 5% level, 80% power), which says whether "no difference" means "none" or "too few
seeds".
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


# ---------------------------------------------------------------------------- Student t
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (bisection on `t_cdf`; |error| < 1e-10)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2.0


# ---------------------------------------------------------------------------- the comparison
@dataclass(frozen=True)
class PairedDifference:
    """A method minus the baseline over the seeds both have a value for."""

    method: str
    baseline: str
    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    std: float | None  # sample standard deviation of the differences (None when n < 2)
    t_interval: tuple[float, float] | None  # 95%, None when n < 2
    bootstrap_interval: tuple[float, float] | None  # 95% percentile, None when n < 2
    wins: int
    ties: int
    losses: int
    seeds_needed: int | None  # for 95% confidence and 80% power; None: no difference seen

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def resolved(self) -> bool:
        """True when the t-interval excludes 0."""
        lo_hi = self.t_interval
        return lo_hi is not None and (lo_hi[0] > 0 or lo_hi[1] < 0)


def bootstrap_interval(
    values: list[float],
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile interval of the mean of `values` resampled with replacement (seeded)."""
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    alpha = (1.0 - level) / 2.0
    lo = means[max(0, math.floor(alpha * resamples))]
    hi = means[min(resamples - 1, math.ceil((1.0 - alpha) * resamples) - 1)]
    return lo, hi


def seeds_needed(
    mean: float, std: float | None, alpha: float = 0.05, power: float = 0.80, most: int = 10_000
) -> int | None:
    """Smallest n with (t_{1-alpha/2, n-1} + t_{power, n-1}) * std / sqrt(n) <= |mean|: the
    seeds a two-sided paired t-test needs to detect a true difference `mean` with that power
    (the usual approximation, with the observed std as the true one). None when mean = 0 or
    std is unknown; `most` + 1 when even `most` seeds would not do."""
    if std is None or mean == 0:
        return None
    if std == 0:
        return 2
    for n in range(2, most + 1):
        df = n - 1
        margin = (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * std / math.sqrt(n)
        if margin <= abs(mean):
            return n
    return most + 1


def paired_difference(
    method: str,
    baseline: str,
    method_values: dict[int, float],
    baseline_values: dict[int, float],
    tie_tolerance: float = 1e-12,
) -> PairedDifference | None:
    """`method` - `baseline` over the seeds in both dicts (seed -> value); None if none."""
    seeds = tuple(sorted(set(method_values) & set(baseline_values)))
    if not seeds:
        return None
    diffs = tuple(method_values[s] - baseline_values[s] for s in seeds)
    n = len(diffs)
    mean = sum(diffs) / n
    std = t_int = boot = None
    if n >= 2:
        std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
        half = t_quantile(0.975, n - 1) * std / math.sqrt(n)
        t_int = (mean - half, mean + half)
        boot = bootstrap_interval(list(diffs))
    wins = sum(d > tie_tolerance for d in diffs)
    losses = sum(d < -tie_tolerance for d in diffs)
    return PairedDifference(
        method=method,
        baseline=baseline,
        seeds=seeds,
        differences=diffs,
        mean=mean,
        std=std,
        t_interval=t_int,
        bootstrap_interval=boot,
        wins=wins,
        ties=n - wins - losses,
        losses=losses,
        seeds_needed=seeds_needed(mean, std),
    )
