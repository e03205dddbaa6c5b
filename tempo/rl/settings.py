"""Plain, validated settings objects for the parts of a run that are not swappable classes."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tempo.config_error import ConfigError
from tempo.rewards.functions import DEFAULT_FUNCTIONS, RewardFunction, parse_functions
from tempo.rewards.scorer import RewardScorer
from tempo.rewards.verifier import EXTRACTIONS
from tempo.sampling.sampler import check_decoding_options
from tempo.sampling.vllm_engine import ENGINES, VLLMSettings


def _positive_int(key: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, value, f"an integer >= {minimum}")


#: What tempo passes on to `lightning.Trainer(accelerator=..., precision=...)`.
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")
PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "bf16-mixed", "16-true", "bf16-true")


@dataclass
class RolloutConfig:
    """How much is sampled per training step."""

    prompts_per_step: int = 16  # distinct prompts per step; each is sampled group_size times
    max_new_tokens: int = 48  # completion length cap; longer completions count as truncated
    decoder: str = "auto"  # auto | fast | hf: tempo's fused decoding step or the model's forward
    compact_below: float = 0.75  # CPU: drop finished rows once this fraction or less decodes
    check_every: int = 4  # decoding steps between "has every row finished?" checks
    stop_tokens: Sequence[int | str] = ()  # extra ids / token strings that end a completion
    engine: str = "tempo"  # tempo (our sampler, every method) | vllm (all but introspective)
    vllm: Any = None  # VLLMSettings or its mapping: engine options for engine=vllm

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError("engine", self.engine, f"one of {', '.join(ENGINES)}")
        self.vllm = VLLMSettings.from_value(self.vllm)
        _positive_int("prompts_per_step", self.prompts_per_step)
        _positive_int("max_new_tokens", self.max_new_tokens)
        _positive_int("check_every", self.check_every)
        check_decoding_options(self.decoder, self.compact_below)
        self.stop_tokens = token_list("stop_tokens", self.stop_tokens)


def token_list(key: str, value: object) -> tuple[int | str, ...]:
    """A list of token ids (>= 0) and token strings."""
    items = [value] if isinstance(value, (int, str)) else value
    if not isinstance(items, (list, tuple)) or any(
        isinstance(t, bool)
        or not isinstance(t, (int, str))
        or (isinstance(t, int) and t < 0)
        or (isinstance(t, str) and not t)
        for t in items
    ):
        raise ConfigError(key, value, "a list of token ids (>= 0) and token strings")
    return tuple(items)


@dataclass
class EvalConfig:
    """Held-out evaluation during training (sampling set apart from the training controller)."""

    every: int = 25  # RL steps between evaluations; 0 = only at start and end
    num_problems: int = 200  # held-out problems used (<= the task's test split)
    samples: int = 8  # n samples per problem for avg@k / pass@k / maj@k
    temperature: float = 1.0  # sampling temperature of those n samples
    ks: Sequence[int] = field(default_factory=lambda: (1, 4, 8))  # k values (each <= samples)
    greedy: bool = True  # also decode greedily (eval/<task>/accuracy)
    batch_size: int = 50  # problems per evaluation batch
    at_start: bool = True  # evaluate before the first update (step 0)
    tasks: Sequence[str] = ()  # more held-out tasks (conf/task names), after the training task
    # Per extra task, values merged over its config, e.g. {aime24: {num_test: 10}}.
    task_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [self.tasks] if isinstance(self.tasks, str) else self.tasks
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
            raise ConfigError("tasks", self.tasks, "a list of task names (conf/task options)")
        if len(set(names)) != len(names):
            raise ConfigError("tasks", list(names), "task names without repeats")
        self.tasks = tuple(names)
        if not isinstance(self.task_overrides, Mapping):
            raise ConfigError("task_overrides", self.task_overrides, "a mapping task -> values")
        unknown = sorted(set(self.task_overrides) - set(self.tasks))
        if unknown:
            raise ConfigError(
                f"task_overrides.{unknown[0]}",
                dict(self.task_overrides[unknown[0]] or {}),
                f"overrides of a task listed in eval.tasks ({list(self.tasks)})",
            )
        _positive_int("every", self.every, minimum=0)
        _positive_int("num_problems", self.num_problems)
        _positive_int("samples", self.samples)
        _positive_int("batch_size", self.batch_size)
        if (
            isinstance(self.temperature, bool)
            or not isinstance(self.temperature, (int, float))
            or not 0 < self.temperature < math.inf
        ):
            raise ConfigError("temperature", self.temperature, "a finite number > 0")
        for key in ("greedy", "at_start"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(key, getattr(self, key), "true or false")
        self.ks = tuple(self.ks)
        if not self.ks or any(
            isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.samples
            for k in self.ks
        ):
            raise ConfigError(
                "ks", list(self.ks), f"a non-empty list of integers in [1, {self.samples}]"
            )


@dataclass
class RewardConfig:
    """The reward: a weighted sum of reward functions, and how answers are extracted.

    `functions` is a list of entries ``{_target_: pkg.module.func, weight: <number>, name:
    <optional>, timeout: <optional seconds per call>, ...extra keyword arguments}``; the
    built-ins are ``tempo.rewards.builtin.accuracy`` and ``tempo.rewards.builtin.boxed_format``
    (see ``tempo/rewards/functions.py`` for how a user function is called). Each import path
    is resolved and checked here, at config time. Correctness (``train/accuracy``, evaluation)
    is computed by the task's check or Math-Verify whatever the list holds.
    """

    # Our default: correctness only, weight 1.
    functions: Sequence[Mapping[str, Any]] = field(
        default_factory=lambda: [dict(entry) for entry in DEFAULT_FUNCTIONS]
    )
    extraction: str = "boxed"  # boxed (last closed \boxed{}) | math_verify (Math-Verify's own)
    timeout: float = 5.0  # wall-clock seconds per answer before the verifier worker is replaced
    workers: int = 1  # verifier worker processes
    max_answer_chars: int | None = 1000  # longer extracted answers score 0 without a check
    memory_limit_mb: int | None = 2048  # growth allowed per verifier worker (None = no limit)
    resolved: tuple[RewardFunction, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)):
            raise ConfigError("timeout", self.timeout, "a number of seconds > 0")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigError("timeout", self.timeout, "a number of seconds > 0")
        _positive_int("workers", self.workers)
        if self.extraction not in EXTRACTIONS:
            raise ConfigError("extraction", self.extraction, f"one of {', '.join(EXTRACTIONS)}")
        if self.max_answer_chars is not None:
            _positive_int("max_answer_chars", self.max_answer_chars)
        if self.memory_limit_mb is not None:
            _positive_int("memory_limit_mb", self.memory_limit_mb, minimum=64)
        self.resolved = parse_functions(self.functions, "functions")

    def scorer(
        self,
        check: Callable[[str, str], bool] | None = None,
        extract: Callable[[str], str | None] | None = None,
    ) -> RewardScorer:
        """The scorer these settings describe; `check` is a task's own answer check, `extract`
        its own answer extraction (replacing `extraction`, e.g. code instead of a box)."""
        return RewardScorer(
            self.timeout,
            self.workers,
            self.resolved,
            check=check,
            extraction=self.extraction,
            max_answer_chars=self.max_answer_chars,
            memory_limit_mb=self.memory_limit_mb,
            extract=extract,
        )

    def for_task(self, task: Any) -> RewardScorer:
        """The scorer for `task`: its own answer check and extraction where it has them."""
        check, extract = task_checks(task)
        return self.scorer(check=check, extract=extract)


def task_checks(task: Any) -> tuple[Any, Any]:
    """(answer_check, extract_answer) of a task, None where it uses the run's defaults."""
    return getattr(task, "answer_check", None), getattr(task, "extract_answer", None)


