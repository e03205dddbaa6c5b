"""Scores a batch of completions: reward = sum of weighted reward functions, plus correctness.

``reward[row] = sum_i weight_i * f_i(row)`` over the configured functions (see
``functions.py``): the built-ins ``accuracy`` and ``boxed_format`` and any user function.
Correctness (``correct``: what ``train/accuracy`` and evaluation count) is always computed,
by the task's own check or Math-Verify, whether or not ``accuracy`` is in the list; the
accuracy entry reuses it. User functions run once per batch in the same timed, memory-limited
workers as the answer checks, after them (they receive the extracted answers); a call that
fails, times out or returns anything but one finite number per completion scores 0.0 for
every row, is counted (``reward/<name>_errors``, ``reward/<name>_timeouts``) and is warned
about once per distinct error type.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tempo.rewards.functions import CALL_REWARD, DEFAULT_FUNCTIONS, RewardFunction, parse_functions
from tempo.rewards.math_rewards import format_reward
from tempo.rewards.verifier import (
    EXTRACT_ANSWER,
    EXTRACTIONS,
    Job,
    Outcome,
    Tally,
    VerifierPool,
    _preview,
)

log = logging.getLogger(__name__)


@dataclass
class ScoredBatch:
    rewards: list[float]  # what the policy is trained on: sum of weight * component
    correct: list[bool]  # answer equivalent to the gold (what accuracy counts)
    answers: list[str | None]  # extracted final answers (None = none found)
    # Per reward function name, its unweighted value per row (empty from `RewardScorer.check`).
    components: dict[str, list[float]] = field(default_factory=dict)

    def component_means(self, prefix: str = "reward/") -> dict[str, float]:
        """``{prefix + name: mean over the batch}`` of each component (for logging)."""
        return {
            f"{prefix}{name}": sum(values) / len(values)
            for name, values in self.components.items()
            if values
        }


def _column_lists(columns: Sequence[Mapping[str, Any]] | None, n: int) -> dict[str, list[Any]]:
    """Per-row column mappings as one list per column name (a row without it gives None)."""
    if columns is None:
        return {}
    if len(columns) != n:
        raise ValueError(f"got {len(columns)} column rows for {n} completions")
    names = list(dict.fromkeys(name for row in columns for name in row))
    return {name: [row.get(name) for row in columns] for name in names}


class RewardScorer:
    """The weighted reward functions of a run on one persistent verifier pool.

    ``functions``: `RewardFunction`s or config entries (default: accuracy, weight 1).
    ``check`` is a task's own picklable ``(answer, gold) -> bool`` (e.g. countdown's exact
    evaluation); it then replaces Math-Verify in the same timed workers, without the
    string/integer shortcuts that only hold for answer equivalence. ``extraction``: boxed
    (the last closed ``\\boxed{}``) or math_verify (Math-Verify's own extraction from the
    whole completion). ``timeout`` bounds each answer check and, unless an entry sets its
    own, each user function call. ``max_answer_chars`` and ``memory_limit_mb`` bound what one
    answer may cost (see `VerifierPool`): whatever the completions, a call returns scores.

    ``extract`` is a task's own picklable, top-level ``completion -> answer | None`` (e.g.
    `tempo.rewards.code.extract_code`: the code, not a ``\boxed{}``); it replaces
    ``extraction`` and runs in the same timed workers (one item per completion), and its
    answers go to the check unstripped and without shortcuts. Such an extractor may declare
    the longest answer it produces as an attribute ``max_answer_chars`` (code is longer than
    any final answer), which then replaces the scorer's cap for its answers.
    """

    def __init__(
        self,
        timeout: float = 5.0,
        workers: int = 1,
        functions: Sequence[RewardFunction | Mapping[str, Any]] | None = None,
        check: Callable[[str, str], bool] | None = None,
        *,
        extraction: str = "boxed",
        max_answer_chars: int | None = 1000,
        memory_limit_mb: int | None = 2048,
        extract: Callable[[str], str | None] | None = None,
    ) -> None:
        if extraction not in EXTRACTIONS:
            raise ValueError(f"extraction must be one of {', '.join(EXTRACTIONS)}: {extraction!r}")
        self.functions = parse_functions(DEFAULT_FUNCTIONS if functions is None else functions)
        self.extraction = extraction
        self.extract = extract
        user = [f.target for f in self.functions if f.builtin is None]
        preload = user + ([EXTRACT_ANSWER] if check is not None and extraction != "boxed" else [])
        self.pool = VerifierPool(
            timeout=timeout,
            workers=workers,
            target=check,
            shortcuts=check is None,
            max_answer_chars=max_answer_chars,
            memory_limit_mb=memory_limit_mb,
            preload=preload,
        )
        self._tallies = {str(f.name): Tally() for f in self.functions if f.builtin is None}
        self._warned: set[tuple[str, str]] = set()

    @property
    def names(self) -> list[str]:
        """The reward functions' names, in order (the keys of `ScoredBatch.components`)."""
        return [str(f.name) for f in self.functions]

    def check(self, completions: Sequence[str], golds: Sequence[str]) -> ScoredBatch:
        """Correctness and extracted answers only (what evaluation needs); no reward function
        runs: ``rewards`` are the 0/1 correctness, ``components`` is empty."""
        if self.extract is not None:
            scores, answers = self._check_extracted(list(completions), list(golds))
        else:
            scores, answers = self.pool.verify(list(completions), list(golds), self.extraction)
        correct = [s >= 1.0 for s in scores]
        return ScoredBatch([float(c) for c in correct], correct, answers)

    def _check_extracted(
        self, completions: list[str], golds: list[str]
    ) -> tuple[list[float], list[str | None]]:
        """(scores, answers) with the task's own extraction, both passes in the workers."""
        if len(completions) != len(golds):
            raise ValueError(f"got {len(completions)} completions but {len(golds)} golds")
        answers: list[str | None] = [None] * len(completions)
        rows = [i for i, c in enumerate(completions) if isinstance(c, str) and c.strip()]
        jobs = [Job(self.extract, (completions[i],)) for i in rows]
        for i, outcome in zip(rows, self.pool.run(jobs) if jobs else [], strict=True):
            if outcome.ok and isinstance(outcome.value, str):
                answers[i] = outcome.value
        cap = getattr(self.extract, "max_answer_chars", self.pool.max_answer_chars)
        scores = [0.0] * len(completions)
        todo: list[int] = []
        jobs = []
        for i, (answer, gold) in enumerate(zip(answers, golds, strict=True)):
            if answer is None or not answer.strip() or not isinstance(gold, str):
                continue
            if cap is not None and len(answer) > cap:
                self.pool.rejected += 1
                continue
            todo.append(i)
            jobs.append(Job(None, (answer, gold), preview=_preview(answer)))
        for i, outcome in zip(todo, self.pool.run(jobs) if jobs else [], strict=True):
            scores[i] = 1.0 if outcome.ok and outcome.value else 0.0
        return scores, answers

    def __call__(
        self,
        completions: Sequence[str],
        golds: Sequence[str],
        prompts: Sequence[str] | None = None,
        columns: Sequence[Mapping[str, Any]] | None = None,
    ) -> ScoredBatch:
        """Score a batch; ``prompts`` and ``columns`` (one mapping per row: the dataset's
        fields) are handed to user functions (None per row / no column arguments if absent)."""
        n = len(completions)
        if len(golds) != n:
            raise ValueError(f"got {n} completions but {len(golds)} golds")
        if prompts is not None and len(prompts) != n:
            raise ValueError(f"got {len(prompts)} prompts for {n} completions")
        column_lists = _column_lists(columns, n)
        checked = self.check(completions, golds)
        correct, answers = checked.correct, checked.answers
        components: dict[str, list[float]] = {}
        user = [f for f in self.functions if f.builtin is None]
        if user:
            arguments = {
                "prompts": [None] * n if prompts is None else list(prompts),
                "completions": list(completions),
                "answers": list(answers),
                "golds": list(golds),
            }
            jobs = [
                Job(
                    CALL_REWARD,
                    (f.target, {**column_lists, **f.kwargs, **arguments}, n),
                    f.timeout,
                    tally=self._tallies[str(f.name)],
                )
                for f in user
            ]
            for function, outcome in zip(user, self.pool.run(jobs), strict=True):
                components[str(function.name)] = self._values(function, outcome, n)
        for function in self.functions:
            if function.builtin == "accuracy":
                components[str(function.name)] = [float(c) for c in correct]
            elif function.builtin == "boxed_format":
                components[str(function.name)] = [format_reward(c) for c in completions]
        rewards = [0.0] * n
        for function in self.functions:
            values = components[str(function.name)]
            rewards = [r + function.weight * v for r, v in zip(rewards, values, strict=True)]
        ordered = {name: components[name] for name in self.names}
        return ScoredBatch(rewards, correct, answers, ordered)

    def _values(self, function: RewardFunction, outcome: Outcome, n: int) -> list[float]:
        """The rewards of one user function call, or zeros (counted, warned once per kind)."""
        name = str(function.name)
        tally = self._tallies[name]
        reply = outcome.value if outcome.ok else None
        if not (isinstance(reply, tuple) and len(reply) == 3):
            reply = ("error", "BadReply", "") if outcome.ok else None
        if reply is not None and reply[0] == "ok":
            return list(reply[1])
        if reply is not None:  # the function raised, or returned something unusable
            _, kind, detail = reply
            tally.errors += 1
            tally.last_error = kind
        else:
            kind, detail = str(outcome.error), ""
        if (name, kind) not in self._warned:
            self._warned.add((name, kind))
            self._warn(function, kind, detail, n)
        return [0.0] * n

    def _warn(self, function: RewardFunction, kind: str, detail: str, n: int) -> None:
        name = function.name
        if kind == "Timeout":
            limit = self.pool.timeout if function.timeout is None else function.timeout
            what = f"overran its {limit:g} s timeout (worker killed and replaced)"
            counter = f"reward/{name}_timeouts"
        else:
            reason = {
                "MemoryError": "ran past the worker's memory limit (worker replaced)",
                "WorkerDied": "killed its worker process (worker replaced)",
            }.get(kind, f"{kind}: {detail}" if detail else kind)
            what = f"failed: {reason}"
            counter = f"reward/{name}_errors"
        log.warning(
            "reward function %r %s; this call scores 0.0 for all %d rows (counted in %s; "
            "further %s failures of %r are not logged)",
            name,
            what,
            n,
            counter,
            kind,
            name,
        )

    def prestart(self) -> None:
        """Start the verifier workers in the background (see `VerifierPool.prestart`)."""
        self.pool.prestart()

    def stats(self) -> dict[str, float]:
        """Cumulative counters of the verifier: timeouts, errors, items sent to workers,
        answers rejected as too long without a worker, and the longest time one answer held a
        worker (seconds; at most about the timeout); per user function its failed calls
        (``reward/<name>_errors``) and overruns (``reward/<name>_timeouts``)."""
        stats = {
            "reward/verifier_timeouts": float(self.pool.timeouts),
            "reward/verifier_errors": float(self.pool.errors),
            "reward/verifier_calls": float(self.pool.calls),
            "reward/verifier_rejected": float(self.pool.rejected),
            "reward/verifier_max_latency_s": float(self.pool.max_latency),
        }
        for name, tally in self._tallies.items():
            stats[f"reward/{name}_errors"] = float(tally.errors)
            stats[f"reward/{name}_timeouts"] = float(tally.timeouts)
        return stats

    def close(self) -> None:
        self.pool.close()
