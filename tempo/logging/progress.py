"""The RL progress bar: RL steps of the run (`step s/N`), not Lightning's epochs.

One training bar over the whole run (a resumed run starts at its step), with the values the
module logs with `prog_bar=True` (reward, mean T, entropy; eval accuracy after an evaluation)
and without Lightning's logger version. Bars go to stderr, so stdout holds the run's lines
(the final report) only.
"""

from __future__ import annotations

import sys
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm


class StepProgressBar(TQDMProgressBar):
    """`step 12/200 |####      | [00:35<07:20, reward=0.41, T=0.98, entropy=0.73]`."""

    TRAIN_FORMAT = "{desc} {n_fmt}/{total_fmt} |{bar}| [{elapsed}<{remaining}{postfix}]"

    def __init__(self, description: str = "step", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.description = description

    @property
    def train_description(self) -> str:
        return self.description

    @property
    def validation_description(self) -> str:
        return "eval"

    def init_train_tqdm(self) -> Tqdm:
        steps = self.trainer.max_steps
        return Tqdm(
            desc=self.train_description,
            total=steps if steps > 0 else None,
            initial=self.trainer.global_step,  # a resumed run goes on from its step
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stderr,
            smoothing=0,
            bar_format=self.TRAIN_FORMAT,
        )

    def init_validation_tqdm(self) -> Tqdm:
        has_main_bar = self.trainer.state.fn != "validate"
        return Tqdm(
            desc=self.validation_description,
            position=2 * self.process_position + has_main_bar,
            disable=self.is_disabled,
            leave=not has_main_bar,
            dynamic_ncols=True,
            file=sys.stderr,
            bar_format=self.BAR_FORMAT,
        )

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        """One bar for the run: an epoch boundary neither resets nor renames it."""

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        bar = self.train_progress_bar
        step = int(getattr(pl_module, "rl_step", trainer.global_step))
        if bar is not None and self._should_update(step, bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items
