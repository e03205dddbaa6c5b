"""The built-in reward functions, for ``reward.functions`` entries.

``tempo.rewards.builtin.accuracy``: 1.0 if the answer is correct (the task's own
``answer_check`` when it has one, else Math-Verify). ``tempo.rewards.builtin.boxed_format``:
1.0 if the completion ends its answer in a closed, non-empty ``\\boxed{}``. In a
`RewardScorer` they are not batch calls in a worker: accuracy reuses the correctness the
scorer computes anyway (per answer, each check timed in the verifier workers), and
boxed_format is a linear scan in the trainer. Called directly (TRL-style keyword arguments),
they score on their own: accuracy with Math-Verify in the shared pool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tempo.rewards.math_rewards import format_reward, shared_pool

F = TypeVar("F", bound=Callable[..., Any])


def _builtin(kind: str) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        fn.tempo_builtin = kind  # type: ignore[attr-defined]
        return fn

    return mark


@_builtin("accuracy")
def accuracy(
    completions: Sequence[str], golds: Sequence[str], extraction: str = "boxed", **_: Any
) -> list[float]:
    """1.0 per completion whose answer Math-Verify finds equivalent to its gold, else 0.0
    (``extraction``: boxed | math_verify, as ``reward.extraction``)."""
    return shared_pool().verify(list(completions), list(golds), extraction)[0]


@_builtin("boxed_format")
def boxed_format(completions: Sequence[str], **_: Any) -> list[float]:
    """1.0 per completion that ends its answer in a closed, non-empty ``\\boxed{...}``."""
    return [format_reward(c) for c in completions]
