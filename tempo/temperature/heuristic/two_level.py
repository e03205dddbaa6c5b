"""`two_level`: entropy-threshold two-temperature sampling (arXiv 2510.08892), per token.

High-entropy ("forking"/reasoning) tokens are sampled at T_hi to explore, the rest at T_lo to
stay accurate: T_t = T_hi if H_t > threshold else T_lo, H_t = next-token entropy at T = 1.

Threshold modes:
  absolute  a fixed entropy in nats (`threshold`)
  quantile  (ours) the `quantile`-level quantile of the previous RL step's token entropies
            at T = 1 over generated tokens, re-estimated in every `update`; the absolute
            `threshold` serves until the first update. Under DDP the quantile is taken
            over every rank's generated tokens (gathered), so all ranks share one threshold.
"""

from __future__ import annotations

from typing import Any

import torch

from tempo.config_error import ConfigError
from tempo.distributed import global_cat, global_sum_count
from tempo.temperature.base import TemperatureDecision, full_temperature
from tempo.temperature.checks import (
    check_choice,
    check_number,
    check_open_unit,
    check_temperature_range,
)
from tempo.temperature.heuristic.common import (
    HeuristicRule,
    masked_sum_count,
    masked_values,
    token_entropy,
)

MODES = ("absolute", "quantile")


def quantile(values: torch.Tensor, q: float) -> float:
    """Linear-interpolation quantile of a 1-D tensor (numpy's default method).

    Written with a sort rather than torch.quantile, which refuses inputs above 2**24 entries
    (a 512 x 32k-token batch has more).
    """
    ordered = values.flatten().to(torch.float64).sort().values
    pos = q * (ordered.numel() - 1)
    low = int(pos)
    high = min(low + 1, ordered.numel() - 1)
    frac = pos - low
    return float(ordered[low] + (ordered[high] - ordered[low]) * frac)


class TwoLevelTemperature(HeuristicRule):
    """T_hi above an entropy threshold, T_lo below it."""

    rule = "two_level"
    per_token = True
    state_fields = ("threshold", "estimated")

    def __init__(
        self,
        t_low: float = 1.0,
        t_high: float = 1.3,
        mode: str = "quantile",
        threshold: float = 1.0,
        quantile: float = 0.8,
    ) -> None:
        super().__init__()
        self.t_low, self.t_high = check_temperature_range(
            self.key("t_low"), t_low, self.key("t_high"), t_high
        )
        self.mode = check_choice(self.key("mode"), mode, MODES)
        allowed = "an entropy in nats >= 0"
        self.threshold = check_number(self.key("threshold"), threshold, allowed)
        if self.threshold < 0:
            raise ConfigError(self.key("threshold"), threshold, allowed)
        self.quantile = check_open_unit(self.key("quantile"), quantile)
        #: True once a quantile threshold has been estimated from a rollout.
        self.estimated = False

    def begin_step(self, step: int) -> dict[str, float]:
        return {"method/threshold": self.threshold}

    def temperature(
        self,
        logits: torch.Tensor,
        hidden: torch.Tensor,
        prev_temperature: torch.Tensor,
        position: int,
    ) -> TemperatureDecision:
        high = token_entropy(logits) > self.threshold
        return TemperatureDecision(
            full_temperature(logits, self.t_low).masked_fill_(high, self.t_high)
        )

    def update(
        self, rollout: Any, advantages: torch.Tensor, statistics: torch.Tensor | None = None
    ) -> dict[str, float]:
        """Log the share of T_hi tokens; in quantile mode re-estimate the threshold."""
        midpoint = (self.t_low + self.t_high) / 2
        high = (rollout.temperatures > midpoint).float()
        total, count = global_sum_count(*masked_sum_count(high, rollout.mask))
        if count == 0:
            return {}
        if self.mode == "quantile":
            entropies = global_cat(masked_values(rollout.entropy, rollout.mask))
            self.threshold = quantile(entropies, self.quantile)
            self.estimated = True
        return {"method/frac_high": total / count}
