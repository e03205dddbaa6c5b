"""`heuristic`: rule-based temperature control, one method with a `rule` sub-option.

`conf/method/heuristic.yaml` holds `rule` and one block of knobs per rule; Hydra calls
`build_heuristic(rule=..., linear={...}, edt={...}, ...)`, which builds only the chosen rule
from its own block. Rules (see each module for the math):

    linear, cosine, exponential   training-step schedules          (schedules.py)
    entropy_target                E3 step-level entropy controller (entropy_target.py)
    edt                           entropy-based dynamic T per token (edt.py)
    ead                           exploratory annealed decoding     (ead.py)
    two_level                     entropy-threshold T_hi / T_lo     (two_level.py)
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from tempo.config_error import ConfigError
from tempo.temperature.heuristic.common import HeuristicRule
from tempo.temperature.heuristic.ead import ExploratoryAnnealedDecoding
from tempo.temperature.heuristic.edt import EntropyDynamicTemperature
from tempo.temperature.heuristic.entropy_target import EntropyTargetController
from tempo.temperature.heuristic.schedules import (
    CosineSchedule,
    ExponentialSchedule,
    LinearSchedule,
    StepSchedule,
)
from tempo.temperature.heuristic.two_level import TwoLevelTemperature

#: rule name -> class; the single place a new rule is registered.
RULES: dict[str, type[HeuristicRule]] = {
    cls.rule: cls
    for cls in (
        LinearSchedule,
        CosineSchedule,
        ExponentialSchedule,
        EntropyTargetController,
        EntropyDynamicTemperature,
        ExploratoryAnnealedDecoding,
        TwoLevelTemperature,
    )
}


def knobs(cls: type[HeuristicRule]) -> tuple[str, ...]:
    """The keyword arguments (config keys) a rule class accepts."""
    params = inspect.signature(cls.__init__).parameters
    return tuple(name for name in params if name != "self")


def build_heuristic(rule: str = "linear", **blocks: Mapping[str, Any] | None) -> HeuristicRule:
    """Build rule `rule` from its block of knobs; other rules' blocks are only name-checked.

    Raises ConfigError with key `rule` for an unknown rule, `<block>` for an unknown block or
    one that is not a mapping, and `<rule>.<knob>` for an unknown or invalid knob.
    """
    names = ", ".join(RULES)
    if not isinstance(rule, str) or rule not in RULES:
        raise ConfigError("rule", rule, f"one of {names}")
    for block, value in blocks.items():
        if block not in RULES:
            raise ConfigError(block, value, f"a rule block: one of {names}")
        if value is not None and not isinstance(value, Mapping):
            raise ConfigError(block, value, f"a mapping of {block} knobs")
    cls = RULES[rule]
    settings = dict(blocks.get(rule) or {})
    accepted = knobs(cls)
    for knob, value in settings.items():
        if knob not in accepted:
            raise ConfigError(
                f"{rule}.{knob}", value, f"a knob of {rule}: one of {', '.join(accepted)}"
            )
    return cls(**settings)


__all__ = [
    "RULES",
    "CosineSchedule",
    "EntropyDynamicTemperature",
    "EntropyTargetController",
    "ExploratoryAnnealedDecoding",
    "ExponentialSchedule",
    "HeuristicRule",
    "LinearSchedule",
    "StepSchedule",
    "TwoLevelTemperature",
    "build_heuristic",
    "knobs",
]
