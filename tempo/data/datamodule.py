"""Prompts for training (one batch = one RL step) and held-out problems for evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

from tempo.data.problem import Problem

# Each seed reads its own stretch of the train stream, so seeds differ in data order too
# (as long as world_size * prompts_per_step * steps stays below the stride).
SEED_STRIDE = 1_000_000_000


class StepBatches:
    """The training stream of one rank: `per_step` problems per RL step.

    With `world_size` W ranks, global step s owns the block of W * per_step consecutive
    indices starting at `offset + s * W * per_step`, and rank r takes the r-th slice of it:

        batch s of rank r = problems offset + (s * W + r) * per_step + i,   i < per_step.

    So ranks never share a problem, every rank knows its batch from (step, rank) alone, and one
    process (W = 1, r = 0) draws `offset + s * per_step + i`, as it always has; W ranks of
    `per_step` prompts together draw, step by step, the same problems as one process with
    W * per_step prompts per step.

    Iteration starts at the step `start()` returns (the trainer's global step, which counts RL
    steps, and is the same on every rank), so a run resumed from any checkpoint continues with
    exactly the problems the interrupted run would have seen on each rank, and a finished run
    resumed with a larger `trainer.max_steps` goes on to new ones. The position needs no state
    of its own; `state_dict` records only the world size, so that resuming with a different
    number of ranks (a different global batch, and so a different layout) warns.
    """

    def __init__(
        self,
        problem_fn: Callable[[int], Problem],
        steps: int,
        per_step: int,
        offset: int,
        start: Callable[[], int],
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.problem_fn, self.steps, self.per_step = problem_fn, steps, per_step
        self.offset, self.start = offset, start
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return self.steps

    def first_index(self, step: int) -> int:
        """Index of the first problem of this rank's batch at RL step `step`."""
        return self.offset + (step * self.world_size + self.rank) * self.per_step

    def __iter__(self) -> Iterator[list[Problem]]:
        for step in range(self.start(), self.steps):
            first = self.first_index(step)
            yield [self.problem_fn(first + i) for i in range(self.per_step)]

    def state_dict(self) -> dict[str, Any]:
        return {"world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore (the position is the restored global step); warns when the
        checkpoint was written by a run with another number of ranks."""
        saved = state.get("world_size", self.world_size)
        if saved != self.world_size:
            rank_zero_warn(
                f"resuming a run trained on {saved} rank(s) with {self.world_size}: from here on "
                "each step draws its problems in the new layout (some may repeat or be skipped)"
            )


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
    """Train: `steps` batches of `prompts_per_step` problems; val: `num_eval` test problems.

    Under DDP `prompts_per_step` is per rank (Lightning's convention: batch sizes are per
    device): each of W ranks draws its own, disjoint `prompts_per_step` problems per step (see
    `StepBatches`), so a step trains on W * prompts_per_step prompts in all. Rank and world
    size come from the trainer when the loader is built; without a trainer (or in one process)
    the stream is the single-process one.

    `eval_tasks` are further tasks whose held-out problems are evaluated after the training
    task's own (one validation loader each, in order).

    Held-out evaluation is not sharded: every rank evaluates the same `num_eval` problems
    (the evaluation samples from streams seeded by (seed, step) alone, so ranks compute the
    same metrics) and only rank 0's loggers write them. This costs W-fold redundant
    evaluation compute but needs no cross-rank aggregation of pass@k / maj@k records.
    """

    def __init__(
        self,
        task,
        prompts_per_step: int,
        steps: int,
        num_eval: int,
        eval_batch_size: int,
        seed: int = 0,
        eval_tasks: Sequence = (),
    ) -> None:
        super().__init__()
        self.task = task
        self.eval_tasks = list(eval_tasks)
        self.prompts_per_step, self.steps = prompts_per_step, steps
        self.num_eval, self.eval_batch_size, self.seed = num_eval, eval_batch_size, seed

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # host-side Problem records; the module makes tensors per step

    def train_dataloader(self) -> StepBatches:
        trainer = self.trainer
        return StepBatches(
            self.task.train_problem,
            self.steps,
            self.prompts_per_step,
            offset=self.seed * SEED_STRIDE,
            start=lambda: self.trainer.global_step if self.trainer is not None else 0,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
        )

    def val_dataloader(self) -> HeldOutBatches | list[HeldOutBatches]:
        """The training task's first `num_eval` held-out problems; with `eval_tasks`, a list:
        that loader, then each extra task's first `num_eval` (or all, when it has fewer)."""
        loaders = [
            HeldOutBatches(task.test_problems()[: self.num_eval], self.eval_batch_size)
            for task in [self.task, *self.eval_tasks]
        ]
        return loaders if self.eval_tasks else loaders[0]
