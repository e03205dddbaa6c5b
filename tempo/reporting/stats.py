"""Mean and 95% confidence interval across seeds (Student t, no scipy)."""

from __future__ import annotations

import math
from dataclasses import dataclass

# t_{0.975, df} for df = 1..30, then anchors interpolated in 1/df; the normal 1.96 beyond.
_T975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
    2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
    2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
    2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
)  # fmt: skip
_T975_ANCHORS = ((30, 2.042272), (40, 2.021075), (60, 2.000298), (120, 1.979930))
Z975 = 1.959964


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    for (lo_df, lo_t), (hi_df, hi_t) in zip(_T975_ANCHORS, _T975_ANCHORS[1:], strict=False):
        if df <= hi_df:
            frac = (1 / lo_df - 1 / df) / (1 / lo_df - 1 / hi_df)
            return lo_t + frac * (hi_t - lo_t)
    hi_df, hi_t = _T975_ANCHORS[-1]
    return Z975 + (hi_t - Z975) * hi_df / df  # linear in 1/df towards the normal quantile


@dataclass(frozen=True)
class Estimate:
    """Mean of n values and the half-width of its 95% CI (None when n < 2)."""

    mean: float
    half_width: float | None
    n: int
    std: float | None


def mean_ci(values: list[float]) -> Estimate | None:
    """Mean and t-interval half-width t_{0.975,n-1} * s / sqrt(n); None for no values."""
    n = len(values)
    if n == 0:
        return None
    mean = sum(values) / n
    if n < 2:
        return Estimate(mean, None, 1, None)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Estimate(mean, t_quantile_975(n - 1) * std / math.sqrt(n), n, std)
