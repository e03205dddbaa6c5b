"""Checks of a model's input and output that need only its tokenizer and config, run before
the weights load (or the tiny model warm-starts): prompts render, completions can end, and
prompts plus completions fit the context."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from tempo.config_error import ConfigError
from tempo.data.problem import Problem
from tempo.models.prompting import PromptBuilder, PromptConfig
from tempo.models.special_tokens import check_fits_context, context_length, stop_token_ids

#: Training prompts whose length is checked up front (the rest are checked as they are drawn).
TRAIN_PROMPTS_CHECKED = 512


@dataclass
class ModelIO:
    """How prompts reach the model and what ends its completions."""

    prompts: PromptBuilder
    stop_token_ids: list[int]
    context: int | None  # the model's context length (None = its config does not say)
    longest_prompt: int  # tokens of the longest prompt checked


def training_prompts(task: Any, limit: int = TRAIN_PROMPTS_CHECKED) -> list[Problem]:
    """The first `limit` problems of a task's training stream (fewer for a small train set)."""
    size = getattr(task, "train_size", None)
    count = limit if size is None else min(limit, size)
    return [task.train_problem(i) for i in range(count)]


def check_decoder(spec: Any, config: Any, decoder: str, key: str = "rollout.decoder") -> None:
    """`decoder=fast` insists on tempo's fused decoding step: refuse it, from the model's
    config alone, for a model that step cannot reproduce (instead of at the first rollout)."""
    if decoder != "fast":
        return
    from tempo.sampling.fast_decoder import supports

    lora = getattr(spec, "lora", None)
    if lora is not None and getattr(lora, "enabled", False):
        reason: str | None = "LoRA adapters (the fast step reads the base weights only)"
    else:
        reason = supports(SimpleNamespace(config=config))
    if reason is not None:
        raise ConfigError(key, decoder, f"auto or hf for this model ({reason})")


def prepare_model_io(
    spec: Any,
    prompt_config: PromptConfig | None,
    stop_tokens: Sequence[int | str],
    max_new_tokens: int,
    problems: Iterable[tuple[str, Iterable[Problem]]],
    *,
    prompt_key: str = "prompt",
    stop_key: str = "rollout.stop_tokens",
    budget_key: str = "rollout.max_new_tokens",
    decoder: str | None = None,
    decoder_key: str = "rollout.decoder",
) -> ModelIO:
    """Build the prompt path and stop ids of model `spec` (a TinyModel or PretrainedModel) and
    check every prompt of `problems` ((source name, problems) pairs) against the context, and
    `decoder` (when given) against the model's architecture."""
    tokenizer = spec.load_tokenizer()
    config = spec.model_config()
    if decoder is not None:
        check_decoder(spec, config, decoder, decoder_key)
    builder = PromptBuilder(tokenizer, prompt_config, key=prompt_key)
    stops = stop_token_ids(
        tokenizer,
        spec.generation_config(),
        stop_tokens,
        vocab_size=getattr(config, "vocab_size", None),
        key=stop_key,
    )
    lengths = (
        (len(builder.token_ids(problem.prompt)), f"{name} problem {problem.id}")
        for name, group in problems
        for problem in group
    )
    context = context_length(config)
    name = getattr(spec, "name_or_path", None) or type(spec).__name__
    longest = check_fits_context(lengths, max_new_tokens, context, str(name), key=budget_key)
    return ModelIO(builder, stops, context, longest)
