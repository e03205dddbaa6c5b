"""Model choices for the `model` config group: the embedded tiny model or a hub/local model.

Each spec validates its settings when built from the config (cheap) and loads weights only
in `build`, after every other part of the config has been checked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from tempo.config_error import ConfigError
from tempo.models.tiny import tiny_config
from tempo.models.tokenizer import build_char_tokenizer
from tempo.models.warmstart import WarmStartConfig, warm_started


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
        self.dtype, self.attn_implementation = dtype, attn_implementation
        self.trust_remote_code, self.revision = trust_remote_code, revision

    def build(self, task, accelerator: str = "cpu") -> tuple[PreTrainedModel, Any]:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        kwargs = {
            "trust_remote_code": self.trust_remote_code,
            "revision": self.revision,
            "local_files_only": offline,
        }
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(
                self.name_or_path,
                dtype=self.dtype,
                attn_implementation=self.attn_implementation,
                **kwargs,
            )
        except OSError as err:
            raise ConfigError(
                "name_or_path",
                self.name_or_path,
                f"a loadable model ({str(err).splitlines()[0]})",
            ) from err
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer

    def build_for_checkpoint(
        self, task=None, accelerator: str = "cpu"
    ) -> tuple[PreTrainedModel, Any]:
        """The model a checkpoint's weights are loaded into: loaded as in `build` (the
        checkpoint then replaces every weight)."""
        return self.build(task, accelerator)
