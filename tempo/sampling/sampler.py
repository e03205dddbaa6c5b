"""Batched, KV-cached decoding with a temperature chosen per row and per step.

The temperature controller is consulted once per decoding step with that step's logits and
last hidden state; whatever it returns is used to sample and is stored per token, so every
later log-prob can be recomputed under the same behaviour policy.

The decoding loop has no host-device synchronisation: tokens are drawn with the exponential
race (argmax of p / E, E ~ Exp(1), the Gumbel-max trick in another form) instead of
`torch.multinomial`, padding after EOS and the per-token masks are worked out once after the
loop, and the "has every row finished?" test reads a flag copied to the host asynchronously.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from transformers import DynamicCache, PreTrainedModel, StaticCache

from tempo.config_error import ConfigError
from tempo.models.policy import decoder_body, lm_head, position_ids_from_mask
from tempo.sampling.fast_decoder import FastDecoder, supports
from tempo.sampling.rollout import Rollout
from tempo.temperature.base import StepTemperature, TemperatureController

DECODERS = ("auto", "fast", "hf")

#: One decoding step: the t-th new token of every row [B] -> the next last hidden state [B, d].
Step = Callable[[Tensor, int], Tensor]
#: Drops rows from the decoder's batch: indices of the rows to go on with.
Keep = Callable[[Tensor], None]


class InvalidTemperature(ConfigError):
    """A temperature controller returned a temperature that is not a finite number > 0."""

    def __init__(self, controller: TemperatureController, value: float) -> None:
        cls = type(controller)
        super().__init__(
            "method",
            f"{cls.__module__}.{cls.__qualname__}",
            f"a method whose temperatures are finite numbers > 0 (it returned {value!r})",
        )


def exponential_race(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One index per row drawn from `probs` [B, V]: argmax_v p_v / E_v with E_v ~ Exp(1).

    P(argmax = v) = p_v / sum(p) exactly (the smallest of independent exponentials with rates
    p_v is the v-th with probability proportional to p_v), so this equals multinomial sampling
    but needs no cumulative sum, binary search or validity check (which syncs on GPU).
    E = -log U with U ~ Uniform[0, 1) (three times faster on CPU than `exponential_`); U = 0
    (probability 2^-24 per entry in float32) gives E = inf, which only ever loses the race.
    """
    race = torch.rand(probs.shape, generator=generator, device=probs.device).log_().neg_()
    return (probs / race).argmax(-1)


def check_decoding_options(decoder: object, compact_below: object) -> None:
    """One-line errors for the sampler's options (also run when the run config is built)."""
    if decoder not in DECODERS:
        raise ConfigError("decoder", decoder, f"one of {', '.join(DECODERS)}")
    fraction = compact_below
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ConfigError("compact_below", fraction, "a fraction in [0, 1]")
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError("compact_below", fraction, "a fraction in [0, 1]")


def _supports_4d_mask(model: PreTrainedModel) -> bool:
    return getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager")


def _cache_keyword(body: torch.nn.Module) -> str:
    """The keyword the decoder body's forward takes its KV cache by: `cache` where the model
    has it (transformers 5.x renamed `past_key_values`, deprecated for removal in 5.40), else
    `past_key_values` (earlier 5.x releases, remote-code models that keep the old name)."""
    try:
        params = inspect.signature(body.forward).parameters
    except (TypeError, ValueError):  # no introspectable signature: the long-standing name
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _hf_steps(
    model: PreTrainedModel, prompt_ids: Tensor, prompt_mask: Tensor, steps: int, static: bool
) -> tuple[Tensor, Step]:
    """The general path through the model's own forward: prefill, then one call per token."""
    body = decoder_body(model)
    batch, prompt_len = prompt_ids.shape
    device = prompt_ids.device
    attn = torch.ones(batch, prompt_len + steps, dtype=torch.long, device=device)
    attn[:, :prompt_len] = prompt_mask
    positions = position_ids_from_mask(prompt_mask)
    next_position = positions[:, -1:] + 1
    # Under autocast RoPE returns float32 keys beside bf16 values, which StaticCache rejects.
    static = static and _supports_4d_mask(model) and not torch.is_autocast_enabled(device.type)
    if static:
        cache = StaticCache(config=model.config, max_cache_len=prompt_len + steps)
        key_valid = attn.bool()
        key_valid[:, prompt_len:] = False
        view = key_valid[:, None, None, :]
        if model.config._attn_implementation == "sdpa":
            mask_4d = view  # boolean: True = attend; updated in place every step
        else:
            dtype = next(model.parameters()).dtype
            mask_4d = torch.zeros(view.shape, dtype=dtype, device=device)
        cache_positions = torch.arange(prompt_len, prompt_len + steps, device=device)
    else:
        cache = DynamicCache(config=model.config)
    cache_kwarg = {_cache_keyword(body): cache}
    first = body(
        input_ids=prompt_ids,
        attention_mask=attn[:, :prompt_len],
        position_ids=positions,
        use_cache=True,
        **cache_kwarg,
    ).last_hidden_state[:, -1]

    def step(token: Tensor, t: int) -> Tensor:
        if static:
            key_valid[:, prompt_len + t] = True
            if mask_4d is not view:
                neg = torch.finfo(mask_4d.dtype).min
                mask_4d.zero_().masked_fill_(~view, neg)
            mask_arg, cache_position = mask_4d, cache_positions[t : t + 1]
        else:
            mask_arg, cache_position = attn[:, : prompt_len + t + 1], None
        return body(
            input_ids=token[:, None],
            attention_mask=mask_arg,
            position_ids=next_position + t,
            use_cache=True,
            cache_position=cache_position,
            **cache_kwarg,
        ).last_hidden_state[:, -1]

    return first, step


