"""Validation shared by the temperature methods: every bad value becomes one ConfigError
naming the key, the value and what is allowed."""

from __future__ import annotations

import math

from tempo.config_error import ConfigError


def check_number(key: str, value: object, allowed: str = "a finite number") -> float:
    """A finite real number (bools and strings rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(key, value, allowed)
    return float(value)


def check_temperature(key: str, value: object) -> float:
    """A sampling temperature: finite and > 0."""
    allowed = "a finite number > 0"
    if check_number(key, value, allowed) <= 0:
        raise ConfigError(key, value, allowed)
    return float(value)


def check_temperature_range(low_key: str, low: object, high_key: str, high: object) -> tuple:
    """Two temperatures with low < high (e.g. T_min < T_max)."""
    lo, hi = check_temperature(low_key, low), check_temperature(high_key, high)
    if not lo < hi:
        raise ConfigError(low_key, low, f"a temperature < {high_key}={high}")
    return lo, hi


def check_positive(key: str, value: object) -> float:
    """A finite number > 0 (rates, scales, thresholds)."""
    allowed = "a finite number > 0"
    if check_number(key, value, allowed) <= 0:
        raise ConfigError(key, value, allowed)
    return float(value)


def check_int(key: str, value: object, minimum: int = 1) -> int:
    """An integer >= minimum (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, value, f"an integer >= {minimum}")
    return value


def check_unit_interval(key: str, value: object, open_low: bool = True) -> float:
    """A number in (0, 1] (or [0, 1] when open_low is False)."""
    allowed = "a number in (0, 1]" if open_low else "a number in [0, 1]"
    v = check_number(key, value, allowed)
    if v > 1 or v < 0 or (open_low and v == 0):
        raise ConfigError(key, value, allowed)
    return v


def check_open_unit(key: str, value: object) -> float:
    """A number strictly inside (0, 1) (EDT's base N, a quantile level)."""
    allowed = "a number in (0, 1)"
    v = check_number(key, value, allowed)
    if not 0 < v < 1:
        raise ConfigError(key, value, allowed)
    return v


def check_choice(key: str, value: object, choices: tuple[str, ...]) -> str:
    """One of a fixed set of strings."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(key, value, "one of " + ", ".join(choices))
    return value
