"""Scores a batch of completions: correctness via Math-Verify plus an optional format bonus."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tempo.rewards.boxed import extract_boxed
from tempo.rewards.math_rewards import format_reward
from tempo.rewards.verifier import VerifierPool


@dataclass
class ScoredBatch:
    rewards: list[float]  # what the policy is trained on
    correct: list[bool]  # answer equivalent to the gold (what accuracy counts)
    answers: list[str | None]  # extracted final answers (None = no \boxed{})


class RewardScorer:
    """reward = correct + format_weight * has_boxed_answer, on a persistent verifier pool.

    `check` is a task's own picklable `(answer, gold) -> bool` (e.g. countdown's exact
    evaluation); it then replaces Math-Verify in the same timed workers, without the
    string/integer shortcuts that only hold for answer equivalence. `max_answer_chars` and
    `memory_limit_mb` bound what one answer may cost (see `VerifierPool`): whatever the
    completions, a call returns scores, each answer's check bounded by `timeout`.
    """

    def __init__(
        self,
        timeout: float = 5.0,
        workers: int = 1,
        format_weight: float = 0.0,
        check: Callable[[str, str], bool] | None = None,
        *,
        max_answer_chars: int | None = 1000,
        memory_limit_mb: int | None = 2048,
    ) -> None:
        self.pool = VerifierPool(
            timeout=timeout,
            workers=workers,
            target=check,
            shortcuts=check is None,
            max_answer_chars=max_answer_chars,
            memory_limit_mb=memory_limit_mb,
        )
        self.format_weight = float(format_weight)

    def __call__(self, completions: Sequence[str], golds: Sequence[str]) -> ScoredBatch:
        answers = [extract_boxed(c) for c in completions]
        correct = [s >= 1.0 for s in self.pool.score_answers(answers, golds)]
        rewards = [float(c) for c in correct]
        if self.format_weight:
            rewards = [
                r + self.format_weight * format_reward(c)
                for r, c in zip(rewards, completions, strict=True)
            ]
        return ScoredBatch(rewards, correct, answers)

    def prestart(self) -> None:
        """Start the verifier workers in the background (see `VerifierPool.prestart`)."""
        self.pool.prestart()

    def stats(self) -> dict[str, float]:
        """Cumulative counters of the verifier: timeouts, errors, items sent to workers,
        answers rejected as too long without a worker, and the longest time one answer held a
        worker (seconds; at most about the timeout)."""
        return {
            "reward/verifier_timeouts": float(self.pool.timeouts),
            "reward/verifier_errors": float(self.pool.errors),
            "reward/verifier_calls": float(self.pool.calls),
            "reward/verifier_rejected": float(self.pool.rejected),
            "reward/verifier_max_latency_s": float(self.pool.max_latency),
        }

    def close(self) -> None:
        self.pool.close()
