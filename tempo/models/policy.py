"""Split access to a causal LM: decoder body (hidden states) and LM head (logits).

The sampler needs the last hidden state for per-token temperature heads; running the body
and the head as two calls gives it without `output_hidden_states=True`, which would keep
every layer's states.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel


def decoder_body(model: PreTrainedModel) -> torch.nn.Module:
    """The transformer stack without the LM head (e.g. `Qwen2ForCausalLM.model`); for a peft
    (LoRA) model, that of the wrapped model, whose layers carry the adapters."""
    if hasattr(model, "get_base_model"):  # peft.PeftModel: `base_model` is peft's tuner
        model = model.get_base_model()
    return model.base_model


def lm_head(model: PreTrainedModel) -> torch.nn.Module:
    return model.get_output_embeddings()


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: 0 at each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def forward_hidden(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Last-layer hidden states [B, S, d] for full sequences (no cache)."""
    out = decoder_body(model)(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    return out.last_hidden_state


def completion_hidden(model: PreTrainedModel, rollout) -> torch.Tensor:
    """Last-layer states [b, L, d] that preceded each completion token of a `Rollout`."""
    ids, attn = rollout.input_ids()
    return forward_hidden(model, ids, attn)[:, rollout.prompt_ids.shape[1] - 1 : -1]
