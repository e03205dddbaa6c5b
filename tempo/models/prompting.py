"""Task prompt -> the exact token ids the policy sees, in one place for training and evaluation.

A task gives each problem a plain prompt string (its `prompt_template` applied). What the model
receives depends on the model:

- a tokenizer with a chat template (instruct and reasoning models): the prompt becomes the user
  turn of a conversation, after an optional system turn, rendered by the template with the
  generation prompt appended (`<|im_start|>assistant\\n` for Qwen). The template writes every
  special token itself (BOS included), so the text is tokenized without adding any more;
- otherwise (base models, the embedded tiny model): the prompt as it is, tokenized with the
  tokenizer's own special tokens (a Llama tokenizer adds BOS, GPT-2 and Qwen add none).

Qwen3's `enable_thinking` and any other template variable pass through `template_kwargs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tempo.config_error import ConfigError

CHAT_TEMPLATE_CHOICES = ("auto", True, False)


@dataclass
class PromptConfig:
    """How task prompts become model input (the `prompt:` block of the run config)."""

    chat_template: str | bool = "auto"  # auto = when the tokenizer has one | true | false
    system_prompt: str | None = None  # a system turn before the prompt (needs a chat template)
    enable_thinking: bool | None = None  # Qwen3's template switch; None = the template's default
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)  # more template variables
    add_special_tokens: str | bool = "auto"  # auto = only without a chat template | true | false

    def __post_init__(self) -> None:
        if self.chat_template not in CHAT_TEMPLATE_CHOICES:
            raise ConfigError("chat_template", self.chat_template, "auto, true or false")
        if self.add_special_tokens not in CHAT_TEMPLATE_CHOICES:
            raise ConfigError("add_special_tokens", self.add_special_tokens, "auto, true or false")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise ConfigError("system_prompt", self.system_prompt, "a string or null")
        if self.enable_thinking is not None and not isinstance(self.enable_thinking, bool):
            raise ConfigError("enable_thinking", self.enable_thinking, "true, false or null")
        if not isinstance(self.template_kwargs, Mapping) or not all(
            isinstance(key, str) for key in self.template_kwargs
        ):
            raise ConfigError("template_kwargs", self.template_kwargs, "a mapping name -> value")
        self.template_kwargs = dict(self.template_kwargs)


class PromptBuilder:
    """Renders and tokenizes prompts for one tokenizer under a `PromptConfig`.

    `render(prompt)` is the text handed to the tokenizer; `encode(prompts)` the left-padded ids
    and attention mask; `shown(ids, mask)` decodes what the model received, special tokens
    included (what sample pages show).
    """

    def __init__(self, tokenizer: Any, config: PromptConfig | None = None, key: str = "prompt"):
        self.tokenizer = tokenizer
        self.config = config or PromptConfig()
        has_template = bool(getattr(tokenizer, "chat_template", None))
        chat = self.config.chat_template
        if chat is True and not has_template:
            raise ConfigError(
                f"{key}.chat_template", True, "auto or false: this tokenizer has no chat template"
            )
        self.uses_chat = has_template if chat == "auto" else bool(chat)
        if not self.uses_chat:
            for name in ("system_prompt", "enable_thinking"):
                if getattr(self.config, name) is not None:
                    raise ConfigError(
                        f"{key}.{name}",
                        getattr(self.config, name),
                        "null without a chat template (this tokenizer has none, or "
                        f"{key}.chat_template=false)",
                    )
        special = self.config.add_special_tokens
        self.add_special_tokens = (not self.uses_chat) if special == "auto" else bool(special)
        self._template_kwargs = dict(self.config.template_kwargs)
        if self.config.enable_thinking is not None:
            self._template_kwargs["enable_thinking"] = self.config.enable_thinking

    def messages(self, prompt: str) -> list[dict[str, str]]:
        """The conversation a chat template renders: optional system turn, then the prompt."""
        turns = []
        if self.config.system_prompt:
            turns.append({"role": "system", "content": self.config.system_prompt})
        turns.append({"role": "user", "content": prompt})
        return turns

    def render(self, prompt: str) -> str:
        """The text the tokenizer receives for one task prompt."""
        if not self.uses_chat:
            return prompt
        return self.tokenizer.apply_chat_template(
            self.messages(prompt),
            tokenize=False,
            add_generation_prompt=True,
            **self._template_kwargs,
        )

    def token_ids(self, prompt: str) -> list[int]:
        """Unpadded ids of one prompt (for length checks)."""
        text = self.render(prompt)
        return self.tokenizer(text, add_special_tokens=self.add_special_tokens)["input_ids"]

    def encode(
        self, prompts: Sequence[str], device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids [B, P] and attention mask [B, P] of the rendered prompts."""
        texts = [self.render(p) for p in prompts]
        enc = self.tokenizer(
            texts,
            padding=True,
            padding_side="left",
            return_tensors="pt",
            add_special_tokens=self.add_special_tokens,
        )
        return enc["input_ids"].to(device), enc["attention_mask"].to(device)

    def shown(self, ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
        """The prompt text each row's model input decodes to, special tokens included."""
        rows = [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]
        return self.tokenizer.batch_decode(rows, skip_special_tokens=False)
