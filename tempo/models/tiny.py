"""The embedded default model: a ~1M-parameter causal LM built from a config, never downloaded."""

from __future__ import annotations

from transformers import LlamaConfig, PretrainedConfig, PreTrainedTokenizerFast, Qwen2Config

from tempo.config_error import ConfigError

ARCHITECTURES = {"qwen2": Qwen2Config, "llama": LlamaConfig}


def tiny_config(
    tokenizer: PreTrainedTokenizerFast,
    architecture: str = "qwen2",
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 384,
    max_position_embeddings: int = 256,
    attn_implementation: str = "sdpa",
) -> PretrainedConfig:
    """A small transformers config whose vocabulary matches `tokenizer` (rounded up to 64)."""
    if architecture not in ARCHITECTURES:
        raise ConfigError("architecture", architecture, f"one of {sorted(ARCHITECTURES)}")
    for key, value in [
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
        ("num_heads", num_heads),
        ("num_kv_heads", num_kv_heads),
        ("intermediate_size", intermediate_size),
        ("max_position_embeddings", max_position_embeddings),
    ]:
        if not isinstance(value, int) or value < 1:
            raise ConfigError(key, value, "a positive integer")
    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ConfigError(
            "num_heads",
            num_heads,
            f"a divisor of hidden_size={hidden_size} and a multiple of num_kv_heads={num_kv_heads}",
        )
    vocab = -(-len(tokenizer) // 64) * 64
    return ARCHITECTURES[architecture](
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attn_implementation=attn_implementation,
    )
