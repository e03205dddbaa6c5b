"""Metrics over the k sampled completions of one problem: pass@k, avg@k, maj@k."""

from __future__ import annotations

from collections.abc import Sequence


def normalize_answer(answer: str | None) -> str | None:
    """Answer key for voting/counting: all whitespace removed; empty counts as no answer."""
    if answer is None:
        return None
    key = "".join(answer.split())
    return key or None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: 1 - C(n-c, k) / C(n, k).

    Uses the product form 1 - prod_{i=n-c+1}^{n} (1 - k/i), which avoids huge binomials.
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def avg_at_k(correct: Sequence[bool]) -> float:
    """Mean accuracy of the k samples of one problem."""
    if len(correct) == 0:
        raise ValueError("avg_at_k needs at least one sample")
    return sum(bool(x) for x in correct) / len(correct)


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool]) -> float:
    """1.0 if the majority-vote answer is correct, else 0.0.

    Answers are compared after removing whitespace; None (or empty) answers never vote.
    Ties go to the tied answer that occurs first. The winner counts as correct if any of
    its samples is: the verifier's failures (timeouts, errors) are false negatives.
    Returns 0.0 when no sample has an answer.
    """
    if len(answers) != len(correct):
        raise ValueError(f"got {len(answers)} answers but {len(correct)} correctness flags")
    votes: dict[str, int] = {}  # insertion order = first occurrence
    is_correct: dict[str, bool] = {}
    for answer, ok in zip(answers, correct, strict=True):
        key = normalize_answer(answer)
        if key is None:
            continue
        votes[key] = votes.get(key, 0) + 1
        is_correct[key] = is_correct.get(key, False) or bool(ok)
    if not votes:
        return 0.0
    winner = max(votes, key=votes.__getitem__)  # max keeps the first of equal maxima
    return 1.0 if is_correct[winner] else 0.0
