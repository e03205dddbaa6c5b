"""`edt`: entropy-based dynamic temperature (arXiv 2403.14541), per token.

    T_t = T0 * N ** (theta / H_t),   clipped to [t_min, T0]   (N = `base`, paper: 0.8)

H_t is the next-token entropy at T = 1. Confident steps (small H_t) get a low temperature,
uncertain ones approach T0. H_t = 0 gives N ** inf = 0, i.e. t_min, never NaN or inf.
"""

from __future__ import annotations

import math

import torch

from tempo.temperature.base import TemperatureDecision
from tempo.temperature.checks import check_open_unit, check_positive, check_temperature_range
from tempo.temperature.heuristic.common import HeuristicRule, token_entropy

#: Entropies below this count as 0 (exp(theta ln N / 1e-12) underflows to 0 -> t_min).
_ENTROPY_FLOOR = 1e-12


class EntropyDynamicTemperature(HeuristicRule):
    """Per-token T from the entropy of the current next-token distribution."""

    rule = "edt"
    per_token = True

    def __init__(
        self, t0: float = 1.0, base: float = 0.8, theta: float = 0.5, t_min: float = 0.1
    ) -> None:
        super().__init__()
        self.t_min, self.t0 = check_temperature_range(self.key("t_min"), t_min, self.key("t0"), t0)
        self.base = check_open_unit(self.key("base"), base)
        self.theta = check_positive(self.key("theta"), theta)
        self._log_scale = self.theta * math.log(self.base)  # theta * ln N < 0

    def temperature(
        self,
        logits: torch.Tensor,
        hidden: torch.Tensor,
        prev_temperature: torch.Tensor,
        position: int,
    ) -> TemperatureDecision:
        entropy = token_entropy(logits).clamp_min(_ENTROPY_FLOOR)
        temp = self.t0 * torch.exp(self._log_scale / entropy)
        return TemperatureDecision(temp.clamp(self.t_min, self.t0))
