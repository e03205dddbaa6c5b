"""`entropy_target`: E3's step-level entropy controller (arXiv 2505.18573).

The first `target_steps` RL steps run at `t_init` and pool the entropy of every generated
token into the target H*. After every later step s with measured entropy H_s:

    T <- clip(T * (1 + T * ln(H* / H_s) / (ln V + ln ln V)), t_min, t_max)

(V = vocabulary size), so T rises when the policy is less random than the target and falls
when it is more. Optionally H* decays late in training: from RL step `decay_start` on, each
update first multiplies H* by `decay_rate`.

Under DDP, H_s and the pooled target are token means over every rank's rollout (entropy sum
and token count are all-reduced), so T and H* stay identical on every rank.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tempo.config_error import ConfigError
from tempo.distributed import global_sum_count
from tempo.temperature.base import StepTemperature
from tempo.temperature.checks import (
    check_choice,
    check_int,
    check_temperature,
    check_temperature_range,
    check_unit_interval,
)
from tempo.temperature.heuristic.common import (
    HeuristicRule,
    masked_sum_count,
)

#: Entropies are floored here before the log ratio, so H = 0 pushes T to t_max, not to NaN.
ENTROPY_FLOOR = 1e-8
ENTROPY_SOURCES = ("sampled", "unit")


class EntropyTargetController(StepTemperature, HeuristicRule):
    """Keeps the rollout's mean token entropy at a target by moving one T per step."""

    rule = "entropy_target"
    per_token = False
    state_fields = (
        "current",
        "target",
        "entropy_sum",
        "token_count",
        "updates",
        "vocab_size",
    )

    def __init__(
        self,
        t_init: float = 1.0,
        t_min: float = 0.5,
        t_max: float = 1.5,
        target_steps: int = 10,
        entropy_source: str = "sampled",
        decay_start: int | None = None,
        decay_rate: float = 0.99,
    ) -> None:
        super().__init__()
        self.t_min, self.t_max = check_temperature_range(
            self.key("t_min"), t_min, self.key("t_max"), t_max
        )
        self.t_init = check_temperature(self.key("t_init"), t_init)
        if not self.t_min <= self.t_init <= self.t_max:
            raise ConfigError(
                self.key("t_init"), t_init, f"a temperature in [t_min, t_max] = [{t_min}, {t_max}]"
            )
        self.target_steps = check_int(self.key("target_steps"), target_steps, minimum=1)
        self.entropy_source = check_choice(
            self.key("entropy_source"), entropy_source, ENTROPY_SOURCES
        )
        self.decay_start = (
            None if decay_start is None else check_int(self.key("decay_start"), decay_start, 0)
        )
        self.decay_rate = check_unit_interval(self.key("decay_rate"), decay_rate)
        # Mutable state (all checkpointed through `state_fields`).
        self.current = self.t_init
        self.target: float | None = None
        self.entropy_sum = 0.0
        self.token_count = 0.0
        self.updates = 0
        self.vocab_size: int | None = None

    def setup(self, hidden_size: int, vocab_size: int, total_steps: int) -> None:
        if vocab_size < 2:
            raise ValueError(f"entropy_target needs a vocabulary of >= 2 tokens, got {vocab_size}")
        self.vocab_size = int(vocab_size)

    @property
    def gain_denominator(self) -> float:
        """ln V + ln ln V, E3's normaliser of the log entropy ratio."""
        if self.vocab_size is None:
            raise RuntimeError("entropy_target: call setup() before update()")
        log_v = math.log(self.vocab_size)
        return log_v + math.log(log_v)

    def begin_step(self, step: int) -> dict[str, float]:
        return {"method/temperature": self.current}

    def step_temperature(self) -> float:
        return self.current

    def update(
        self, rollout: Any, advantages: torch.Tensor, statistics: torch.Tensor | None = None
    ) -> dict[str, float]:
        """Measure H_s (token mean over the global batch), grow the target or move T."""
        source = rollout.entropy_at_T if self.entropy_source == "sampled" else rollout.entropy
        # Over the global batch under DDP (sums, not a mean of rank means): every rank moves
        # to the same T, as one process holding every rank's completions would.
        total, count = global_sum_count(*masked_sum_count(source, rollout.mask))
        step, self.updates = self.updates, self.updates + 1
        if count == 0:  # nothing generated: no measurement, nothing changes
            return {}
        measured = total / count
        metrics = {"method/entropy_measured": measured}
        if step < self.target_steps:
            self.entropy_sum += total
            self.token_count += count
            if step == self.target_steps - 1:
                self.target = self.entropy_sum / self.token_count
        else:
            if self.target is None:  # the last warm-up batch was empty: close the pool now
                pooled = self.token_count > 0
                self.target = self.entropy_sum / self.token_count if pooled else measured
            if self.decay_start is not None and step >= self.decay_start:
                self.target *= self.decay_rate
            ratio = max(self.target, ENTROPY_FLOOR) / max(measured, ENTROPY_FLOOR)
            factor = 1.0 + self.current * math.log(ratio) / self.gain_denominator
            self.current = min(max(self.current * factor, self.t_min), self.t_max)
        if self.target is not None:
            metrics["method/entropy_target"] = self.target
        return metrics
