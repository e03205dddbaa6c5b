"""Shared pieces of the heuristic rules: the base class, entropy helpers, state round trip."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from tempo.temperature.base import TemperatureController


class HeuristicRule(TemperatureController):
    """Base of every heuristic rule.

    All rules report `name = "heuristic"` (the method) and their own `rule`. Validation errors
    use keys prefixed with the rule (`edt.theta`) so the entry point prints `method.edt.theta`.
    The attributes named in `state_fields` (plain Python numbers) are the rule's whole mutable
    state; they ride along in `state_dict()` through the base class's extra-state hooks.
    """

    name = "heuristic"
    rule: ClassVar[str] = "base"
    uses_hidden = False  # every rule reads the logits and the position only
    state_fields: ClassVar[tuple[str, ...]] = ()

    def key(self, knob: str) -> str:
        """The ConfigError key of one of this rule's knobs, e.g. `edt.theta`."""
        return f"{self.rule}.{knob}"

    def extra_state(self) -> dict[str, Any]:
        return {"rule": self.rule, **{f: getattr(self, f) for f in self.state_fields}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("rule", self.rule) != self.rule:
            raise ValueError(f"checkpoint holds rule {state['rule']!r}, not {self.rule!r}")
        for f in self.state_fields:
            if f in state:
                setattr(self, f, state[f])


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) over the last dim (T = 1); 0 * log 0 counts as 0."""
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.special.entr(probs).sum(-1)


def masked_values(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The entries of `values` where `mask` is set, flattened (generated tokens only)."""
    return values[mask.bool()]


def masked_sum_count(values: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """(sum, count) of `values` over generated tokens, in float64 for long accumulations."""
    m = mask.to(torch.float64)
    return float((values.to(torch.float64) * m).sum()), float(m.sum())
