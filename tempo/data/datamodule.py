"""Prompts for training (one batch = one RL step) and held-out problems for evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning as L

from tempo.data.problem import Problem

# Each seed reads its own stretch of the train stream, so seeds differ in data order too.
SEED_STRIDE = 1_000_000_000


class StepBatches:
    """The training stream: batch s holds problems `offset + s * per_step + i`, i < per_step.

    Iteration starts at the step `start()` returns (the trainer's global step, which counts RL
    steps), so a run resumed from any checkpoint continues with exactly the problems the
    interrupted run would have seen, and a finished run resumed with a larger
    `trainer.max_steps` goes on to new ones. The position needs no state of its own; the
    empty `state_dict` marks the loader as resumable for Lightning.
    """

    def __init__(
        self,
        problem_fn: Callable[[int], Problem],
        steps: int,
        per_step: int,
        offset: int,
        start: Callable[[], int],
    ) -> None:
        self.problem_fn, self.steps, self.per_step = problem_fn, steps, per_step
        self.offset, self.start = offset, start

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[Problem]]:
        for step in range(self.start(), self.steps):
            first = self.offset + step * self.per_step
            yield [self.problem_fn(first + i) for i in range(self.per_step)]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore: the position is the restored global step."""


class HeldOutBatches:
    """Held-out problems in fixed batches. Unlike a DataLoader, iterating draws nothing from
    torch's RNG, so an evaluation never shifts the training run's random streams."""

    def __init__(self, problems: list[Problem], batch_size: int) -> None:
        self.batches = [problems[i : i + batch_size] for i in range(0, len(problems), batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[Problem]]:
        return iter(self.batches)


class PromptDataModule(L.LightningDataModule):
    """Train: `steps` batches of `prompts_per_step` problems; val: `num_eval` test problems."""

    def __init__(
        self,
        task,
        prompts_per_step: int,
        steps: int,
        num_eval: int,
        eval_batch_size: int,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.task = task
        self.prompts_per_step, self.steps = prompts_per_step, steps
        self.num_eval, self.eval_batch_size, self.seed = num_eval, eval_batch_size, seed

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # host-side Problem records; the module makes tensors per step

    def train_dataloader(self) -> StepBatches:
        return StepBatches(
            self.task.train_problem,
            self.steps,
            self.prompts_per_step,
            offset=self.seed * SEED_STRIDE,
            start=lambda: self.trainer.global_step if self.trainer is not None else 0,
        )

    def val_dataloader(self) -> HeldOutBatches:
        return HeldOutBatches(self.task.test_problems()[: self.num_eval], self.eval_batch_size)
