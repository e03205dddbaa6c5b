"""What ends a completion, and whether prompts plus completions fit the model's context.

Instruct models end a turn with a token of their own (Qwen2.5-Instruct: `<|im_end|>`) that is
not the tokenizer's `eos_token`; their `generation_config.eos_token_id` lists every id that
ends generation. tempo stops on all of them, plus any the run config adds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tempo.config_error import ConfigError

#: Config attributes that hold a model's context length, by model family.
CONTEXT_ATTRIBUTES = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def token_id(tokenizer: Any, token: int | str, key: str, vocab_size: int) -> int:
    """The id of a stop token given as an id or as one token's text."""
    if isinstance(token, bool) or not isinstance(token, (int, str)):
        raise ConfigError(key, token, "a token id or a token string")
    if isinstance(token, int):
        if not 0 <= token < vocab_size:
            raise ConfigError(key, token, f"a token id in [0, {vocab_size})")
        return token
    found = tokenizer.convert_tokens_to_ids(token)
    unk = getattr(tokenizer, "unk_token_id", None)
    if not isinstance(found, int) or (found == unk and token != tokenizer.unk_token):
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ConfigError(
                key, token, f"a single token of this tokenizer (it encodes to {len(ids)} tokens)"
            )
        found = ids[0]
    return int(found)


def stop_token_ids(
    tokenizer: Any,
    generation_config: Any = None,
    extra: Sequence[int | str] = (),
    vocab_size: int | None = None,
    key: str = "rollout.stop_tokens",
) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS, the generation config's EOS ids
    (an int or a list) and `extra` (ids or token strings), without repeats, in that order."""
    size = vocab_size if vocab_size is not None else len(tokenizer)
    found = _ids(getattr(tokenizer, "eos_token_id", None))
    found += _ids(getattr(generation_config, "eos_token_id", None))
    if isinstance(extra, (str, int)):
        extra = [extra]
    for i, token in enumerate(extra or ()):
        found.append(token_id(tokenizer, token, f"{key}[{i}]", size))
    return list(dict.fromkeys(found))


def context_length(model_config: Any) -> int | None:
    """The longest sequence the model was built for (None when its config does not say)."""
    for name in CONTEXT_ATTRIBUTES:
        value = getattr(model_config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_fits_context(
    lengths: Iterable[tuple[int, str]],
    max_new_tokens: int,
    context: int | None,
    model_name: str,
    key: str = "rollout.max_new_tokens",
) -> int:
    """Raise when the longest prompt plus `max_new_tokens` exceeds the model's `context`.

    `lengths` yields (prompt tokens, where the prompt comes from); returns the longest length.
    """
    longest, where = max(lengths, default=(0, ""))
    if context is not None and longest + max_new_tokens > context:
        room = context - longest
        allowed = (
            f"at most {room} for {model_name}: its context is {context} tokens and the "
            f"longest prompt ({where}) has {longest}"
            if room > 0
            else f"a model with a longer context: {model_name}'s {context} tokens do not even "
            f"hold the longest prompt ({where}, {longest} tokens)"
        )
        raise ConfigError(key, max_new_tokens, allowed)
    return longest
