"""Fuzz: hostile completions never crash, hang or eat memory in the reward.

Over 500 seeded hostile completions (``hostile.py``: power towers, factorial towers, 10k-deep
braces, megabyte outputs, malformed LaTeX, control and non-ASCII characters, huge integers,
sympy-hostile expressions, noise; countdown expressions) go through `RewardScorer` in batches,
a subset through `math_reward` one at a time. Every call must return well-formed scores within
its bound, every overrun must be counted as a timeout (and its worker replaced), the parent's
memory must stay flat, and no worker may outlive ``close()``. Run with ``pytest -s`` to see the
summary lines (inputs tried, timeouts, errors, worst latency).
"""

from __future__ import annotations

import itertools
import os
import resource
import signal
import time
from collections.abc import Iterable, Iterator

import pytest

from tempo.data.countdown import check_countdown
from tempo.rewards import VerifierPool, extract_boxed, format_reward, math_reward, shared_pool
from tempo.rewards.equivalence import MAX_NESTING, nesting_depth
from tempo.rewards.scorer import RewardScorer, ScoredBatch
from tests.rewards.hostile import Hostile, boxed, hostile_countdown, hostile_math

SEED = 20240611
TIMEOUT = 2.0  # per answer check, seconds
WORKERS = 2
BATCH = 8
# A call's bound beyond its items' timeouts: a replacement worker's start-up (importing sympy and
# Math-Verify, ~1 s on an idle core) on a loaded machine, plus bookkeeping.
SLACK = 8.0
N_MATH = 420
N_COUNTDOWN = 100
SINGLE_EVERY = 10  # every 10th math item also goes through math_reward on its own
FORMAT_WEIGHT = 0.5
RSS_BUDGET_MB = 100  # measured: a few MB; all the megabyte items kept alive would be ~60


def _rss_mb() -> float:
    """Current resident set size of this process (MiB)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _children() -> set[int]:
    """Pids of this process's children, zombies included (an unreaped worker is a leak too)."""
    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:  # fields: state, ppid, ...
            found.add(int(entry))
    return found


