"""Batched, KV-cached decoding with a temperature chosen per row and per step.

The temperature controller is consulted once per decoding step with that step's logits and
last hidden state; whatever it returns is used to sample and is stored per token, so every
later log-prob can be recomputed under the same behaviour policy.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedModel, StaticCache

from tempo.models.policy import decoder_body, lm_head, position_ids_from_mask
from tempo.sampling.rollout import Rollout
from tempo.temperature.base import TemperatureController


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    return -(logp.exp() * logp).sum(-1)


def _supports_4d_mask(model: PreTrainedModel) -> bool:
    return getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager")


def _step_mask(key_valid: torch.Tensor, model: PreTrainedModel):
    """A function of the step giving the [B, 1, 1, K] mask for that step's query."""
    view = key_valid[:, None, None, :]
    if model.config._attn_implementation == "sdpa":
        return lambda t: view  # boolean: True = attend
    dtype = next(model.parameters()).dtype
    neg = torch.finfo(dtype).min
    return lambda t: torch.zeros(view.shape, dtype=dtype, device=view.device).masked_fill(
        ~view, neg
    )


class Sampler:
    """Generates completions for left-padded prompts.

    Args:
        max_new_tokens: hard cap on completion length (completions without EOS by then are
            marked truncated).
        eos_token_id / pad_token_id: end-of-completion and filler ids.
        check_every: how often (in steps) to test whether every row has finished; the test
            syncs host and device, so on GPU it should not run every step.
        static_cache: preallocate the KV cache for prompt + max_new_tokens and pass a
            ready 4D attention mask, which skips the per-step cache concatenation and mask
            building (used when the model's attention is `sdpa` or `eager`).
    """

    def __init__(
        self,
        max_new_tokens: int,
        eos_token_id: int,
        pad_token_id: int,
        check_every: int = 4,
        static_cache: bool = True,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
        self.max_new_tokens = max_new_tokens
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.check_every = max(1, check_every)
        self.static_cache = static_cache

    @torch.no_grad()
    def rollout(
        self,
        model: PreTrainedModel,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        controller: TemperatureController | None,
        generator: torch.Generator | None = None,
        greedy: bool = False,
    ) -> Rollout:
        """Sample one completion per prompt row. `greedy` takes the argmax (T recorded as 1)."""
        body, head = decoder_body(model), lm_head(model)
        batch, prompt_len = prompt_ids.shape
        device = prompt_ids.device
        steps = self.max_new_tokens
        attn = torch.ones(batch, prompt_len + steps, dtype=torch.long, device=device)
        attn[:, :prompt_len] = prompt_mask
        positions = position_ids_from_mask(prompt_mask)
        next_position = positions[:, -1:] + 1

        static = self.static_cache and _supports_4d_mask(model)
        if static:
            cache = StaticCache(config=model.config, max_cache_len=prompt_len + steps)
            # Keys each new token may attend to; the 4D view is updated in place every step.
            key_valid = attn.bool()
            key_valid[:, prompt_len:] = False
            step_mask = _step_mask(key_valid, model)
        else:
            cache = DynamicCache(config=model.config)
        hidden = body(
            input_ids=prompt_ids,
            attention_mask=attn[:, :prompt_len],
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state[:, -1]

        tokens = torch.full((batch, steps), self.pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros(batch, steps, device=device)
        temps = torch.ones(batch, steps, device=device)
        logprobs = torch.zeros(batch, steps, device=device)
        entropy = torch.zeros(batch, steps, device=device)
        entropy_t = torch.zeros(batch, steps, device=device)
        records: dict[str, torch.Tensor] = {}
        alive = torch.ones(batch, dtype=torch.bool, device=device)
        prev_t = (
            controller.initial_temperature(batch, device)
            if controller is not None
            else torch.ones(batch, device=device)
        )
        length = steps
        for t in range(steps):
            logits = head(hidden).float()
            logp1 = torch.log_softmax(logits, dim=-1)
            if greedy or controller is None:
                temp = torch.ones(batch, device=device)
                logp_t = logp1
                token = (
                    logits.argmax(-1)
                    if greedy
                    else torch.multinomial(logp1.exp(), 1, generator=generator).squeeze(1)
                )
            else:
                decision = controller.temperature(logits, hidden, prev_t, t)
                temp = decision.temperature
                for key, value in decision.records.items():
                    if key not in records:
                        records[key] = torch.zeros(batch, steps, dtype=value.dtype, device=device)
                    records[key][:, t] = value
                logp_t = torch.log_softmax(logits / temp[:, None], dim=-1)
                token = torch.multinomial(logp_t.exp(), 1, generator=generator).squeeze(1)
            alive_f = alive.float()
            token = torch.where(alive, token, self.pad_token_id)
            tokens[:, t] = token
            mask[:, t] = alive_f
            temps[:, t] = temp
            logprobs[:, t] = logp_t.gather(1, token[:, None]).squeeze(1) * alive_f
            entropy[:, t] = _entropy(logp1) * alive_f
            entropy_t[:, t] = _entropy(logp_t) * alive_f if logp_t is not logp1 else entropy[:, t]
            prev_t = temp
            alive = alive & (token != self.eos_token_id)
            if t + 1 == steps or ((t + 1) % self.check_every == 0 and not bool(alive.any())):
                length = t + 1
                break
            if static:
                key_valid[:, prompt_len + t] = True
                mask_arg = step_mask(t)
                cache_position = torch.tensor([prompt_len + t], device=device)
            else:
                mask_arg, cache_position = attn[:, : prompt_len + t + 1], None
            hidden = body(
                input_ids=token[:, None],
                attention_mask=mask_arg,
                position_ids=next_position + t,
                past_key_values=cache,
                use_cache=True,
                cache_position=cache_position,
            ).last_hidden_state[:, -1]

        finished = ~alive
        return Rollout(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            tokens=tokens[:, :length],
            mask=mask[:, :length],
            temperatures=temps[:, :length],
            logprobs=logprobs[:, :length],
            entropy=entropy[:, :length],
            entropy_at_T=entropy_t[:, :length],
            finished=finished,
            controller_data={k: v[:, :length] for k, v in records.items()},
        )
