"""`heuristic`: rule-based temperature control, one method with a `rule` sub-option.

`conf/method/heuristic.yaml` holds `rule` and one block of knobs per rule; Hydra calls
`build_heuristic(rule=..., linear={...}, edt={...}, ...)`, which builds the chosen rule from its
own block and refuses a changed knob in any other block (it would never be read). Rules (see
each module for the math):

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


def defaults(cls: type[HeuristicRule]) -> dict[str, Any]:
    """Each knob of a rule class and its default (the value its YAML block ships with)."""
    params = inspect.signature(cls.__init__).parameters
    return {name: p.default for name, p in params.items() if name != "self"}


def _check_knob_names(block: str, settings: Mapping[str, Any]) -> None:
    accepted = knobs(RULES[block])
    for knob, value in settings.items():
        if knob not in accepted:
            raise ConfigError(
                f"{block}.{knob}", value, f"a knob of {block}: one of {', '.join(accepted)}"
            )


def _check_unread_block(block: str, settings: Mapping[str, Any], rule: str) -> None:
    """A block of a rule that is not selected may only hold its defaults: anything else
    would be recorded in the run's config but never read."""
    _check_knob_names(block, settings)
    for knob, default in defaults(RULES[block]).items():
        value = settings.get(knob, default)
        if value != default or isinstance(value, bool) != isinstance(default, bool):
            raise ConfigError(
                f"{block}.{knob}",
                value,
                f"its default {default!r} only: the selected rule is {rule}, and {block}'s "
                f"knobs are read only with rule={block} (select that rule or drop the setting)",
            )


def build_heuristic(rule: str = "linear", **blocks: Mapping[str, Any] | None) -> HeuristicRule:
    """Build rule `rule` from its block of knobs. Every block is checked: an unknown block or
    knob is refused, and so is a knob of another rule's block that differs from its default
    (the run would record it but never read it).

    Raises ConfigError with key `rule` for an unknown rule, `<block>` for an unknown block or
    one that is not a mapping, and `<block>.<knob>` for an unknown, invalid or unread knob.
    """
    names = ", ".join(RULES)
    if not isinstance(rule, str) or rule not in RULES:
        raise ConfigError("rule", rule, f"one of {names}")
    for block, value in blocks.items():
        if block not in RULES:
            raise ConfigError(block, value, f"a rule block: one of {names}")
        if value is not None and not isinstance(value, Mapping):
            raise ConfigError(block, value, f"a mapping of {block} knobs")
    settings = dict(blocks.get(rule) or {})
    _check_knob_names(rule, settings)
    for block, value in blocks.items():
        if block != rule:
            _check_unread_block(block, dict(value or {}), rule)
    return RULES[rule](**settings)


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
    "defaults",
    "knobs",
]