@dataclass
class TrainerConfig:
    """Where and how long to train; passed on to `lightning.Trainer`."""

    max_steps: int = 100  # RL steps (each: one rollout batch and its `mu` updates)
    accelerator: str = "cpu"  # cpu | gpu | auto
    devices: int | str = 1
    strategy: str = "auto"  # e.g. ddp
    precision: str = "32-true"  # e.g. bf16-mixed on GPU
    checkpoint_every: int = 50  # RL steps between checkpoints (the last one is always kept)
    keep_checkpoints: int = 1  # periodic checkpoints kept (newest first); -1 = all
    threads: int | None = None  # torch CPU threads (None = torch's default)
    progress_bar: bool = True
    # Recompute the decoder layers' activations in the backward pass instead of keeping them:
    # less memory per micro-batch for more compute. Affects training forward passes only (the
    # sampler decodes with the model in eval mode, where checkpointing is off).
    gradient_checkpointing: bool = False

    ACCELERATORS = ACCELERATORS
    PRECISIONS = PRECISIONS

    def __post_init__(self) -> None:
        _positive_int("max_steps", self.max_steps)
        if self.accelerator not in self.ACCELERATORS:
            raise ConfigError(
                "accelerator", self.accelerator, f"one of {', '.join(self.ACCELERATORS)}"
            )
        if str(self.precision) not in self.PRECISIONS:
            raise ConfigError("precision", self.precision, f"one of {', '.join(self.PRECISIONS)}")
        if not (
            self.devices == "auto"
            or (isinstance(self.devices, int) and self.devices >= 1)
            or (isinstance(self.devices, (list, tuple)) and self.devices)
        ):
            raise ConfigError(
                "devices", self.devices, "an integer >= 1, a list of device ids or auto"
            )
        _positive_int("checkpoint_every", self.checkpoint_every)
        if self.keep_checkpoints != -1:
            _positive_int("keep_checkpoints", self.keep_checkpoints)
        if self.threads is not None:
            _positive_int("threads", self.threads)
        for key in ("gradient_checkpointing", "progress_bar"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(key, getattr(self, key), "true or false")


def check_accelerator_available(trainer: TrainerConfig, key: str = "trainer") -> None:
    """Refuse, before any model work, an accelerator this machine does not have (a `gpu`
    trainer without CUDA, more GPUs than are visible, `mps` off Apple silicon). Kept apart
    from TrainerConfig so that configs for other machines still build anywhere."""
    import torch

    accelerator, devices = trainer.accelerator, trainer.devices
    if accelerator in ("gpu", "cuda"):
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if found == 0:
            raise ConfigError(
                f"{key}.accelerator",
                accelerator,
                "cpu or auto on this machine (no CUDA GPU is visible; trainer=cpu)",
            )
        if isinstance(devices, int) and devices > found:
            raise ConfigError(
                f"{key}.devices", devices, f"at most the {found} GPU(s) visible here, or auto"
            )
    elif accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"{key}.accelerator", accelerator, "cpu or auto on this machine (MPS is unavailable)"
        )


