"""Model choices for the `model` config group: the embedded tiny model or a hub/local model.

Each spec validates its settings when built from the config (cheap) and loads weights only
in `build`, after every other part of the config has been checked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
)

from tempo.config_error import ConfigError
from tempo.models.lora import LoraSettings, apply_lora
from tempo.models.tiny import tiny_config
from tempo.models.tokenizer import build_char_tokenizer
from tempo.models.warmstart import WarmStartConfig, warm_started


def attention_implementations() -> tuple[str, ...]:
    """The `attn_implementation` names transformers can load a model with: eager and every
    registered attention function (sdpa, flash_attention_2/3/..., flex_attention), without
    the `paged|` variants of its continuous-batching server."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    names = [k for k in ALL_ATTENTION_FUNCTIONS.valid_keys() if not k.startswith("paged|")]
    return ("eager", "sdpa", *sorted(set(names) - {"eager", "sdpa"}))


def check_attention(key: str, value: object, hub_kernels: bool = False) -> str:
    """`value` if it is an attention implementation transformers loads (with `hub_kernels`,
    also a hub kernel repository `owner/name`, as transformers 5 accepts), else ConfigError."""
    names = attention_implementations()
    if isinstance(value, str) and (
        value in names or (hub_kernels and re.fullmatch(r"[\w.-]+/[\w.-]+(@[\w.-]+)?", value))
    ):
        return value
    extra = " or a hub kernel repository owner/name" if hub_kernels else ""
    raise ConfigError(key, value, f"one of {', '.join(names)}{extra}")


class TinyModel:
    """~1M-parameter Qwen2/Llama built from a config, warm-started on the task and cached."""

    def __init__(
        self,
        architecture: str = "qwen2",
        hidden_size: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        num_kv_heads: int = 2,
        intermediate_size: int = 384,
        max_position_embeddings: int = 256,
        attn_implementation: str = "sdpa",
        warmstart: Mapping[str, Any] | None = None,
        cache_dir: str = "~/.cache/tempo",
    ) -> None:
        check_attention("attn_implementation", attn_implementation)
        self.tokenizer = build_char_tokenizer()
        self.config = tiny_config(
            self.tokenizer,
            architecture=architecture,
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            intermediate_size=intermediate_size,
            max_position_embeddings=max_position_embeddings,
            attn_implementation=attn_implementation,
        )
        try:
            self.warmstart = WarmStartConfig(**dict(warmstart or {}))
        except TypeError as err:
            raise ConfigError(
                "warmstart", dict(warmstart or {}), f"fields of WarmStartConfig ({err})"
            ) from err
        self.cache_dir = cache_dir
        self.checkpoint_dir: Path | None = None

    def load_tokenizer(self) -> Any:
        """The character-level tokenizer (built locally)."""
        return self.tokenizer

    def model_config(self) -> Any:
        return self.config

    def generation_config(self) -> Any:
        return None  # the tiny model stops on the tokenizer's EOS only

    def build(self, task, accelerator: str = "cpu") -> tuple[PreTrainedModel, Any]:
        model, self.checkpoint_dir = warm_started(
            self.config, self.tokenizer, task, self.warmstart, self.cache_dir, accelerator
        )
        return model, self.tokenizer

    def build_for_checkpoint(
        self, task=None, accelerator: str = "cpu"
    ) -> tuple[PreTrainedModel, Any]:
        """The model a checkpoint's weights are loaded into: built from the config with random
        weights (no warm-start, nothing read from or written to the cache)."""
        return AutoModelForCausalLM.from_config(self.config), self.tokenizer


