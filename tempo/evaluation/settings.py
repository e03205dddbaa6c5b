"""Validated settings of `tempo-eval` (conf/eval.yaml's `eval:` and `trainer:` blocks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tempo.config_error import ConfigError
from tempo.evaluation.metrics import all_ks
from tempo.rl.settings import ACCELERATORS, PRECISIONS, token_list
from tempo.sampling.vllm_engine import ENGINES, VLLMSettings


def _int_at_least(key: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, value, f"an integer >= {minimum}")
    return value


@dataclass
class EvalOptions:
    """How each task is evaluated."""

    samples: int = 8  # n samples per problem (avg@n, pass@k, maj@k)
    temperature: float = 1.0  # fixed sampling temperature of the n samples
    ks: Sequence[int] | None = None  # k values of pass@k and maj@k; None = 1..n
    greedy: bool = True  # also decode greedily (accuracy)
    num_problems: int | None = None  # first N held-out problems of each task; None = all
    batch_size: int = 50  # problems per batch (each sampled `samples` times)
    max_new_tokens: int | None = None  # completion cap; None = the run's (or 48)
    use_head: bool = True  # sample with the method's own evaluation controller, if any
    stop_tokens: Sequence[int | str] = ()  # ids / token strings ending completions, besides EOS
    engine: str = "tempo"  # tempo (our sampler) | vllm (optional extra; not the introspective head)
    vllm: Any = None  # VLLMSettings or its mapping: engine options for engine=vllm

    def __post_init__(self) -> None:
        _int_at_least("samples", self.samples, 1)
        if (
            isinstance(self.temperature, bool)
            or not isinstance(self.temperature, (int, float))
            or not 0 < self.temperature < float("inf")
        ):
            raise ConfigError("temperature", self.temperature, "a finite number > 0")
        if self.ks is None:
            self.ks = all_ks(self.samples)
        else:
            ks = list(self.ks)
            if not ks or any(
                isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.samples
                for k in ks
            ):
                raise ConfigError(
                    "ks",
                    ks,
                    f"null (= 1..samples) or a non-empty list of integers in [1, {self.samples}]",
                )
            self.ks = tuple(sorted(set(ks)))
        for key in ("greedy", "use_head"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(key, getattr(self, key), "true or false")
        if self.num_problems is not None:
            _int_at_least("num_problems", self.num_problems, 1)
        _int_at_least("batch_size", self.batch_size, 1)
        if self.max_new_tokens is not None:
            _int_at_least("max_new_tokens", self.max_new_tokens, 1)
        self.stop_tokens = token_list("stop_tokens", self.stop_tokens)
        if self.engine not in ENGINES:
            raise ConfigError("engine", self.engine, f"one of {', '.join(ENGINES)}")
        self.vllm = VLLMSettings.from_value(self.vllm)


@dataclass
class EvalDevice:
    """Where evaluation runs: one device (evaluation is a single process)."""

    accelerator: str = "cpu"  # cpu | gpu | auto
    devices: int = 1  # must be 1
    precision: str = "32-true"  # e.g. bf16-mixed on GPU
    threads: int | None = None  # torch CPU threads (None = torch's default)
    progress_bar: bool = True

    ACCELERATORS = ACCELERATORS  # the same choices as training's
    PRECISIONS = PRECISIONS

    def __post_init__(self) -> None:
        if self.accelerator not in self.ACCELERATORS:
            allowed = f"one of {', '.join(self.ACCELERATORS)}"
            raise ConfigError("accelerator", self.accelerator, allowed)
        if str(self.precision) not in self.PRECISIONS:
            raise ConfigError("precision", self.precision, f"one of {', '.join(self.PRECISIONS)}")
        if self.devices != 1:
            raise ConfigError("devices", self.devices, "1 (evaluation runs on one device)")
        if self.threads is not None:
            _int_at_least("threads", self.threads, 1)
        if not isinstance(self.progress_bar, bool):
            raise ConfigError("progress_bar", self.progress_bar, "true or false")
