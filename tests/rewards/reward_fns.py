"""Reward functions for the tests, importable by path from the spawned workers.

Each is a user's TRL-style reward function: keyword arguments in, one number per completion
out; some misbehave on purpose (sleep, raise, return the wrong thing, eat memory, exit).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any


def exact_check(pred: str, gold: str) -> bool:
    """A task's own answer check: string equality (no Math-Verify, so workers start fast)."""
    return pred == gold


def partial_credit(
    completions: Sequence[str], answers: Sequence[str | None], golds: Sequence[str], **_: Any
) -> list[float]:
    """1.0 for the gold answer, 0.25 for any other answer, 0.0 for no answer."""
    return [
        0.0 if answer is None else 1.0 if answer == gold else 0.25
        for answer, gold in zip(answers, golds, strict=True)
    ]


def column_reward(
    prompts: Sequence[str], completions: Sequence[str], difficulty: Sequence[int], scale: float
) -> list[float]:
    """scale * the row's `difficulty` column + the prompt's length (no **kwargs: it gets only
    the arguments it names)."""
    return [scale * d + len(p) for p, d in zip(prompts, difficulty, strict=True)]


def argument_names(completions: Sequence[str], **kwargs: Any) -> list[float]:
    """Encodes which arguments arrived: 1.0 iff exactly the expected names came, with lists."""
    expected = {"prompts", "answers", "golds", "difficulty", "source", "bonus"}
    ok = set(kwargs) == expected and all(
        len(kwargs[k]) == len(completions) for k in expected - {"bonus"}
    )
    return [float(ok) + kwargs.get("bonus", 0.0)] * len(completions)


def numpy_reward(completions: Sequence[str], **_: Any) -> Any:
    import numpy as np

    return np.arange(len(completions), dtype=np.float32) / 4


def slow(completions: Sequence[str], seconds: float = 60.0, **_: Any) -> list[float]:
    time.sleep(seconds)
    return [1.0] * len(completions)


def crash(completions: Sequence[str], **_: Any) -> list[float]:
    raise ValueError("boom")


def wrong_length(completions: Sequence[str], **_: Any) -> list[float]:
    return [1.0] * (len(completions) + 1)


def nan_reward(completions: Sequence[str], **_: Any) -> list[float]:
    return [math.nan] * len(completions)


def not_numbers(completions: Sequence[str], **_: Any) -> list[Any]:
    return ["1.0"] * len(completions)


def allocate(completions: Sequence[str], mib: int = 8192, **_: Any) -> list[float]:
    """Allocate (and touch) ``mib`` MiB: past the worker's memory limit."""
    blob = bytearray(mib * 2**20)
    return [float(len(blob) > 0)] * len(completions)


def die(completions: Sequence[str], **_: Any) -> list[float]:
    os._exit(3)


def add(a: int, b: int) -> int:
    """A plain job target for the worker protocol tests."""
    return a + b


def unpicklable_reply() -> Any:
    return lambda: None


def needs_difficulty(completions: Sequence[str], difficulty: Sequence[int]) -> list[float]:
    return [float(d) for d in difficulty]


def no_completions(texts: Sequence[str]) -> list[float]:
    return [0.0] * len(texts)


class NotAFunction:
    pass


def length_credit(completions: Sequence[str], **_: Any) -> list[float]:
    """Partial credit by length: len / 100 (deterministic in the completion's text)."""
    return [len(c) / 100 for c in completions]