class PretrainedModel:
    """Any causal LM by hub id or local path, through transformers (offline-safe)."""

    DTYPES = ("auto", "float32", "bfloat16", "float16")

    def __init__(
        self,
        name_or_path: str,
        dtype: str = "auto",
        attn_implementation: str = "sdpa",
        trust_remote_code: bool = False,
        revision: str | None = None,
        pad_token: str | None = None,
        eos_token: str | None = None,
        lora: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(name_or_path, str) or not name_or_path:
            raise ConfigError("name_or_path", name_or_path, "a hub id or a local directory")
        if dtype not in self.DTYPES:
            raise ConfigError("dtype", dtype, f"one of {', '.join(self.DTYPES)}")
        looks_local = name_or_path.startswith((".", "/", "~")) or os.path.isdir(name_or_path)
        if looks_local and not (Path(name_or_path).expanduser() / "config.json").is_file():
            raise ConfigError(
                "name_or_path", name_or_path, "a directory holding config.json (none found there)"
            )
        self.name_or_path = str(Path(name_or_path).expanduser()) if looks_local else name_or_path
        self.dtype = dtype
        self.attn_implementation = check_attention(
            "attn_implementation", attn_implementation, hub_kernels=True
        )
        if not isinstance(trust_remote_code, bool):  # "abc" is truthy: it would run remote code
            raise ConfigError("trust_remote_code", trust_remote_code, "true or false")
        if revision is not None and (not isinstance(revision, str) or not revision):
            raise ConfigError(
                "revision", revision, "a branch, tag or commit of the hub repo, or null"
            )
        self.trust_remote_code, self.revision = trust_remote_code, revision
        for key, value in (("pad_token", pad_token), ("eos_token", eos_token)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(key, value, "a token string of the model's tokenizer, or null")
        self.pad_token, self.eos_token = pad_token, eos_token
        self.lora = LoraSettings.from_config(lora)  # LoRA adapters (tempo.models.lora)
        self._tokenizer: Any = None
        self._config: Any = None

    def _hub_kwargs(self) -> dict[str, Any]:
        return {
            "trust_remote_code": self.trust_remote_code,
            "revision": self.revision,
            "local_files_only": os.environ.get("HF_HUB_OFFLINE") == "1",
        }

    def _not_loadable(self, err: Exception) -> ConfigError:
        return ConfigError(
            "model.name_or_path",
            self.name_or_path,
            f"a loadable model ({str(err).splitlines()[0] if str(err) else type(err).__name__})",
        )

    def load_tokenizer(self) -> Any:
        """The tokenizer (left padding; pad and EOS set as configured), loaded once and without
        the weights, so that prompts can be checked before the model loads."""
        if self._tokenizer is None:
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, **self._hub_kwargs())
            except (OSError, ValueError) as err:
                raise self._not_loadable(err) from err
            self._tokenizer = configure_special_tokens(
                tokenizer, self.pad_token, self.eos_token, self.generation_config()
            )
        return self._tokenizer

    def model_config(self) -> Any:
        """The model's transformers config (no weights)."""
        if self._config is None:
            try:
                self._config = AutoConfig.from_pretrained(self.name_or_path, **self._hub_kwargs())
            except (OSError, ValueError) as err:
                raise self._not_loadable(err) from err
        return self._config

    def generation_config(self) -> Any:
        """The checkpoint's generation config (its EOS ids), or None when it ships none."""
        try:
            return GenerationConfig.from_pretrained(self.name_or_path, **self._hub_kwargs())
        except (OSError, ValueError):
            return None

    def build(self, task, accelerator: str = "cpu") -> tuple[PreTrainedModel, Any]:
        tokenizer = self.load_tokenizer()
        try:
            model = AutoModelForCausalLM.from_pretrained(
                self.name_or_path,
                dtype=self.dtype,
                attn_implementation=self.attn_implementation,
                **self._hub_kwargs(),
            )
        except OSError as err:
            raise self._not_loadable(err) from err
        if tokenizer.pad_token_id is not None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return apply_lora(model, self.lora), tokenizer

    def build_for_checkpoint(
        self, task=None, accelerator: str = "cpu"
    ) -> tuple[PreTrainedModel, Any]:
        """The model a checkpoint's weights are loaded into: loaded as in `build` (the
        checkpoint then replaces every weight)."""
        return self.build(task, accelerator)


def configure_special_tokens(
    tokenizer: Any, pad_token: str | None, eos_token: str | None, generation_config: Any = None
) -> Any:
    """Left padding, and the pad and EOS tokens a run needs, set or checked in one line.

    EOS: `eos_token` when given, else the tokenizer's, else the first EOS id of the generation
    config. Pad: `pad_token` when given, else the tokenizer's, else EOS (the usual choice for
    causal LMs; padding never enters the loss). Each given token must be in the vocabulary.
    """
    tokenizer.padding_side = "left"
    vocab = tokenizer.get_vocab()
    for key, token in (("model.eos_token", eos_token), ("model.pad_token", pad_token)):
        if token is not None and token not in vocab:
            raise ConfigError(key, token, "a token in the tokenizer's vocabulary")
    if eos_token is not None:
        tokenizer.eos_token = eos_token
    if tokenizer.eos_token_id is None:
        generation_eos = getattr(generation_config, "eos_token_id", None)
        listed = generation_eos if isinstance(generation_eos, (list, tuple)) else [generation_eos]
        first = listed[0] if listed else None
        if isinstance(first, int):
            tokenizer.eos_token = tokenizer.convert_ids_to_tokens(first)
        else:
            raise ConfigError(
                "model.eos_token",
                None,
                "a token that ends completions: the tokenizer has no eos_token and the model no "
                "generation_config eos_token_id (set model.eos_token=<token>)",
            )
    if pad_token is not None:
        tokenizer.pad_token = pad_token
    elif tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
