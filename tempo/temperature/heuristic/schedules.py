"""Training-step schedules: one temperature per RL step s of S, shared by every token.

    linear       T_s = T_a + (T_b - T_a) * s / S
    cosine       T_s = T_b + (T_a - T_b) * (1 + cos(pi * s / S)) / 2
    exponential  T_s = T_a * (T_b / T_a) ** (s / S)

T_a = `t_start`, T_b = `t_end` (the TAMPO paper's schedule baseline runs 0.9 -> 1.5). Past
s = S the schedule holds T_b (ours).
"""

from __future__ import annotations

import math

from tempo.config_error import ConfigError
from tempo.temperature.base import StepTemperature
from tempo.temperature.checks import check_int, check_temperature
from tempo.temperature.heuristic.common import HeuristicRule


class StepSchedule(StepTemperature, HeuristicRule):
    """A temperature that moves with the training step only; subclasses give the curve."""

    per_token = False
    state_fields = ("step", "total_steps")

    def __init__(
        self, t_start: float = 0.9, t_end: float = 1.5, total_steps: int | None = None
    ) -> None:
        super().__init__()
        self.t_start = check_temperature(self.key("t_start"), t_start)
        self.t_end = check_temperature(self.key("t_end"), t_end)
        self.fixed_total = (
            None if total_steps is None else check_int(self.key("total_steps"), total_steps)
        )
        self.total_steps: int | None = self.fixed_total
        self.step = 0

    def curve(self, frac: float) -> float:
        """T at fraction `frac` in [0, 1] of the schedule."""
        raise NotImplementedError

    @property
    def current(self) -> float:
        """The temperature of the current step (T_0 until `setup` gives S)."""
        if not self.total_steps:
            return self.curve(0.0)
        return self.curve(min(max(self.step / self.total_steps, 0.0), 1.0))

    def setup(self, hidden_size: int, vocab_size: int, total_steps: int) -> None:
        if self.fixed_total is not None:
            self.total_steps = self.fixed_total
            return
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ConfigError(
                "trainer.max_steps",
                total_steps,
                f"an integer >= 1 (or set method.{self.rule}.total_steps)",
            )
        self.total_steps = total_steps

    def begin_step(self, step: int) -> dict[str, float]:
        self.step = int(step)
        return {"method/temperature": self.current}

    def step_temperature(self) -> float:
        return self.current


class LinearSchedule(StepSchedule):
    """T rises (or falls) linearly from t_start to t_end over S steps."""

    rule = "linear"

    def curve(self, frac: float) -> float:
        return self.t_start + (self.t_end - self.t_start) * frac


class CosineSchedule(StepSchedule):
    """Half-cosine from t_start to t_end: slow at both ends, fastest mid-training."""

    rule = "cosine"

    def curve(self, frac: float) -> float:
        return self.t_end + (self.t_start - self.t_end) * (1.0 + math.cos(math.pi * frac)) / 2.0


class ExponentialSchedule(StepSchedule):
    """Geometric interpolation: a constant ratio T_{s+1} / T_s from t_start to t_end."""

    rule = "exponential"

    def curve(self, frac: float) -> float:
        return self.t_start * (self.t_end / self.t_start) ** frac
