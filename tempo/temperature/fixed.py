"""`fixed`: one constant temperature T0 for every token of every step."""

from __future__ import annotations

import torch

from tempo.temperature.base import TemperatureController, TemperatureDecision
from tempo.temperature.checks import check_temperature


class FixedTemperature(TemperatureController):
    """Samples every token at the same temperature."""

    name = "fixed"

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.value = check_temperature("temperature", temperature)

    def initial_temperature(self, batch_size: int, device: torch.device) -> torch.Tensor:
        return torch.full((batch_size,), self.value, device=device)

    def temperature(self, logits, hidden, prev_temperature, position) -> TemperatureDecision:
        return TemperatureDecision(prev_temperature.new_full(prev_temperature.shape, self.value))