def _batches(items: Iterable[Hostile], size: int) -> Iterator[list[Hostile]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _check_scores(out: ScoredBatch, batch: list[Hostile], format_weight: float) -> None:
    assert len(out.rewards) == len(out.correct) == len(out.answers) == len(batch)
    for i, (item, reward, correct, answer) in enumerate(
        zip(batch, out.rewards, out.correct, out.answers, strict=True)
    ):
        assert type(reward) is float and type(correct) is bool, item.category
        assert answer == extract_boxed(item.completion)
        assert reward == float(correct) + format_weight * format_reward(item.completion)
        if format_weight:
            assert out.components["boxed_format"][i] == format_reward(item.completion)
            assert out.components["accuracy"][i] == float(correct)
        if answer is None:
            assert not correct


def _worker_pids(pool: VerifierPool) -> set[int]:
    return {w.proc.pid for w in pool._live if w.proc.pid is not None}


def test_hostile_math_completions_through_the_scorer() -> None:
    functions = [
        {"_target_": "tempo.rewards.builtin.accuracy", "weight": 1.0},
        {"_target_": "tempo.rewards.builtin.boxed_format", "weight": FORMAT_WEIGHT},
    ]
    scorer = RewardScorer(timeout=TIMEOUT, workers=WORKERS, functions=functions)
    pool = scorer.pool
    pids: set[int] = set()
    tried = hangers = 0
    worst_call = 0.0
    try:
        # Warm both workers: start-up is bounded by its own timeout, not the items'.
        scorer(["\\boxed{0.5}", "\\boxed{x^{2}+1}"], ["\\frac{1}{2}", "1+x^2"])
        pids |= _worker_pids(pool)
        rss_before, peak_before = _rss_mb(), _peak_rss_mb()
        for batch in _batches(hostile_math(N_MATH, seed=SEED), BATCH):
            timeouts, calls, errors = pool.timeouts, pool.calls, pool.errors
            start = time.perf_counter()
            out = scorer([h.completion for h in batch], [h.gold for h in batch])
            elapsed = time.perf_counter() - start
            pids |= _worker_pids(pool)
            _check_scores(out, batch, FORMAT_WEIGHT)
            tried += len(batch)
            worst_call = max(worst_call, elapsed)
            sent, overran = pool.calls - calls, pool.timeouts - timeouts
            known = sum(h.hangs for h in batch)
            hangers += known
            assert elapsed <= max(sent, 1) * TIMEOUT + SLACK, [h.completion[:60] for h in batch]
            assert overran <= sent
            assert overran + (pool.errors - errors) <= sent
            assert overran >= known  # an input that runs for hours must be cut off
            if overran:
                assert elapsed >= TIMEOUT  # only a check that really ran out counts
        rss_growth = _rss_mb() - rss_before
        peak_growth = _peak_rss_mb() - peak_before

        assert tried == N_MATH
        assert hangers >= 3 and pool.timeouts >= hangers
        # No item held a worker much past its deadline: overruns are killed promptly.
        assert pool.max_latency <= TIMEOUT + 1.0
        assert rss_growth < RSS_BUDGET_MB and peak_growth < RSS_BUDGET_MB
        assert pool.rejected > 0  # the megabyte and 10^5-digit answers never reached a worker

        # The replaced workers still verify: Math-Verify, not the shortcuts, decides these.
        calls = pool.calls
        out = scorer(
            ["\\boxed{\\frac{84}{2}}", "so \\boxed{0.5}", "\\boxed{42}", "\\boxed{41}"],
            ["42", "\\frac{1}{2}", "42", "42"],
        )
        assert out.correct == [True, True, True, False]
        assert pool.calls == calls + 2
        stats = scorer.stats()
        assert stats["reward/verifier_timeouts"] == pool.timeouts
        assert stats["reward/verifier_rejected"] == pool.rejected
        assert stats["reward/verifier_max_latency_s"] == pool.max_latency
        pids |= _worker_pids(pool)
    finally:
        scorer.close()
    assert not pids & _children(), "verifier workers outlived close()"
    print(
        f"\nhostile math via RewardScorer: inputs tried={tried} (known hangers {hangers}),"
        f" timeouts={pool.timeouts}, errors={pool.errors} (last {pool.last_error}),"
        f" rejected={pool.rejected}, sent to workers={pool.calls}, fast path={pool.fast_path},"
        f" worst item latency={pool.max_latency:.2f} s, worst call ({BATCH} items)"
        f"={worst_call:.2f} s, parent RSS growth={rss_growth:.0f} MB (peak {peak_growth:.0f} MB),"
        f" worker processes started={len(pids)}"
    )


def test_hostile_completions_through_math_reward_one_call_each() -> None:
    items = list(itertools.islice(hostile_math(N_MATH, seed=SEED), 0, None, SINGLE_EVERY))
    items.append(Hostile("power", boxed("9^{9^{9^{9}}}"), "42", hangs=True))
    pool = shared_pool()
    math_reward("\\boxed{0.5}", "1/2", timeout=TIMEOUT)  # warm
    worst = 0.0
    timeouts_before = pool.timeouts
    for item in items:
        timeouts = pool.timeouts
        start = time.perf_counter()
        score = math_reward(item.completion, item.gold, timeout=TIMEOUT)
        elapsed = time.perf_counter() - start
        worst = max(worst, elapsed)
        overran = pool.timeouts - timeouts
        assert score in (0.0, 1.0) and type(score) is float
        assert elapsed <= TIMEOUT + SLACK, item.completion[:60]
        assert overran in (0, 1)
        if item.hangs:
            assert overran == 1
        if overran:
            assert elapsed >= TIMEOUT and score == 0.0
    # The shared pool's (replaced) worker still verifies.
    assert math_reward("We get \\boxed{\\frac{84}{2}}.", "42", timeout=TIMEOUT) == 1.0
    print(
        f"\nhostile math via math_reward: inputs tried={len(items)},"
        f" timeouts={pool.timeouts - timeouts_before}, worst call latency={worst:.2f} s"
    )


def test_hostile_math_completions_with_math_verify_extraction() -> None:
    """Math-Verify's own extraction reads the whole completion in the worker: still bounded."""
    items = list(itertools.islice(hostile_math(N_MATH, seed=SEED), 0, None, 2 * SINGLE_EVERY))
    items.append(Hostile("power", "We get $10^{10^{10}}$.", "42", hangs=True))
    scorer = RewardScorer(timeout=TIMEOUT, workers=WORKERS, extraction="math_verify")
    pool = scorer.pool
    pids: set[int] = set()
    worst_call = 0.0
    try:
        scorer(["x = 0.5", "$x^2+1$"], ["\\frac{1}{2}", "1+x^2"])  # warm both workers
        for batch in _batches(items, BATCH):
            calls, timeouts = pool.calls, pool.timeouts
            start = time.perf_counter()
            out = scorer([h.completion for h in batch], [h.gold for h in batch])
            elapsed = time.perf_counter() - start
            pids |= _worker_pids(pool)
            worst_call = max(worst_call, elapsed)
            sent = pool.calls - calls
            assert len(out.rewards) == len(out.correct) == len(out.answers) == len(batch)
            assert out.rewards == [float(c) for c in out.correct]
            assert all(a is None or type(a) is str for a in out.answers)
            assert elapsed <= max(sent, 1) * TIMEOUT + SLACK, [h.completion[:60] for h in batch]
            assert pool.timeouts - timeouts <= sent
        assert pool.timeouts >= 1  # at least the appended tower ran out of time
        assert pool.max_latency <= TIMEOUT + 1.0
        out = scorer(["so the answer is $\\frac{84}{2}$", "x = 41"], ["42", "42"])
        assert out.correct == [True, False]
    finally:
        scorer.close()
    assert not pids & _children()
    print(
        f"\nhostile math via math_verify extraction: inputs tried={len(items)},"
        f" timeouts={pool.timeouts}, errors={pool.errors}, rejected={pool.rejected},"
        f" worst call ({BATCH} items)={worst_call:.2f} s"
    )


def test_hostile_countdown_completions() -> None:
    items = list(hostile_countdown(N_COUNTDOWN, seed=SEED))
    # In-process first: check_countdown has no worker to save it, so it must be bounded itself.
    worst_direct = 0.0
    for item in items:
        answer = extract_boxed(item.completion)
        if answer is None:
            continue
        start = time.perf_counter()
        assert check_countdown(answer, item.gold) in (True, False)
        worst_direct = max(worst_direct, time.perf_counter() - start)
    assert worst_direct < 0.5

    scorer = RewardScorer(timeout=TIMEOUT, workers=WORKERS, check=check_countdown)
    pool = scorer.pool
    pids: set[int] = set()
    worst_call = 0.0
    try:
        for batch in _batches(items, 25):
            calls = pool.calls
            start = time.perf_counter()
            out = scorer([h.completion for h in batch], [h.gold for h in batch])
            elapsed = time.perf_counter() - start
            pids |= _worker_pids(pool)
            _check_scores(out, batch, 0.0)
            worst_call = max(worst_call, elapsed)
            assert elapsed <= max(pool.calls - calls, 1) * TIMEOUT + SLACK
        # Exact evaluation never overruns or raises, on anything.
        assert pool.timeouts == 0 and pool.errors == 0
        assert pool.rejected > 0  # the megabyte expressions
        out = scorer(
            ["\\boxed{8*3*1}", "\\boxed{(8-5)*8}", "\\boxed{2*5*10}"],
            ["24|1,3,5,8", "24|1,3,5,8", "100|2,5,10|all"],
        )
        assert out.correct == [True, False, True]
    finally:
        scorer.close()
    assert not pids & _children()
    print(
        f"\nhostile countdown via RewardScorer: inputs tried={len(items)},"
        f" timeouts={pool.timeouts}, errors={pool.errors}, rejected={pool.rejected},"
        f" worst call (25 items)={worst_call:.2f} s, worst in-process check={worst_direct:.4f} s"
    )


# ----------------------------------------------------------------------- the guards, one by one


def allocate_mib(pred: str, gold: str) -> bool:
    """Test worker target: allocate ``pred`` MiB (and touch it), then say yes."""
    blob = bytearray(int(pred) * 2**20)
    return len(blob) >= 0


def echo(pred: str, gold: str) -> bool:
    return pred == gold


def test_memory_blowup_is_an_error_not_the_machines_memory() -> None:
    with VerifierPool(timeout=30.0, target=allocate_mib, shortcuts=False, memory_limit_mb=256) as p:
        assert p.score_answers(["1"], ["g"]) == [1.0]
        (first,) = _worker_pids(p)
        # 8 GiB: without the limit this would take the machine's memory (or the OOM killer).
        assert p.score_answers(["8192", "2"], ["g", "g"]) == [0.0, 1.0]
        assert (p.errors, p.last_error, p.timeouts) == (1, "MemoryError", 0)
        assert first not in _worker_pids(p)  # the worker that hit the cap was replaced


def test_sympy_blowup_stops_at_the_memory_limit() -> None:
    # Expanding (x+y+z+1)^300 grows by hundreds of MB a second; capped at 150 MB it fails fast
    # (Math-Verify may swallow the MemoryError and answer "not equivalent") instead of running
    # into the 30 s timeout with gigabytes.
    with VerifierPool(timeout=30.0, memory_limit_mb=150) as p:
        assert p.score_answers(["(x+y+z+1)^{300}"], ["x^2+1"]) == [0.0]
        assert p.timeouts == 0
        assert p.score(["\\boxed{0.5}"], ["1/2"]) == [1.0]


def test_long_answers_are_rejected_without_a_worker() -> None:
    with VerifierPool(target=echo, max_answer_chars=10) as p:
        long = "y" * 11
        assert p.score_answers([long, "x" * 11, "x" * 10], ["2", "y", "x" * 10]) == [0.0, 0.0, 1.0]
        assert (p.rejected, p.fast_path, p.calls) == (2, 1, 0) and not p._live
        assert p.score_answers([long], [long]) == [1.0]  # an exact match is still certain
    with VerifierPool(target=echo, max_answer_chars=None) as p:  # uncapped: 2 MB over the pipe
        big = "x" * (2 << 20)
        assert p.score_answers([big, big + "y"], [big + "y", big + "y"]) == [0.0, 1.0]
        assert p.rejected == 0 and p.calls == 1
    with pytest.raises(ValueError, match="max_answer_chars"):
        VerifierPool(max_answer_chars=0)
    with pytest.raises(ValueError, match="memory_limit_mb"):
        VerifierPool(memory_limit_mb=-1)


def test_integer_shortcut_is_ascii_only() -> None:
    with VerifierPool(target=echo) as p:
        # Fullwidth / Arabic-Indic digits are not plain integers to Math-Verify: no shortcut.
        assert p.score_answers(["\uff14\uff12", "\u0664\u0662", "042"], ["42", "42", "42"]) == [
            0.0,
            0.0,
            1.0,
        ]
        assert (p.fast_path, p.calls) == (1, 2)


def test_deep_nesting_is_not_parsed() -> None:
    assert nesting_depth("\\frac{\\sqrt{3}}{2^{(x+1)}}") == 3
    assert nesting_depth("}}{)(]") == 1 and nesting_depth("") == 0
    deep = "{" * 40 + "1" + "}" * 40  # Math-Verify would take minutes on this
    shallow = "(" * 3 + "1" + ")" * 3
    with VerifierPool(timeout=20.0) as p:
        assert p.score_answers([deep, shallow], ["1", "1"]) == [0.0, 1.0]
        assert p.timeouts == 0 and p.errors == 0
    assert nesting_depth(deep) > MAX_NESTING >= nesting_depth(shallow)


def test_idle_worker_killed_from_outside_does_not_cost_an_item() -> None:
    with VerifierPool(target=echo, shortcuts=False) as p:
        assert p.score_answers(["a"], ["a"]) == [1.0]
        (worker,) = p._live
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.join(10)
        assert p.score_answers(["b", "c"], ["b", "d"]) == [1.0, 0.0]
        assert p.errors == 0 and p.calls == 3


def test_extract_boxed_of_a_non_string_is_none() -> None:
    assert extract_boxed(None) is None  # type: ignore[arg-type]
    assert extract_boxed(b"\\boxed{1}") is None  # type: ignore[arg-type]
