"""Shared machinery of the embedded generated tasks: seeded per-index draws, hash splits.

A problem is drawn per index from an RNG seeded by (seed, split, index, attempt), so any
problem is reproducible in O(1) without materialising a dataset. The train/test split is a
partition of the question space by a stable hash of the question text, so the splits are
disjoint by construction and the held-out set is the same region of the space for every seed.
Subclasses say how one random question, its gold answer and its worked solution are drawn.
"""

from __future__ import annotations

import hashlib
import random

from tempo.config_error import ConfigError
from tempo.data.problem import Problem

SPLITS = ("train", "test")
# Bounds that turn an impossible request (a split with no reachable question) into an error
# instead of an endless loop; far above what a workable configuration ever needs.
_MAX_ATTEMPTS = 10_000
_MAX_STALE_INDICES = 20_000


def question_unit_hash(question: str) -> float:
    """Map a question to [0, 1) with blake2b: stable across processes, unlike `hash()`."""
    digest = hashlib.blake2b(question.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class GeneratedTask:
    """Base of the generated tasks; subclasses set `name`, `seed`, `num_test`,
    `test_fraction`, `prompt_template` and implement `_candidate`."""

    name: str
    seed: int
    num_test: int
    test_fraction: float
    prompt_template: str
    #: Prepended to the RNG key so different tasks draw from unrelated streams.
    rng_prefix: str = ""
    _test_cache: list[Problem] | None = None

    def _candidate(self, rng: random.Random) -> tuple[str, str, str] | None:
        """One random (question, gold answer, worked solution), or None for a failed draw."""
        raise NotImplementedError(f"{type(self).__name__} must implement _candidate()")

    def split_of(self, question: str) -> str:
        """'test' iff the question's stable hash is below test_fraction, else 'train'."""
        return "test" if question_unit_hash(question) < self.test_fraction else "train"

    def problem(self, split: str, index: int) -> Problem:
        """The index-th problem of `split`: first candidate from (seed, split, index, attempt)
        RNGs that lands in that split. Deterministic per index; indices may repeat questions."""
        if split not in SPLITS:
            raise ConfigError("split", split, f"one of {SPLITS}")
        if not _is_int(index) or index < 0:
            raise IndexError(f"problem index must be a non-negative integer, got {index!r}")
        max_attempts = max(
            _MAX_ATTEMPTS, int(100 / min(self.test_fraction, 1 - self.test_fraction))
        )
        for attempt in range(max_attempts):
            drawn = self._candidate(self._rng(split, index, attempt))
            if drawn is None or self.split_of(drawn[0]) != split:
                continue
            question, answer, solution = drawn
            return Problem(
                id=f"{self.name}/{split}/{index}",
                question=question,
                prompt=self.prompt_template.format(question=question),
                answer=answer,
                solution=solution,
            )
        raise ConfigError(
            "test_fraction",
            self.test_fraction,
            f"a value leaving the {split!r} split non-empty for this problem space "
            f"(no {split} question in {max_attempts} draws)",
        )

    def train_problem(self, index: int) -> Problem:
        """The index-th training problem (an endless stream; duplicates allowed)."""
        return self.problem("train", index)

    def test_problems(self) -> list[Problem]:
        """The first num_test distinct held-out problems (ids keep their generator index)."""
        if self._test_cache is None:
            self._test_cache = self._collect_test()
        return list(self._test_cache)

    def _collect_test(self) -> list[Problem]:
        seen: set[str] = set()
        found: list[Problem] = []
        index = stale = 0
        while len(found) < self.num_test:
            p = self.problem("test", index)
            index += 1
            if p.question in seen:
                stale += 1
                if stale >= _MAX_STALE_INDICES:
                    raise ConfigError(
                        "num_test",
                        self.num_test,
                        f"at most the number of distinct held-out questions (found {len(found)})",
                    )
                continue
            stale = 0
            seen.add(p.question)
            found.append(p)
        return found

    def _rng(self, split: str, index: int, attempt: int) -> random.Random:
        """Independent RNG per (seed, split, index, attempt); int seeding is version-stable."""
        key = f"{self.rng_prefix}{self.seed}|{split}|{index}|{attempt}".encode()
        return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "big"))
