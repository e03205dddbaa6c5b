"""The LightningModule `tempo-eval` validates with: score held-out problems, keep the records.

Lightning supplies the device placement, precision (autocast) and progress bars; the work of
each batch is `score_problems`, the same function the evaluations during training run.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tempo.data.problem import Problem
from tempo.evaluation.scoring import Samples, rollout_samples, score_problems
from tempo.models.prompting import PromptBuilder
from tempo.sampling.sampler import Sampler
from tempo.sampling.vllm_engine import VLLMEngine
from tempo.temperature.base import TemperatureController


class EvalModule(L.LightningModule):
    """Greedy and sampled completions of a policy, scored; one task per `trainer.validate`.

    Call `begin_task(scorer)` before each validate; `records` then holds one record per
    problem. Every validate starts from `seed` (the sampler's generator and torch's global
    RNG, which learned temperature heads draw from), so a task's numbers do not depend on
    which tasks ran before it.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        controller: TemperatureController,
        max_new_tokens: int,
        samples: int,
        greedy: bool,
        seed: int = 0,
        prompts: PromptBuilder | None = None,
        stop_token_ids: Sequence[int] | None = None,
        engine: VLLMEngine | None = None,
    ) -> None:
        """`prompts` and `stop_token_ids` as in training (`RLVRModule`): the same prompt path
        (chat template, BOS) and every EOS id; defaults are the tokenizer's plain encoding and
        its EOS. With a vLLM `engine` (`eval.engine=vllm`) it samples instead of tempo's
        sampler; the model's weights are pushed into it once, at the first batch."""
        super().__init__()
        self.model = model
        self.controller = controller
        self.tokenizer = tokenizer
        self.samples, self.greedy, self.seed = samples, greedy, seed
        self.prompts = prompts or PromptBuilder(tokenizer)
        self.sampler = Sampler(
            max_new_tokens,
            list(stop_token_ids or [tokenizer.eos_token_id]),
            tokenizer.pad_token_id,
        )
        self.engine = engine
        self._pushed = False
        self.scorer = None
        self.records: list[dict] = []
        self.generator: torch.Generator | None = None

    def begin_task(self, scorer) -> None:
        """Score the next validate's problems with `scorer` (the task's answer check)."""
        self.scorer = scorer
        self.records = []

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # host-side Problem records; tensors are made per batch

    def on_validation_start(self) -> None:
        torch.manual_seed(self.seed)  # all devices; the introspective head draws from it
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)

    def validation_step(self, batch: list[Problem], batch_idx: int) -> None:
        if self.scorer is None:
            raise RuntimeError("EvalModule.begin_task(scorer) was not called")
        self.records += score_problems(self._sample, self.scorer, batch, self.samples, self.greedy)

    def _sample(self, prompts: Sequence[str], greedy: bool) -> Samples:
        ids, mask = self.prompts.encode(prompts, self.device)
        controller = None if greedy else self.controller
        if self.engine is not None:
            if not self._pushed:  # evaluation never changes the weights: push once
                self.engine.push_weights(self.model)
                self._pushed = True
            rollout = self.engine.rollout(
                self.model, ids, mask, controller, self.generator, greedy, entropies=False
            )
        else:
            rollout = self.sampler.rollout(
                self.model, ids, mask, controller, generator=self.generator, greedy=greedy
            )
        inputs = self.prompts.shown(ids, mask)
        return rollout_samples(rollout, self.tokenizer, inputs)
