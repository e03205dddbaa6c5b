"""Prompts for training (one batch = one RL step) and held-out problems for evaluation."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from tempo.data.indexed import IndexedProblems
from tempo.data.problem import Problem

# Each seed reads its own stretch of the train stream, so seeds differ in data order too.
SEED_STRIDE = 1_000_000_000


def _as_list(batch: list[Problem]) -> list[Problem]:
    return batch


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

    def train_dataloader(self) -> DataLoader:
        problems = IndexedProblems(
            self.task.train_problem,
            self.steps * self.prompts_per_step,
            offset=self.seed * SEED_STRIDE,
        )
        return DataLoader(problems, batch_size=self.prompts_per_step, collate_fn=_as_list)

    def val_dataloader(self) -> DataLoader:
        problems = self.task.test_problems()[: self.num_eval]
        return DataLoader(problems, batch_size=self.eval_batch_size, collate_fn=_as_list)
