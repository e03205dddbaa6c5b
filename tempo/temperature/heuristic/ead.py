"""`ead`: exploratory annealed decoding (arXiv 2510.05251), per token.

Inside a completion, at 0-based token position t (t = 0 is the first generated token):

    T_t = 1                                    for t < c   (template tokens, left alone)
    T_t = max(1 + T_max - exp(t / d_s), T_min)  otherwise

so sampling starts hot (T_max at t = 0) and cools to T_min after about d_s * ln(1 + T_max -
T_min) tokens. The decay grows with the RL step s so the schedule follows longer responses:
d_s = min(d0 + d_growth * s, d_max) (paper: d_growth = 5, d_max = 40000). T depends only on
(s, t), so one value serves the whole batch.
"""

from __future__ import annotations

import math

import torch

from tempo.config_error import ConfigError
from tempo.temperature.base import TemperatureDecision, full_temperature
from tempo.temperature.checks import (
    check_int,
    check_number,
    check_positive,
    check_temperature_range,
)
from tempo.temperature.heuristic.common import HeuristicRule


class ExploratoryAnnealedDecoding(HeuristicRule):
    """Hot early tokens, cool late tokens; the cooling slows as training goes on."""

    rule = "ead"
    per_token = True
    state_fields = ("step",)

    def __init__(
        self,
        c: int = 10,
        t_max: float = 1.2,
        t_min: float = 0.1,
        d0: float = 1000.0,
        d_growth: float = 5.0,
        d_max: float = 40000.0,
    ) -> None:
        super().__init__()
        self.c = check_int(self.key("c"), c, minimum=0)
        self.t_min, self.t_max = check_temperature_range(
            self.key("t_min"), t_min, self.key("t_max"), t_max
        )
        self.d0 = check_positive(self.key("d0"), d0)
        allowed = "a finite number >= 0"
        self.d_growth = check_number(self.key("d_growth"), d_growth, allowed)
        if self.d_growth < 0:
            raise ConfigError(self.key("d_growth"), d_growth, allowed)
        self.d_max = check_positive(self.key("d_max"), d_max)
        if self.d_max < self.d0:
            raise ConfigError(self.key("d_max"), d_max, f"a number >= {self.key('d0')}={d0}")
        self.step = 0

    @property
    def decay(self) -> float:
        """d_s for the current RL step."""
        return min(self.d0 + self.d_growth * self.step, self.d_max)

    def temperature_at(self, position: int) -> float:
        """T at 0-based completion position `position` for the current step (a Python float)."""
        if position < self.c:
            return 1.0
        x = position / self.decay
        if x > math.log(1.0 + self.t_max):  # exp(x) > 1 + T_max: below any T_min; no overflow
            return self.t_min
        return max(1.0 + self.t_max - math.exp(x), self.t_min)

    def begin_step(self, step: int) -> dict[str, float]:
        self.step = int(step)
        return {"method/decay": self.decay}

    def temperature(
        self,
        logits: torch.Tensor,
        hidden: torch.Tensor,
        prev_temperature: torch.Tensor,
        position: int,
    ) -> TemperatureDecision:
        return TemperatureDecision(full_temperature(logits, self.temperature_at(position)))
