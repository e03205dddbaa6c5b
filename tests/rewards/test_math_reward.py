"""Tests for math_reward and VerifierPool (real Math-Verify plus injected worker targets)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from tempo.rewards import VerifierPool, math_reward

HALF_FORMS = ["1/2", "0.5", "\\frac{1}{2}"]


def hang_on_marker(pred: str, gold: str) -> bool:
    """Test worker target: hangs on ``HANG``, raises on ``BOOM``, exits on ``DIE``."""
    if pred == "HANG":
        time.sleep(600)
    if pred == "BOOM":
        raise ValueError("boom")
    if pred == "DIE":
        os._exit(3)
    return pred.replace(" ", "") == gold.replace(" ", "")


@pytest.fixture(scope="module")
def pool() -> Iterator[VerifierPool]:
    with VerifierPool(timeout=10.0) as p:
        yield p


@pytest.mark.parametrize("pred", HALF_FORMS)
@pytest.mark.parametrize("gold", HALF_FORMS)
def test_equivalent_forms_of_one_half(pool: VerifierPool, pred: str, gold: str) -> None:
    assert pool.score([f"so \\boxed{{{pred}}}."], [gold]) == [1.0]


@pytest.mark.parametrize(
    ("completion", "gold"),
    [
        ("\\boxed{14}", "14"),
        ("\\boxed{ 14 }", "14"),
        ("\\boxed{14}", " 14\n"),
        ("\\boxed{1,000}", "1000"),
        ("\\boxed{14.0}", "14"),
        ("\\boxed{-3}", "-3"),
        ("\\boxed{- 3}", "-3"),
        ("\\boxed{-\\frac{1}{2}}", "-0.5"),
        ("\\boxed{\\dfrac{3}{4}}", "0.75"),
        ("\\boxed{2}", "\\sqrt{4}"),
        ("\\boxed{1} at first, but then \\boxed{2}", "2"),
    ],
)
def test_accepts_equivalent(pool: VerifierPool, completion: str, gold: str) -> None:
    assert pool.score([completion], [gold]) == [1.0]


@pytest.mark.parametrize(
    ("completion", "gold"),
    [
        ("\\boxed{3}", "4"),
        ("\\boxed{0.51}", "1/2"),
        ("\\boxed{0.51}", "\\frac{1}{2}"),
        ("\\boxed{3}", "-3"),
        ("\\boxed{-3}", "3"),
        ("\\boxed{0.33}", "1/3"),
        ("\\boxed{2} at first, but then \\boxed{1}", "2"),
        ("the answer is 14", "14"),  # no box
        ("\\boxed{14", "14"),  # unbalanced
        ("\\boxed{}", "14"),
        ("\\boxed{x}", "14"),
        ("\\boxed{\\frac{}", "1"),
    ],
)
def test_rejects_wrong(pool: VerifierPool, completion: str, gold: str) -> None:
    assert pool.score([completion], [gold]) == [0.0]


def test_batch_order_fast_path_and_counters() -> None:
    with VerifierPool(workers=2) as p:
        completions = ["\\boxed{14}", "\\boxed{0.5}", "none", "\\boxed{3}", "\\boxed{\\frac12}"]
        golds = ["14", "1/2", "1", "4", "0.5"]
        start = time.perf_counter()
        assert p.score(completions, golds) == [1.0, 1.0, 0.0, 0.0, 1.0]
        elapsed = time.perf_counter() - start
        # "14" (identical) and "3" vs "4" (two integers) need no worker
        assert (p.fast_path, p.calls, p.timeouts, p.errors) == (2, 2, 0, 0)
        assert elapsed < 30.0
    with VerifierPool() as p:  # exact matches and integer pairs never start a worker
        assert p.score(["\\boxed{ 7 }"], ["7"]) == [1.0]
        assert p.score(["\\boxed{007}", "\\boxed{-3}", "\\boxed{-0}"], ["7", "3", "0"]) == [
            1.0,
            0.0,
            1.0,
        ]
        assert p.calls == 0 and not p._live


def test_math_reward() -> None:
    assert math_reward("We get \\boxed{\\frac{1}{2}}.", "0.5") == 1.0
    assert math_reward("We get \\boxed{0.51}.", "1/2") == 0.0
    assert math_reward("We get 1/2.", "1/2") == 0.0
    assert math_reward("\\boxed{-3}", "-3") == 1.0


def test_timeout_kills_and_replaces_worker() -> None:
    with VerifierPool(timeout=1.0, target=hang_on_marker) as p:
        assert p.score_answers(["1"], ["1 "]) == [1.0]  # warm: start-up is not timed
        start = time.perf_counter()
        scores = p.score_answers(["a b", "HANG", "c"], ["ab", "HANG!", "c d"])
        elapsed = time.perf_counter() - start
        assert scores == [1.0, 0.0, 0.0]
        assert p.timeouts == 1 and p.errors == 0
        assert elapsed < 1.0 + 5.0
        # The next call works on a fresh worker.
        assert p.score_answers(["x y"], ["xy"]) == [1.0]
        assert p.timeouts == 1


def test_timeout_with_several_workers_keeps_other_results() -> None:
    with VerifierPool(timeout=1.0, workers=2, target=hang_on_marker) as p:
        answers = ["HANG", "a", "b", "HANG", "c"]
        golds = ["x", "a", "z", "y", "c"]
        start = time.perf_counter()
        assert p.score_answers(answers, golds) == [0.0, 1.0, 0.0, 0.0, 1.0]
        assert time.perf_counter() - start < 2 * 1.0 + 8.0
        assert p.timeouts == 2


def test_per_call_timeout_override() -> None:
    with VerifierPool(timeout=60.0, target=hang_on_marker) as p:
        p.score_answers(["1"], ["2"])
        start = time.perf_counter()
        assert p.score_answers(["HANG"], ["x"], timeout=0.5) == [0.0]
        assert time.perf_counter() - start < 5.0
        assert p.timeouts == 1


def test_exceptions_and_dead_workers_count_as_errors() -> None:
    with VerifierPool(target=hang_on_marker) as p:
        assert p.score_answers(["BOOM", "a", "DIE", "b"], ["x", "a", "x", "b!"]) == [
            0.0,
            1.0,
            0.0,
            0.0,
        ]
        assert p.errors == 2 and p.timeouts == 0
        assert p.score_answers(["q"], ["q "]) == [1.0]  # fast path
        assert p.score_answers(["q r"], ["qr"]) == [1.0]  # worker replaced


def test_closed_pool_and_bad_arguments() -> None:
    p = VerifierPool(target=hang_on_marker)
    p.close()
    with pytest.raises(RuntimeError, match="closed"):
        p.score_answers(["a"], ["b"])
    with pytest.raises(ValueError, match="golds"):
        VerifierPool().score(["a"], [])
    with pytest.raises(ValueError, match="timeout"):
        VerifierPool(timeout=0)


def test_unpicklable_target_fails_cleanly() -> None:
    with VerifierPool(target=lambda pred, gold: True) as p:
        with pytest.raises(Exception, match="pickle"):
            p.score_answers(["a"], ["b"])
        assert not p._live


def test_pool_works_off_the_main_thread(pool: VerifierPool) -> None:
    # Math-Verify's own signal-based timeouts would raise here; the pool's must not.
    results: list[list[float]] = []
    thread = threading.Thread(
        target=lambda: results.append(pool.score(["\\boxed{0.5}", "\\boxed{2}"], ["1/2", "3"]))
    )
    thread.start()
    thread.join(30.0)
    assert results == [[1.0, 0.0]]


def gold_is_the_answer_reversed(pred: str, gold: str) -> bool:
    """A task-specific check that disagrees with answer equivalence (picklable, top-level)."""
    return pred == gold[::-1]


def test_a_task_check_replaces_math_verify_and_its_shortcuts():
    from tempo.rewards.scorer import RewardScorer

    scorer = RewardScorer(timeout=5.0, check=gold_is_the_answer_reversed)
    try:
        out = scorer(["\\boxed{12}", "\\boxed{21}", "\\boxed{abc}", "no box"], ["21"] * 3 + ["x"])
    finally:
        scorer.close()
    # "12" is "21" reversed: right; "21" equals the gold string, which the exact-match and
    # integer shortcuts would have scored 1.0: the task's check says no.
    assert out.correct == [True, False, False, False]
    assert out.rewards == [1.0, 0.0, 0.0, 0.0]
    assert scorer.pool.fast_path == 0 and scorer.pool.calls == 3


def test_prestart_starts_the_workers_before_the_first_call() -> None:
    with VerifierPool(workers=2) as p:
        p.prestart()
        assert len(p._live) == 2 and all(w.proc.is_alive() for w in p._live)
        time.sleep(0.5)
        assert p.score(["\\boxed{0.5}", "\\boxed{2/4}"], ["1/2", "1/2"]) == [1.0, 1.0]
        assert len(p._live) == 2 and p.calls == 2  # no further worker was started
        p.prestart()  # already at the cap: a no-op
        assert len(p._live) == 2
    with pytest.raises(RuntimeError, match="closed"):
        p.prestart()


# (gold, prediction without \boxed{}, correct?) in the style of Math-Verify's own tests.
MATH_VERIFY_CASES = [
    ("\\frac{1}{2}", "The answer is $\\frac{1}{2}$", True),
    ("3", "x = 3", True),
    ("1/2", "so we get 0.5", True),
    ("14", "the answer is 14", True),
    ("\\sqrt{2}", "We find $x=\\sqrt{2}$.", True),
    ("(1,2)", "The point is $(1, 2)$", True),
    ("x^2+1", "$x^2 + 1$", True),
    ("0.1", "The rate is 10%", True),
    ("\\frac{3}{4}", "Therefore $\\dfrac{3}{4}$ of the cake is left.", True),
    ("-1/3", "we get $-\\frac{1}{3}$", True),
    ("\\pi", "The period is $\\pi$.", True),
    ("2", "The answer is $\\sqrt{4}$", True),
    ("1000", "a total of 1,000 apples", True),
    ("5", "I think it is 4, no wait, it is 5", True),  # the last expression counts
    ("14", "the answer is 15.", False),
    ("42", "first 42 then 41", False),
    ("3", "$x = 4$", False),
    ("7", "no numbers here", False),
]


@pytest.mark.parametrize(("gold", "prediction", "expected"), MATH_VERIFY_CASES)
def test_math_verify_extraction_reads_unboxed_answers(
    gold: str, prediction: str, expected: bool
) -> None:
    assert math_reward(prediction, gold) == 0.0  # boxed (the default): no box, no answer
    assert math_reward(prediction, gold, extraction="math_verify") == float(expected)


def test_math_verify_extraction_keeps_boxed_answers_and_returns_the_answer_text(
    pool: VerifierPool,
) -> None:
    completions = ["so \\boxed{0.5}.", "We find $x=\\sqrt{2}$.", "nothing", "", "\\boxed{3}"]
    golds = ["1/2", "\\sqrt{2}", "1", "1", "4"]
    scores, answers = pool.verify(completions, golds, "math_verify")
    assert scores == [1.0, 1.0, 0.0, 0.0, 0.0]
    # Math-Verify's extracted text is its normalised LaTeX: 0.5 in a box reads \frac{1}{2}.
    assert answers == ["\\frac{1}{2}", "x=\\sqrt{2}", None, None, "3"]
    assert pool.verify(completions, golds, "boxed") == (
        [1.0, 0.0, 0.0, 0.0, 0.0],
        ["0.5", None, None, None, "3"],
    )
    with pytest.raises(ValueError, match="extraction"):
        pool.verify(completions, golds, "regex")
    with pytest.raises(ValueError, match="extraction"):
        math_reward("1", "1", extraction="last")


def test_math_verify_extraction_rejects_long_answers_and_is_timed() -> None:
    with VerifierPool(timeout=2.0, max_answer_chars=12) as p:
        long = "12345678901234"  # 14 characters: extracted, then not checked
        scores, answers = p.verify([f"${long}$", "$1234$"], [long, "1234"], "math_verify")
        assert scores == [0.0, 1.0] and answers == [long, "1234"]
        assert p.rejected == 1
        start = time.perf_counter()
        # 12 characters: within the cap, and Math-Verify's verify runs for hours on it.
        scores, _ = p.verify(["We get $10^{10^{10}}$.", "x = 2"], ["42", "2"], "math_verify")
        assert scores == [0.0, 1.0] and p.timeouts == 1
        assert time.perf_counter() - start < 2.0 + 8.0


@pytest.mark.parametrize(
    ("gold", "completion", "extraction"),
    [
        ("$28\\%$", "28 percent", "math_verify"),
        ("$28\\%$", "$28$ %", "math_verify"),
        ("$100%$", "so the error grows by $100\\%$", "math_verify"),
        ("$\\frac{1}{2}$", "The answer is \\boxed{0.5}", "boxed"),
    ],
)
def test_golds_with_their_own_math_delimiters_are_read_as_written(gold, completion, extraction):
    # Wrapped in \boxed{...} these golds would not parse ("\boxed{$28\%$}"); read as written
    # they do, as Math-Verify's own regression cases write them.
    assert math_reward(completion, gold, extraction=extraction) == 1.0
    assert math_reward(completion, "$7$", extraction=extraction) == 0.0
