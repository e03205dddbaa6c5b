"""Stop training on NaN/inf instead of silently learning from it."""

from __future__ import annotations

import torch


class NonFiniteError(RuntimeError):
    """A loss, gradient or logit went NaN/inf; the step was not applied."""


def require_finite(value: torch.Tensor | float, what: str, step: int) -> None:
    """Raise NonFiniteError naming `what` and the RL step if `value` has a NaN or inf."""
    tensor = torch.as_tensor(value)
    if not bool(torch.isfinite(tensor).all()):
        bad = "nan" if bool(torch.isnan(tensor).any()) else "inf"
        raise NonFiniteError(f"{what} is {bad} at RL step {step}; the update was not applied")