@dataclass
class LoggerConfig:
    """External experiment tracker; `metrics.jsonl` is written whatever this says."""

    backend: str = "wandb"  # wandb | jsonl (jsonl = no external tracker)
    project: str = "tempo"
    entity: str | None = None
    mode: str = "auto"  # auto (online if logged in, else offline) | online | offline | disabled
    tags: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.backend not in ("wandb", "jsonl"):
            raise ConfigError("backend", self.backend, "one of wandb, jsonl")
        modes = ("auto", "online", "offline", "disabled")
        if self.mode not in modes:
            raise ConfigError("mode", self.mode, f"one of {', '.join(modes)}")
        if not isinstance(self.project, str) or not self.project:
            raise ConfigError("project", self.project, "a W&B project name")
        from tempo.logging.wandb_setup import MAX_TAG_LENGTH

        tags = [self.tags] if isinstance(self.tags, (str, int)) else self.tags
        if not isinstance(tags, (list, tuple)) or not all(
            isinstance(t, (str, int))
            and not isinstance(t, bool)
            and 1 <= len(str(t).strip()) <= MAX_TAG_LENGTH
            for t in tags
        ):
            raise ConfigError(
                "tags", self.tags, f"a list of tags of 1 to {MAX_TAG_LENGTH} characters"
            )
        self.tags = tuple(str(t) for t in tags)
