"""The one interface every temperature method implements.

The sampler calls `temperature(...)` once per decoding step and knows nothing about which
method runs. The training step calls, in order:

    begin_step(step)                       before the rollout (schedules move here)
    temperature(logits, hidden, T_prev, t) per decoding step, inside the sampler
    token_statistics(cand_logp, mask)      per micro-batch: per-token log-likelihoods under
                                           `statistics_temperatures()`, from the update's
                                           first (pre-update) forward pass
    update(rollout, advantages, stats)     after rewards and the policy update (EMAs, targets)
    phase(step) / loss(...)                for methods with trained parameters (their own
                                           optimiser comes from `configure_optimizer`)

State that must survive a restart (schedule position, EMA vectors, head weights, RNG) lives in
parameters/buffers or goes through `extra_state` / `load_extra_state`, so it rides along in
the LightningModule's state_dict and therefore in every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

#: Coordinate-ascent phases: which side of the model a training step updates.
POLICY_PHASE = "policy"
HEAD_PHASE = "head"


@dataclass
class TemperatureDecision:
    """Temperatures for one decoding step of a batch, plus per-row records to keep.

    `records` values are [B] tensors; the sampler stacks them along time into
    `Rollout.controller_data[name]` ([B, L]) so `update`/`loss` can use them later.
    """

    temperature: torch.Tensor
    records: dict[str, torch.Tensor] = field(default_factory=dict)


def full_temperature(logits: torch.Tensor, value: float) -> torch.Tensor:
    """A [B] tensor of `value` on the logits' device, at least float32 (bf16 would round T)."""
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return torch.full((logits.shape[0],), value, dtype=dtype, device=logits.device)


class TemperatureController(nn.Module):
    """Base class: decides the sampling temperature of every generated token.

    Subclassing `nn.Module` lets learned methods own parameters (moved to the device and
    saved with the LightningModule); rule-based methods simply have none.
    """

    name: str = "base"
    #: True if T can differ between tokens of one completion (per-token methods).
    per_token: bool = False
    #: False if `temperature()` reads only the logits, T_prev and the position, never
    #: `hidden`: vLLM can then run the method inside its own sampler (rollout.engine=vllm).
    uses_hidden: bool = True
    #: Which forward pass `token_statistics` sees: "rollout" (the update's own pre-update
    #: pass, no extra forward) or "post_update" (an extra no-grad pass after the update).
    statistics_source: str = "rollout"
    #: Gradient-norm clip of the method's own parameters (None: the policy's, algorithm.*).
    max_grad_norm: float | None = None

    def setup(self, hidden_size: int, vocab_size: int, total_steps: int) -> None:
        """Called once the policy exists, with the sizes learned parts and schedules need."""

    def begin_step(self, step: int) -> dict[str, float]:
        """Called before the rollout of training step `step`; returns metrics to log."""
        return {}

    def initial_temperature(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """T_{-1} handed to the first decoding step (T_prev)."""
        return torch.ones(batch_size, device=device)

    def temperature(
        self,
        logits: torch.Tensor,
        hidden: torch.Tensor,
        prev_temperature: torch.Tensor,
        position: int,
    ) -> TemperatureDecision:
        """Temperatures [B] for the next token given logits [B, V] and hidden state [B, d]."""
        raise NotImplementedError(f"{type(self).__name__} must implement temperature()")

    def statistics_temperatures(self) -> tuple[float, ...] | None:
        """Candidate temperatures T_k whose per-token log-likelihoods `token_statistics` needs.

        None (the default) = no statistics: the loop computes nothing extra. The loop works
        them out chunk by chunk from the hidden states (`tempo.ops.chunked_logprobs`), so no
        method ever receives full-vocabulary [b, L, V] logits.
        """
        return None

    def token_statistics(
        self, candidate_logprobs: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor | None:
        """Per-completion statistics [b, K'] from log softmax(z / T_k)[token] [b, L, K].

        Called (under no_grad) once per micro-batch of the pass `statistics_source` names,
        with the completion mask [b, L] (padding holds 0). Rows the update skips (zero
        advantage without a KL term) reach `update` as NaN.
        """
        raise NotImplementedError(
            f"{type(self).__name__} asks for statistics_temperatures() but does not implement "
            "token_statistics()"
        )

    def update(
        self,
        rollout: Any,
        advantages: torch.Tensor,
        statistics: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Adapt after rewards are known (schedules, EMAs); returns metrics to log.

        `statistics` is the [B, K'] stack of `token_statistics` rows (NaN where not computed).
        """
        return {}

    # ------------------------------------------------------------- learned methods only
    def has_loss(self) -> bool:
        """True for methods with trainable parameters optimised by `loss`."""
        return any(p.requires_grad for p in self.parameters())

    def configure_optimizer(self) -> torch.optim.Optimizer | None:
        """The optimiser of this method's own parameters (None for rule-based methods)."""
        return None

    def phase(self, step: int) -> str:
        """Which side training step `step` updates: POLICY_PHASE or HEAD_PHASE."""
        return POLICY_PHASE

    def loss(
        self,
        hidden: torch.Tensor,
        rollout: Any,
        advantages: torch.Tensor,
        *,
        old_logp: torch.Tensor | None = None,
        **aggregation: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Surrogate loss of the method's parameters on a (micro-)batch.

        `hidden` [b, L, d] are the (detached) last-layer states that preceded each completion
        token; `aggregation` carries the GRPO aggregation settings and full-batch totals.
        `old_logp` [b, L] is the behaviour log-prob of the method's actions; the training loop
        passes it from the second optimisation pass on, taken from the first pass's
        `stats["action_logp"]` (the method's own detached log-prob before any update).
        """
        raise NotImplementedError(f"{type(self).__name__} has no trainable loss")

    def for_evaluation(self) -> TemperatureController | None:
        """The controller held-out sampling uses; None = a fixed `eval.temperature`."""
        return None

    # ------------------------------------------------------------- checkpoint state
    def extra_state(self) -> dict[str, Any]:
        """Non-tensor state to checkpoint (positions, targets, RNG); see `load_extra_state`."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` returned."""

    def get_extra_state(self) -> dict[str, Any]:  # nn.Module hook: rides along in state_dict
        return self.extra_state()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.load_extra_state(state)


class StepTemperature(TemperatureController):
    """A method with one temperature per training step, shared by every token of the step.

    Subclasses say which through `step_temperature()`; sampling is then a fill, no host sync.
    """

    per_token = False

    def step_temperature(self) -> float:
        """This step's T."""
        raise NotImplementedError(f"{type(self).__name__} must implement step_temperature()")

    def initial_temperature(self, batch_size: int, device: torch.device) -> torch.Tensor:
        return torch.full((batch_size,), self.step_temperature(), device=device)

    def temperature(
        self,
        logits: torch.Tensor,
        hidden: torch.Tensor,
        prev_temperature: torch.Tensor,
        position: int,
    ) -> TemperatureDecision:
        return TemperatureDecision(full_temperature(logits, self.step_temperature()))
