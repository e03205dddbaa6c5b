"""`evaluation_metrics` on constructed records, against values computed here independently."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from tempo.evaluation.metrics import all_ks, evaluation_metrics


def comb_pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator with explicit binomials: 1 - C(n-c, k) / C(n, k)."""
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_correct(answers, correct) -> bool:
    """The voted answer (most votes, earliest first among ties; None never votes) is right."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return False
    best = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == best)
    return any(ok for a, ok in zip(answers, correct, strict=True) if a == winner)


def random_records(count: int, n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        answers = [rng.choice(["1", "2", "3", None]) for _ in range(n)]
        records.append(
            {
                "greedy": rng.random() < 0.4,
                "answers": answers,
                "correct": [a == "1" for a in answers],
            }
        )
    return records


def test_hand_computed_example():
    records = [
        {"greedy": True, "correct": [True, False, False, False], "answers": ["1", "2", "2", "3"]},
        {"greedy": False, "correct": [True, False, False, True], "answers": ["5", "4", "4", "5"]},
    ]
    m = evaluation_metrics(records, all_ks(4), 4, True, "eval/t")
    assert m["eval/t/accuracy"] == 0.5
    assert m["eval/t/avg@4"] == pytest.approx((1 / 4 + 2 / 4) / 2)
    assert m["eval/t/pass@1"] == pytest.approx(m["eval/t/avg@4"])
    assert m["eval/t/pass@2"] == pytest.approx(((1 - 3 / 6) + (1 - 1 / 6)) / 2)
    assert m["eval/t/pass@3"] == pytest.approx(((1 - 1 / 4) + (1 - 0 / 4)) / 2)
    assert m["eval/t/pass@4"] == 1.0
    # votes over the first k answers; ties go to the answer seen first.
    # problem 1: k=1 "1" right, k=2 tie -> "1" right, k=3 and 4 "2" wrong
    # problem 2: k=1 "5" right, k=2 tie -> "5" right, k=3 "4" wrong, k=4 tie 2:2 -> "5" right
    assert [m[f"eval/t/maj@{k}"] for k in (1, 2, 3, 4)] == [1.0, 1.0, 0.0, 0.5]
    assert "eval/t/temperature_mean" not in m  # the records carry no temperatures


@pytest.mark.parametrize("n", [1, 4, 7])
def test_every_k_against_binomials_and_first_k_votes(n):
    records = random_records(40, n, seed=n)
    ks = all_ks(n)
    assert ks == tuple(range(1, n + 1))
    m = evaluation_metrics(records, ks, n, True, "eval/x")
    count = len(records)
    assert m["eval/x/accuracy"] == pytest.approx(sum(r["greedy"] for r in records) / count)
    expected_avg = sum(sum(r["correct"]) / n for r in records) / count
    assert m[f"eval/x/avg@{n}"] == pytest.approx(expected_avg)
    for k in ks:
        expected = sum(comb_pass_at_k(n, sum(r["correct"]), k) for r in records) / count
        assert m[f"eval/x/pass@{k}"] == pytest.approx(expected, abs=1e-12)
        votes = sum(majority_correct(r["answers"][:k], r["correct"][:k]) for r in records)
        assert m[f"eval/x/maj@{k}"] == pytest.approx(votes / count)
    passes = [m[f"eval/x/pass@{k}"] for k in ks]
    assert passes == sorted(passes)  # pass@k never decreases in k
    assert all(0.0 <= v <= 1.0 for v in m.values())


def test_maj_at_n_is_always_reported_and_only_requested_ks_otherwise():
    records = random_records(10, 8)
    m = evaluation_metrics(records, (1, 4), 8, False, "eval/y")
    assert "eval/y/accuracy" not in m
    assert sorted(k.split("/")[-1] for k in m) == sorted(
        ["avg@8", "pass@1", "pass@4", "maj@1", "maj@4", "maj@8"]
    )


def test_maj_uses_the_first_k_samples_only():
    # the first two samples agree on a wrong answer; the remaining three on the right one
    record = {"greedy": False, "answers": ["7", "7", "9", "9", "9"], "correct": [0, 0, 1, 1, 1]}
    m = evaluation_metrics([record], (1, 2, 3, 4, 5), 5, False, "e")
    assert [m[f"e/maj@{k}"] for k in range(1, 6)] == [0.0, 0.0, 0.0, 0.0, 1.0]


def test_temperature_mean_is_token_weighted():
    records = [
        {
            "greedy": False,
            "answers": ["1", "1"],
            "correct": [True, True],
            "temperatures": [0.5, 1.5],
            "lengths": [2, 6],
        },
        {
            "greedy": False,
            "answers": ["1", "1"],
            "correct": [True, False],
            "temperatures": [1.0, 1.0],
            "lengths": [4, 0],
        },
    ]
    m = evaluation_metrics(records, (1, 2), 2, False, "e")
    assert m["e/temperature_mean"] == pytest.approx((0.5 * 2 + 1.5 * 6 + 1.0 * 4) / 12)


def test_records_with_the_wrong_number_of_samples_are_rejected():
    with pytest.raises(ValueError, match="4 samples"):
        evaluation_metrics([{"greedy": 1, "correct": [1], "answers": ["1"]}], (1,), 4, True, "e")
    with pytest.raises(ValueError, match="at least one record"):
        evaluation_metrics([], (1,), 1, True, "e")
