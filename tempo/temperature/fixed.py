"""`fixed`: one constant temperature T0 for every token of every step."""

from __future__ import annotations

from tempo.temperature.base import StepTemperature
from tempo.temperature.checks import check_temperature


class FixedTemperature(StepTemperature):
    """Samples every token at the same temperature."""

    name = "fixed"

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.value = check_temperature("temperature", temperature)

    def step_temperature(self) -> float:
        return self.value
