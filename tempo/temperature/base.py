"""The one interface every temperature method implements.

The sampler calls `temperature(...)` once per decoding step and knows nothing about which
method runs; the training loop calls `begin_step`, `update` and `loss` around it. State that
must survive a restart (schedule position, EMA vectors, head weights, RNG) goes through
`state_dict` / `load_state_dict` so Lightning checkpoints carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class TemperatureDecision:
    """Temperatures for one decoding step of a batch, plus per-row records to keep.

    `records` values are [B] tensors; the sampler stacks them along time into
    `Rollout.controller_data[name]` ([B, L]) so `update`/`loss` can use them later.
    """

    temperature: torch.Tensor
    records: dict[str, torch.Tensor] = field(default_factory=dict)


class TemperatureController(nn.Module):
    """Base class: decides the sampling temperature of every generated token.

    Subclassing `nn.Module` lets learned methods own parameters (moved to the device and
    saved with the LightningModule); rule-based methods simply have none.
    """

    name: str = "base"
    #: True if T can differ between tokens of one completion (per-token methods).
    per_token: bool = False

    def setup(self, hidden_size: int, vocab_size: int) -> None:
        """Called once the policy exists, with the sizes learned parts need."""

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
        raise NotImplementedError

    def update(self, rollout: Any, advantages: torch.Tensor) -> dict[str, float]:
        """Adapt after rewards are known (schedules, EMAs); returns metrics to log."""
        return {}

    def has_loss(self) -> bool:
        """True for methods with trainable parameters optimised by `loss`."""
        return any(p.requires_grad for p in self.parameters())

    def extra_state(self) -> dict[str, Any]:
        """Non-tensor state to checkpoint (positions, targets, RNG); see `load_extra_state`."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` returned."""

    def get_extra_state(self) -> dict[str, Any]:  # nn.Module hook: rides along in state_dict
        return self.extra_state()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.load_extra_state(state)
