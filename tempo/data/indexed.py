"""A map-style dataset over a task's per-index problem function."""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset

from tempo.data.problem import Problem


class IndexedProblems(Dataset):
    """`n` problems drawn by index from `problem_fn`, starting at `offset` (deterministic)."""

    def __init__(self, problem_fn: Callable[[int], Problem], n: int, offset: int = 0) -> None:
        self.problem_fn, self.n, self.offset = problem_fn, n, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Problem:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.problem_fn(self.offset + index)
