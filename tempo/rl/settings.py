"""Plain, validated settings objects for the parts of a run that are not swappable classes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tempo.config_error import ConfigError
from tempo.rewards.scorer import RewardScorer
from tempo.sampling.sampler import check_decoding_options


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

    def __post_init__(self) -> None:
        _positive_int("prompts_per_step", self.prompts_per_step)
        _positive_int("max_new_tokens", self.max_new_tokens)
        _positive_int("check_every", self.check_every)
        check_decoding_options(self.decoder, self.compact_below)


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

    def __post_init__(self) -> None:
        _positive_int("every", self.every, minimum=0)
        _positive_int("num_problems", self.num_problems)
        _positive_int("samples", self.samples)
        _positive_int("batch_size", self.batch_size)
        if not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise ConfigError("temperature", self.temperature, "a number > 0")
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
    """The verifiable reward: Math-Verify correctness, plus an optional format bonus."""

    timeout: float = 5.0  # wall-clock seconds per answer before the verifier worker is replaced
    workers: int = 1  # verifier worker processes
    format_weight: float = 0.0  # reward += format_weight * [completion has a \\boxed{}]
    max_answer_chars: int | None = 1000  # longer extracted answers score 0 without a check
    memory_limit_mb: int | None = 2048  # growth allowed per verifier worker (None = no limit)

    def __post_init__(self) -> None:
        if not isinstance(self.timeout, (int, float)) or not self.timeout > 0:
            raise ConfigError("timeout", self.timeout, "a number of seconds > 0")
        _positive_int("workers", self.workers)
        if not isinstance(self.format_weight, (int, float)) or self.format_weight < 0:
            raise ConfigError("format_weight", self.format_weight, "a number >= 0")
        if self.max_answer_chars is not None:
            _positive_int("max_answer_chars", self.max_answer_chars)
        if self.memory_limit_mb is not None:
            _positive_int("memory_limit_mb", self.memory_limit_mb, minimum=64)

    def scorer(self, check: Callable[[str, str], bool] | None = None) -> RewardScorer:
        """The scorer these settings describe; `check` is a task's own answer check."""
        return RewardScorer(
            self.timeout,
            self.workers,
            self.format_weight,
            check=check,
            max_answer_chars=self.max_answer_chars,
            memory_limit_mb=self.memory_limit_mb,
        )


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
        if not isinstance(self.gradient_checkpointing, bool):
            raise ConfigError(
                "gradient_checkpointing", self.gradient_checkpointing, "true or false"
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
