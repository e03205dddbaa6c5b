"""Reward functions as config entries: ``{_target_: pkg.module.func, weight: 0.5, ...}``.

A user's reward function is called TRL-style, once per batch, with keyword arguments::

    fn(prompts=[...], completions=[...], answers=[...], golds=[...], **columns, **kwargs)
        -> list[float]   # one finite number per completion

``answers`` are the extracted final answers (None = none found), ``golds`` the gold answers,
``columns`` the dataset's columns of each row as lists (absent for generated tasks), and
``kwargs`` the entry's extra keys (on a name clash the four named arguments win, then the
extra keys, then the columns). A function without ``**kwargs`` gets only the arguments it
names. It runs in the scorer's timed, memory-limited worker processes through `call_reward`;
anything but a list of finite numbers of the right length scores that call 0.0 for every row.

`RewardFunction` is one validated entry (the import path is resolved in the parent at config
time); `parse_functions` validates a list of config entries, with `ConfigError` keys such as
``functions[1]._target_``.
"""

from __future__ import annotations

import inspect
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tempo.config_error import ConfigError
from tempo.rewards.verifier import resolve_target

#: The arguments every reward function call gets (columns and extra keys never replace them).
RESERVED = ("prompts", "completions", "answers", "golds")
#: The worker-side entry point of a batch call (see `call_reward`).
CALL_REWARD = "tempo.rewards.functions:call_reward"
#: The default list: Math-Verify (or the task's own check) correctness, weight 1.
DEFAULT_FUNCTIONS = ({"_target_": "tempo.rewards.builtin.accuracy", "weight": 1.0},)
_ENTRY_KEYS = ("_target_", "weight", "name", "timeout")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_DETAIL_CHARS = 200
_TARGET_ALLOWED = "an importable function (pkg.module.func or pkg.module:func)"


def builtin_kind(fn: object) -> str | None:
    """``"accuracy"`` / ``"boxed_format"`` for the built-ins of `tempo.rewards.builtin`."""
    return getattr(fn, "tempo_builtin", None)


def _plain(value: Any) -> Any:
    """Config containers (DictConfig, ListConfig) as plain dicts and lists, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def _keyword_names(fn: Callable[..., Any]) -> frozenset[str] | None:
    """Names ``fn`` accepts as keywords, or None when it takes ``**kwargs`` (or is opaque)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in parameters if p.kind in kinds)


@dataclass
class RewardFunction:
    """One weighted reward function; `fn` and `builtin` are resolved from `target`.

    ``name`` defaults to the function's ``__name__``; ``timeout`` (seconds per batch call,
    user functions only) defaults to the scorer's ``timeout``; ``kwargs`` are passed on to
    every call. Raises `ConfigError` (keys relative to the entry: ``_target_``, ``weight``...).
    """

    target: str
    weight: float = 1.0
    name: str | None = None
    timeout: float | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    fn: Callable[..., Any] = field(init=False, repr=False, compare=False)
    builtin: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.target, str) or not self.target.strip():
            raise ConfigError("_target_", self.target, _TARGET_ALLOWED)
        try:
            fn = resolve_target(self.target)
        except Exception as err:  # ImportError, AttributeError, or the module's own error
            raise ConfigError(
                "_target_", self.target, f"{_TARGET_ALLOWED}; {type(err).__name__}: {err}"
            ) from None
        if inspect.isclass(fn) or not callable(fn):
            raise ConfigError(
                "_target_", self.target, f"{_TARGET_ALLOWED}; found {type(fn).__name__}"
            )
        self.fn, self.builtin = fn, builtin_kind(fn)
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError("weight", weight, "a finite number")
        if not math.isfinite(weight):
            raise ConfigError("weight", weight, "a finite number")
        self.weight = float(weight)
        if self.name is None:
            default = getattr(fn, "__name__", "")
            if not isinstance(default, str) or not _NAME.fullmatch(default):
                default = re.split(r"[.:]", self.target)[-1]
            self.name = default
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError("name", self.name, "letters, digits, _ . - (a metric key part)")
        if self.name == "verifier" or self.name.startswith("verifier_"):
            raise ConfigError("name", self.name, "a name not starting with verifier (reserved)")
        if self.timeout is not None:
            if self.builtin is not None:
                raise ConfigError(
                    "timeout",
                    self.timeout,
                    f"no timeout for the built-in {self.builtin} (reward.timeout bounds each "
                    "answer check; boxed_format is a linear scan)",
                )
            if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)):
                raise ConfigError("timeout", self.timeout, "a number of seconds > 0, or null")
            if not (math.isfinite(self.timeout) and self.timeout > 0):
                raise ConfigError("timeout", self.timeout, "a number of seconds > 0, or null")
            self.timeout = float(self.timeout)
        self.kwargs = _plain(dict(self.kwargs))
        self._check_kwargs()

    def _check_kwargs(self) -> None:
        if self.builtin is not None:
            for key, value in self.kwargs.items():
                raise ConfigError(key, value, f"one of {', '.join(_ENTRY_KEYS)} ({self.builtin})")
            return
        accepted = _keyword_names(self.fn)
        if accepted is not None and "completions" not in accepted:
            raise ConfigError(
                "_target_",
                self.target,
                "a reward function taking completions= (TRL-style: fn(prompts, completions, "
                "answers, golds, **columns) -> list[float])",
            )
        for key, value in self.kwargs.items():
            if key in RESERVED:
                raise ConfigError(
                    key, value, f"an extra argument other than {', '.join(RESERVED)} (reserved)"
                )
            if key.startswith("_"):
                raise ConfigError(key, value, f"one of {', '.join(_ENTRY_KEYS)} or an argument")
            if accepted is not None and key not in accepted:
                names = ", ".join(sorted(accepted - set(RESERVED))) or "none"
                raise ConfigError(
                    key, value, f"{', '.join(_ENTRY_KEYS)} or an argument of {self.target}: {names}"
                )

    @classmethod
    def from_config(cls, entry: Mapping[str, Any]) -> RewardFunction:
        """An entry ``{_target_, weight, name, timeout, **kwargs}`` (a dict or a DictConfig)."""
        entry = _plain(entry)
        if "_target_" not in entry:
            raise ConfigError("_target_", None, f"{_TARGET_ALLOWED} (the entry has none)")
        kwargs = {k: v for k, v in entry.items() if k not in _ENTRY_KEYS}
        return cls(
            entry["_target_"],
            entry.get("weight", 1.0),
            entry.get("name"),
            entry.get("timeout"),
            kwargs,
        )