class _FinishedFlag:
    """Answers "has every row emitted EOS?" without stalling the device.

    On GPU the flag is copied to pinned host memory without blocking and read only once the
    copy has landed, so the loop may run a step or two past the end (those columns are
    padding and are trimmed). On CPU the copy is immediate.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.host = torch.zeros((), dtype=torch.bool, pin_memory=self.cuda)
        self.event = torch.cuda.Event() if self.cuda else None
        self.pending = False

    def post(self, finished: Tensor) -> None:
        if self.pending:
            return
        self.host.copy_(finished.all(), non_blocking=self.cuda)
        if self.event is not None:
            self.event.record()
        self.pending = True

    def done(self) -> bool:
        if not self.pending or (self.event is not None and not self.event.query()):
            return False
        self.pending = False
        return bool(self.host)


class Sampler:
    """Generates completions for left-padded prompts.

    Args:
        max_new_tokens: hard cap on completion length (completions without EOS by then are
            marked truncated).
        eos_token_id: the id, or the list of ids, that end a completion (an instruct model's
            end-of-turn token and its EOS, see `tempo.models.special_tokens.stop_token_ids`);
            the first one that appears ends the row and is its last token.
        pad_token_id: the filler id after the end.
        check_every: decoding steps between tests of whether every row has finished.
        static_cache: on the general (`hf`) path, preallocate the KV cache and pass a ready
            4D attention mask (models with `sdpa` or `eager` attention).
        decoder: `auto` runs tempo's fused one-token step (`tempo.sampling.fast_decoder`) for
            the model families it supports and the model's own forward otherwise; `fast`
            requires the fused step; `hf` always uses the model's forward.
        compact_below: on CPU with the fused step, when at a check the fraction of rows still
            decoding is at most this, finished rows leave the batch (their KV cache too), so
            the long tail of a few long completions does not pay for the whole batch. 0 turns
            it off. Not done on GPU, where finding the rows would stall the device.
    """

    def __init__(
        self,
        max_new_tokens: int,
        eos_token_id: int | Sequence[int],
        pad_token_id: int,
        check_every: int = 4,
        static_cache: bool = True,
        decoder: str = "auto",
        compact_below: float = 0.75,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
        check_decoding_options(decoder, compact_below)
        self.max_new_tokens = max_new_tokens
        ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        if not ids or any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
            raise ValueError(f"eos_token_id must be an id or a non-empty list of ids, got {ids}")
        self.eos_token_ids = list(dict.fromkeys(ids))
        self.eos_token_id = self.eos_token_ids[0]
        self.pad_token_id = pad_token_id
        self.check_every = max(1, check_every)
        self.static_cache = static_cache
        self.decoder = decoder
        self.compact_below = compact_below

    def _steps(
        self, model: PreTrainedModel, prompt_ids: Tensor, prompt_mask: Tensor
    ) -> tuple[Tensor, Step, Keep | None]:
        if self.decoder != "hf":
            reason = supports(model)
            if reason is None:
                fast = FastDecoder(model, prompt_ids, prompt_mask, self.max_new_tokens)
                return fast.first_hidden, fast.step, fast.keep
            if self.decoder == "fast":
                allowed = f"auto or hf for this model ({reason})"
                raise ConfigError("rollout.decoder", "fast", allowed)
        first, step = _hf_steps(
            model, prompt_ids, prompt_mask, self.max_new_tokens, self.static_cache
        )
        return first, step, None

    @torch.no_grad()
    def rollout(
        self,
        model: PreTrainedModel,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        controller: TemperatureController | None,
        generator: torch.Generator | None = None,
        greedy: bool = False,
    ) -> Rollout:
        """Sample one completion per prompt row. `greedy` takes the argmax (T recorded as 1)."""
        head = lm_head(model)
        batch = prompt_ids.shape[0]
        device = prompt_ids.device
        steps = self.max_new_tokens
        stop = torch.tensor(self.eos_token_ids, device=device)
        ends = (
            (lambda x: x == self.eos_token_id)
            if len(stop) == 1
            else (lambda x: torch.isin(x, stop))
        )
        hidden, advance, keep = self._steps(model, prompt_ids, prompt_mask)
        compact = keep is not None and device.type == "cpu" and self.compact_below > 0
        rows: Tensor | slice = slice(None)  # the original rows still in the decoder's batch

        tokens = torch.full((batch, steps), self.pad_token_id, dtype=torch.long, device=device)
        temps = torch.ones(batch, steps, device=device)
        logprobs = torch.zeros(batch, steps, device=device)
        entropy = torch.zeros(batch, steps, device=device)
        entropy_t = torch.zeros(batch, steps, device=device)
        records: dict[str, Tensor] = {}
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        flag = _FinishedFlag(device)
        prev_t = (
            controller.initial_temperature(batch, device)
            if controller is not None
            else torch.ones(batch, device=device)
        )
        # Step-level methods (one T per training step) need no per-token call: T is a number.
        step_t = None
        if isinstance(controller, StepTemperature) and not greedy:
            step_t = float(controller.step_temperature())
            if not (math.isfinite(step_t) and step_t > 0):
                raise InvalidTemperature(controller, step_t)
            temps.fill_(step_t)
        bad_t = torch.zeros(batch, dtype=torch.bool, device=device)  # rows given a bad T
        length = steps
        for t in range(steps):
            logits = head(hidden).float()
            logp1 = torch.log_softmax(logits, dim=-1)
            probs1 = logp1.exp()
            entropy[rows, t] = ent1 = -(probs1 * logp1).sum(-1)
            if greedy or controller is None:
                logp_t = logp1
                token = logits.argmax(-1) if greedy else exponential_race(probs1, generator)
            elif step_t is not None:  # one T for the whole rollout: a scalar, maybe 1
                logp_t, probs_t = logp1, probs1
                if step_t != 1.0:
                    logp_t = torch.log_softmax(logits / step_t, dim=-1)
                    probs_t = logp_t.exp()
                token = exponential_race(probs_t, generator)
            else:
                decision = controller.temperature(logits, hidden, prev_t, t)
                temp = decision.temperature
                bad_t[rows] |= ~(torch.isfinite(temp) & (temp > 0))
                for key, value in decision.records.items():
                    if key not in records:
                        records[key] = torch.zeros(batch, steps, dtype=value.dtype, device=device)
                    records[key][rows, t] = value
                logp_t = torch.log_softmax(logits / temp[:, None], dim=-1)
                probs_t = logp_t.exp()
                token = exponential_race(probs_t, generator)
                temps[rows, t] = temp
                prev_t = temp
            tokens[rows, t] = token
            logprobs[rows, t] = logp_t.gather(1, token[:, None]).squeeze(1)
            entropy_t[rows, t] = ent1 if logp_t is logp1 else -(probs_t * logp_t).sum(-1)
            finished |= ends(token)
            if t + 1 == steps:
                break
            if compact and (t + 1) % self.check_every == 0:
                going = (~finished).nonzero().squeeze(1)  # a host read: CPU only
                if len(going) == 0:
                    length = t + 1
                    break
                if len(going) <= self.compact_below * len(finished):
                    keep(going)
                    rows = going if isinstance(rows, slice) else rows[going]
                    token, prev_t, finished = token[going], prev_t[going], finished[going]
            elif not compact:
                if flag.done():
                    length = t + 1
                    break
                if (t + 1) % self.check_every == 0:
                    flag.post(finished)
            hidden = advance(token, t)

        if controller is not None and step_t is None and not greedy and bool(bad_t.any()):
            row = int(bad_t.nonzero()[0, 0])
            where = (~(torch.isfinite(temps[row]) & (temps[row] > 0))).nonzero()
            raise InvalidTemperature(controller, float(temps[row, int(where[0, 0])]))
        tokens = tokens[:, :length]
        is_eos = ends(tokens)
        # A position is part of the completion if no EOS came strictly before it.
        mask = (is_eos.cumsum(-1) - is_eos.long()) == 0
        maskf = mask.float()
        length = max(1, int(mask.sum(-1).max()))  # the one sync: trim all-padding columns
        return Rollout(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            tokens=tokens.masked_fill(~mask, self.pad_token_id)[:, :length],
            mask=maskf[:, :length],
            temperatures=temps[:, :length],
            logprobs=(logprobs[:, : mask.shape[1]] * maskf)[:, :length],
            entropy=(entropy[:, : mask.shape[1]] * maskf)[:, :length],
            entropy_at_T=(entropy_t[:, : mask.shape[1]] * maskf)[:, :length],
            finished=is_eos.any(-1),  # over the kept columns, which hold every EOS
            controller_data={k: v[:, :length] for k, v in records.items()},
        )
