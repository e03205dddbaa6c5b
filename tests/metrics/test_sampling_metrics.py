"""Tests for pass@k, avg@k and maj@k."""

import itertools
import math
from fractions import Fraction

import pytest

from tempo.metrics import avg_at_k, maj_at_k, normalize_answer, pass_at_k


def closed_form(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize("n", range(1, 13))
def test_pass_at_k_matches_closed_form(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(closed_form(n, c, k), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 2, 2), (6, 1, 3), (7, 3, 4), (4, 0, 2)])
def test_pass_at_k_matches_subset_enumeration(n: int, c: int, k: int) -> None:
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    expected = sum(any(s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12)


def test_pass_at_k_edges() -> None:
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 6, 5) == 1.0  # n - c = 4 < k: every k-subset has a correct one
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(1, 1, 1) == 1.0
    assert pass_at_k(1, 0, 1) == 0.0
    # Large n stays finite and accurate where binomials would be astronomically large.
    assert pass_at_k(2000, 1, 1000) == pytest.approx(0.5, rel=1e-12)
    exact = 1 - Fraction(math.comb(463, 100), math.comb(500, 100))
    assert pass_at_k(500, 37, 100) == pytest.approx(float(exact), rel=1e-12)


@pytest.mark.parametrize(
    ("n", "c", "k", "message"),
    [
        (5, 6, 1, "0 <= c <= n"),
        (5, -1, 1, "0 <= c <= n"),
        (5, 2, 0, "1 <= k <= n"),
        (5, 2, 6, "1 <= k <= n"),
        (0, 0, 1, "1 <= k <= n"),
    ],
)
def test_pass_at_k_rejects_bad_arguments(n: int, c: int, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("<", "\\<")):
        pass_at_k(n, c, k)


def test_avg_at_k() -> None:
    assert avg_at_k([True, False, True, True]) == 0.75
    assert avg_at_k([False]) == 0.0
    with pytest.raises(ValueError):
        avg_at_k([])


@pytest.mark.parametrize(
    ("answers", "correct", "expected"),
    [
        (["4", "4", "3"], [True, True, False], 1.0),
        (["3", "4", "3"], [False, True, False], 0.0),
        # Whitespace does not split votes: "1 / 2" and "1/2" are one answer with 2 votes.
        (["1 / 2", "7", "1/2"], [True, False, True], 1.0),
        # Tie: the earliest occurring of the tied answers wins.
        (["5", "6", "6", "5"], [False, True, True, False], 0.0),
        (["6", "5", "5", "6"], [True, False, False, True], 1.0),
        # A lone earlier answer does not beat a later pair.
        (["1", "2", "2"], [True, False, False], 0.0),
        # None never votes, even when it is the most common "answer".
        ([None, None, None, "8"], [False, False, False, True], 1.0),
        ([None, "", "  "], [False, False, False], 0.0),
        ([None, None], [False, False], 0.0),
        # The winner counts as correct if any of its samples is (e.g. one timed out).
        (["9", "9", "2"], [False, True, False], 1.0),
    ],
)
def test_maj_at_k(answers: list, correct: list, expected: float) -> None:
    assert maj_at_k(answers, correct) == expected


def test_maj_at_k_length_mismatch() -> None:
    with pytest.raises(ValueError, match="answers"):
        maj_at_k(["1"], [True, False])


def test_normalize_answer() -> None:
    assert normalize_answer(" \\frac{1}{ 2 }\n") == "\\frac{1}{2}"
    assert normalize_answer("   ") is None
    assert normalize_answer(None) is None