def parse_functions(entries: object, key: str = "functions") -> tuple[RewardFunction, ...]:
    """Validate a list of entries (or `RewardFunction`s); `ConfigError` keys are
    ``{key}[i].field``. Names must be distinct, and no name may be another's metric key
    (``<name>_errors`` / ``<name>_timeouts``)."""
    allowed = "a non-empty list of {_target_: pkg.module.func, weight: <number>, ...} entries"
    if isinstance(entries, (str, bytes, Mapping)) or not isinstance(entries, Sequence):
        raise ConfigError(key, entries, allowed)
    if not entries:
        raise ConfigError(key, list(entries), allowed)
    functions: list[RewardFunction] = []
    for i, entry in enumerate(entries):
        where = f"{key}[{i}]"
        if isinstance(entry, RewardFunction):
            functions.append(entry)
            continue
        if not isinstance(entry, Mapping):
            raise ConfigError(where, entry, "a mapping {_target_: pkg.module.func, weight: ...}")
        try:
            functions.append(RewardFunction.from_config(entry))
        except ConfigError as err:
            raise ConfigError(f"{where}.{err.key}", err.value, err.allowed) from None
    seen: dict[str, int] = {}
    for i, function in enumerate(functions):
        name = str(function.name)
        if name in seen:
            raise ConfigError(
                f"{key}[{i}].name",
                name,
                f"a name not used by {key}[{seen[name]}] (set name: to tell them apart)",
            )
        seen[name] = i
    for i, function in enumerate(functions):
        for suffix in ("_errors", "_timeouts"):
            if str(function.name).endswith(suffix) and str(function.name)[: -len(suffix)] in seen:
                raise ConfigError(
                    f"{key}[{i}].name",
                    function.name,
                    f"a name whose reward/<name> key is not another's reward/<name>{suffix}",
                )
    return tuple(functions)


# --------------------------------------------------------------------- inside the workers

_resolved: dict[str, tuple[Callable[..., Any], frozenset[str] | None]] = {}


def as_rewards(values: object, n: int) -> list[float]:
    """``values`` as ``n`` finite floats (a list, tuple, or anything with ``tolist()``: numpy,
    torch); raises TypeError / ValueError naming what is wrong."""
    if not isinstance(values, (list, tuple)) and hasattr(values, "tolist"):
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"returned {type(values).__name__}, not a list of {n} numbers")
    if len(values) != n:
        raise IndexError(f"returned {len(values)} values for {n} completions")
    out: list[float] = []
    for i, value in enumerate(values):
        if not isinstance(value, numbers.Real):
            raise TypeError(f"value [{i}] is {type(value).__name__}, not a number")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"value [{i}] is {number}, not finite")
        out.append(number)
    return out


_RETURN_KINDS = {IndexError: "WrongLength", TypeError: "NotANumber", ValueError: "NotFinite"}


def _describe(exc: BaseException) -> str:
    """A bounded one-line rendering of an exception's message."""
    try:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    except Exception:
        return "(message unavailable)"
    return text[:_DETAIL_CHARS] + ("..." if len(text) > _DETAIL_CHARS else "")


def call_reward(target: str, kwargs: dict[str, Any], n: int) -> tuple[str, Any, str]:
    """Run one batch call of the reward function at ``target`` (inside a worker).

    Returns ``("ok", rewards, "")`` or ``("error", kind, message)``: kind is the exception's
    type name, or WrongLength / NotANumber / NotFinite for a bad return value. A MemoryError
    propagates, so the pool retires the worker that hit its memory limit.
    """
    if target not in _resolved:
        fn = resolve_target(target)
        _resolved[target] = fn, _keyword_names(fn)
    fn, accepted = _resolved[target]
    if accepted is not None:
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    try:
        values = fn(**kwargs)
    except MemoryError:
        raise
    except Exception as exc:
        return "error", type(exc).__name__, _describe(exc)
    try:
        return "ok", as_rewards(values, n), ""
    except MemoryError:
        raise
    except Exception as exc:  # as_rewards' own, or a strange number type's float()
        return "error", _RETURN_KINDS.get(type(exc), type(exc).__name__), _describe(exc)
