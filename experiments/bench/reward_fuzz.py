"""Fuzz the reward with hostile completions and report what it survived, one run.

Feeds N seeded hostile completions (``tests/rewards/hostile.py``: power and factorial towers,
deep nesting, unclosed boxes, megabyte outputs, malformed LaTeX, control and non-ASCII
characters, huge integers, sympy-hostile expressions, noise; a fifth of them countdown
expressions for ``check_countdown``) through ``RewardScorer`` in calls of --batch completions,
and prints inputs tried, timeouts, errors, rejected answers, the latency of a reward call
(worst / median / p99), per-category counts, and the peak RSS of this process and of its
worker processes.

    python experiments/bench/reward_fuzz.py [--n 2000] [--timeout 2] [--workers 2] [--batch 1]
"""

from __future__ import annotations

import argparse
import itertools
import resource
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # for tests.rewards.hostile

from tempo.data.countdown import check_countdown  # noqa: E402
from tempo.rewards.scorer import RewardScorer  # noqa: E402
from tests.rewards.hostile import Hostile, hostile_countdown, hostile_math  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(
    scorer: RewardScorer,
    items: Iterator[Hostile],
    batch: int,
    table: dict,
    latencies: list[float],
) -> tuple[int, int]:
    """Score ``items`` in calls of ``batch`` (generated as they go, so memory stays flat).

    Returns (calls that raised, which should be 0; items known to run for hours).
    """
    pool, crashes, known = scorer.pool, 0, 0
    while chunk := list(itertools.islice(items, batch)):
        known += sum(h.hangs for h in chunk)
        before = (pool.timeouts, pool.errors, pool.rejected)
        began = time.perf_counter()
        try:
            out = scorer([h.completion for h in chunk], [h.gold for h in chunk])
        except Exception as exc:  # the point of the exercise: this must never happen
            crashes += 1
            print(f"CRASH {type(exc).__name__}: {exc!s:.200}", flush=True)
            continue
        elapsed = time.perf_counter() - began
        latencies.append(elapsed)
        assert all(isinstance(r, float) for r in out.rewards)
        deltas = (pool.timeouts - before[0], pool.errors - before[1], pool.rejected - before[2])
        for item in chunk:  # exact per item when batch == 1, else charged to every item
            row = table[item.category]
            row["n"] += 1
            row["worst"] = max(row["worst"], elapsed)
            if batch == 1:
                row["timeouts"] += deltas[0]
                row["errors"] += deltas[1]
                row["rejected"] += deltas[2]
    return crashes, known


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="hostile completions in all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per answer check")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1, help="completions per reward call")
    parser.add_argument("--max-answer-chars", type=int, default=1000)
    parser.add_argument("--memory-limit-mb", type=int, default=2048)
    args = parser.parse_args()

    n_countdown = args.n // 5
    n_math = args.n - n_countdown
    limits = dict(max_answer_chars=args.max_answer_chars, memory_limit_mb=args.memory_limit_mb)
    table: dict[str, dict[str, float]] = defaultdict(
        lambda: dict(n=0, timeouts=0, errors=0, rejected=0, worst=0.0)
    )
    latencies: list[float] = []
    began = time.perf_counter()
    totals = dict(timeouts=0, errors=0, rejected=0, calls=0, fast_path=0)
    worst_item, crashes, known = 0.0, 0, 0
    runs = (
        (None, hostile_math(n_math, seed=args.seed)),
        (check_countdown, hostile_countdown(n_countdown, seed=args.seed)),
    )
    for check, items in runs:
        scorer = RewardScorer(args.timeout, args.workers, check=check, **limits)
        try:
            scorer(["\\boxed{0.5}"], ["1/2" if check is None else "1|1"])  # start-up, untimed
            crashed, hangers = run(scorer, items, args.batch, table, latencies)
            crashes, known = crashes + crashed, known + hangers
        finally:
            scorer.close()
        pool = scorer.pool
        for key in totals:
            totals[key] += getattr(pool, key)
        worst_item = max(worst_item, pool.max_latency)
    wall = time.perf_counter() - began
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    print(f"{'category':<11} {'n':>5} {'timeouts':>8} {'errors':>6} {'rejected':>8} {'worst s':>7}")
    for name, row in sorted(table.items()):
        print(
            f"{name:<11} {row['n']:>5} {row['timeouts']:>8} {row['errors']:>6}"
            f" {row['rejected']:>8} {row['worst']:>7.2f}"
        )
    if args.batch != 1:
        print("(per-category timeouts/errors/rejected are only exact with --batch 1)")
    print(
        f"inputs tried: {args.n} ({n_math} math, {n_countdown} countdown;"
        f" {known} known to run for hours) in {len(latencies)} calls of {args.batch},"
        f" {wall:.1f} s wall\n"
        f"crashes: {crashes}, timeouts: {totals['timeouts']}, errors: {totals['errors']},"
        f" rejected (too long): {totals['rejected']}, sent to workers: {totals['calls']},"
        f" fast path: {totals['fast_path']}\n"
        f"reward call latency: worst {max(latencies):.3f} s, median"
        f" {statistics.median(latencies):.4f} s, p99 {percentile(latencies, 0.99):.3f} s;"
        f" longest one answer held a worker: {worst_item:.3f} s (timeout {args.timeout} s)\n"
        f"peak RSS: this process {self_peak:.0f} MB, largest worker {worker_peak:.0f} MB"
    )


if __name__ == "__main__":
    main()
