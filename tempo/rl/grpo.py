"""GRPO math: group-normalised advantages, clipped surrogate loss, k3 KL and loss aggregation.

Variants (see METHODS.md): advantages scaled by the group std (GRPO) or not (Dr.GRPO); loss
aggregated as sequence-mean-token-mean ("grpo"), token-mean over the batch ("dapo") or
sequence-sum over a fixed max length ("dr_grpo"). Aggregation denominators can be given for
the whole batch so that micro-batch losses summed under gradient accumulation equal the
full-batch loss exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from tempo.config_error import ConfigError
from tempo.ops.chunked_logprobs import DEFAULT_CHUNK_TOKENS
from tempo.rl.lr_schedule import check_schedule

AGGREGATION_MODES = ("grpo", "dapo", "dr_grpo")
_MODES_TEXT = ", ".join(AGGREGATION_MODES)


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    """View flat rewards [B] as [B / G, G] in floating point; B must be divisible by G."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(rewards.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    n = rewards.shape[0]
    if n % group_size != 0:
        raise ValueError(f"batch size {n} is not divisible by group_size {group_size}")
    r = rewards if rewards.is_floating_point() else rewards.float()
    return r.reshape(n // group_size, group_size)


def zero_std_groups(rewards: Tensor, group_size: int) -> Tensor:
    """Bool [B / G]: True for groups whose rewards are all identical (they carry no signal)."""
    g = _grouped(rewards, group_size)
    return g.amax(dim=1) == g.amin(dim=1)


def zero_std_fraction(rewards: Tensor, group_size: int) -> Tensor:
    """Fraction (0-d float tensor) of groups with zero reward spread, for logging."""
    return zero_std_groups(rewards, group_size).float().mean()


def group_advantages(
    rewards: Tensor,
    group_size: int,
    scale_by_std: bool = True,
    eps: float = 1e-6,
    unbiased_std: bool = True,
) -> Tensor:
    """A_i = (r_i - mean_group(r)) / (std_group(r) + eps), or without the std when not scaling.

    Rewards are consecutive groups of `group_size` samples of the same prompt. Groups with zero
    spread get exactly 0 advantage (not rounding noise amplified by 1 / eps).
    """
    g = _grouped(rewards, group_size)
    centred = g - g.mean(dim=1, keepdim=True)
    if scale_by_std:
        if group_size > 1:
            std = g.std(dim=1, keepdim=True, correction=1 if unbiased_std else 0)
        else:
            std = torch.zeros_like(centred)
        centred = centred / (std + eps)
    flat = g.amax(dim=1, keepdim=True) == g.amin(dim=1, keepdim=True)
    return torch.where(flat, torch.zeros_like(centred), centred).reshape(-1)


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(pi || ref): exp(d) - d - 1 with d = ref_logp - logp (>= 0)."""
    d = ref_logp - logp
    return torch.expm1(d) - d


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x over True mask entries; 0 for an empty mask."""
    return torch.where(mask, x, 0.0).sum() / mask.sum().clamp(min=1)


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    mode: str,
    *,
    total_sequences: int | None = None,
    total_tokens: int | None = None,
    max_length: int | None = None,
) -> Tensor:
    """Reduce a [B, L] per-token loss to a scalar according to `mode`.

    "grpo": sum over sequences of the masked token mean, / total_sequences (default B);
    "dapo": masked token sum / total_tokens (default: valid tokens in this batch);
    "dr_grpo": masked token sum / (total_sequences * max_length).
    Passing full-batch totals makes micro-batch losses sum to the full-batch loss. Masked
    positions are excluded with `where`, so non-finite values there do not leak into the loss.
    """
    if mode not in AGGREGATION_MODES:
        raise ValueError(f"unknown aggregation mode {mode!r}; allowed: {_MODES_TEXT}")
    if per_token.dim() != 2 or per_token.shape != mask.shape:
        raise ValueError(
            f"per_token and mask must both be [B, L]; got {tuple(per_token.shape)} and "
            f"{tuple(mask.shape)}"
        )
    mask = mask.bool()
    masked = torch.where(mask, per_token, torch.zeros_like(per_token))
    n_seq = per_token.shape[0] if total_sequences is None else total_sequences
    if n_seq < 1 and mode != "dapo":
        raise ValueError(f"total_sequences must be >= 1, got {n_seq}")

    if mode == "grpo":
        seq_len = mask.sum(dim=1).clamp(min=1)
        return (masked.sum(dim=1) / seq_len).sum() / n_seq
    if mode == "dapo":
        if total_tokens is None:
            return masked.sum() / mask.sum().clamp(min=1)
        if total_tokens < 1:
            raise ValueError(f"total_tokens must be >= 1, got {total_tokens}")
        return masked.sum() / total_tokens
    if max_length is None or max_length < 1:
        raise ValueError(f"aggregation 'dr_grpo' needs max_length >= 1, got {max_length}")
    return masked.sum() / (n_seq * max_length)


def truncated_is_weights(
    trainer_logp: Tensor, sampler_logp: Tensor, mask: Tensor, cap: float
) -> Tensor:
    """Truncated importance weights min(exp(trainer_logp - sampler_logp), cap) per token [B, L].

    They correct the policy gradient for the gap between the policy the trainer computes
    (pi_old) and the one that sampled the tokens (the rollout engine's own numerics, e.g. vLLM
    or a KV-cached bf16 pass). Constants (no gradient); 1 at padded positions.
    """
    if not cap >= 1.0:
        raise ValueError(f"the importance-weight cap must be >= 1, got {cap}")
    log_w = torch.where(mask.bool(), trainer_logp.detach() - sampler_logp.detach(), 0.0)
    return torch.exp(log_w).clamp(max=cap)


class LogpMismatch:
    """|trainer - sampler| log-prob gaps summed over tokens, their max, and the token count.

    Accumulated on the tensors' device; the float properties read them (one sync per step,
    not per micro-batch).
    """

    def __init__(self) -> None:
        self._sum: Tensor | None = None
        self._max: Tensor | None = None
        self._count: Tensor | None = None

    def add(self, trainer_logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> None:
        """Account one micro-batch's completion tokens ([B, L] each)."""
        mask = mask.bool()
        gap = torch.where(mask, (trainer_logp.detach() - sampler_logp.detach()).abs(), 0.0)
        parts = (gap.sum(), gap.max() if gap.numel() else gap.new_zeros(()), mask.sum())
        if self._sum is None:
            self._sum, self._max, self._count = parts
        else:
            self._sum = self._sum + parts[0]
            self._max = torch.maximum(self._max, parts[1])
            self._count = self._count + parts[2]

    @property
    def abs_sum(self) -> float:
        return 0.0 if self._sum is None else float(self._sum)

    @property
    def abs_max(self) -> float:
        return 0.0 if self._max is None else float(self._max)

    @property
    def tokens(self) -> float:
        return 0.0 if self._count is None else float(self._count)


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    aggregation: str = "grpo",
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    total_sequences: int | None = None,
    total_tokens: int | None = None,
    max_length: int | None = None,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped-surrogate GRPO loss with optional k3 KL penalty; returns (loss, stats).

    Per token: -w * min(rho * A, clip(rho, 1 - clip_low, 1 + clip_high) * A) + beta * k3, with
    rho = exp(logp - old_logp) and w the optional (truncated) importance weights `is_weights`
    [B, L] of the sampler's behaviour policy (1 without them; the KL term is not weighted).
    `advantages` is [B] (broadcast over tokens) or [B, L]. old_logp, ref_logp and is_weights
    are treated as constants; padded positions may hold any value (even inf / NaN) without
    affecting the loss or its gradient. Stats are detached 0-d tensors, masked token means over
    this micro-batch: clip_frac (+ its _low / _high parts), kl, ratio_mean, and pg_loss (the
    aggregated surrogate without the KL term).
    """
    if not (0.0 <= clip_low < 1.0) or clip_high < 0.0:
        raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {clip_low}, {clip_high}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (the KL penalty would be silently dropped)")
    if logp.shape != old_logp.shape or logp.shape != mask.shape:
        raise ValueError(
            f"logp, old_logp and mask must share a shape; got {tuple(logp.shape)}, "
            f"{tuple(old_logp.shape)}, {tuple(mask.shape)}"
        )
    adv = advantages.to(logp.dtype)
    if adv.dim() == 1:
        adv = adv.unsqueeze(-1)
    mask = mask.bool()

    # Zero the log-ratio at padding so junk there (e.g. -inf old log-probs) cannot produce
    # inf * 0 = NaN in the backward pass; `where` passes no gradient to masked entries.
    log_ratio = torch.where(mask, logp - old_logp.detach(), 0.0)
    ratio = torch.exp(log_ratio)
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * adv
    pg = -torch.minimum(unclipped, clipped)
    if is_weights is not None:
        if is_weights.shape != logp.shape:
            raise ValueError(
                f"is_weights must be [B, L] like logp; got {tuple(is_weights.shape)} and "
                f"{tuple(logp.shape)}"
            )
        pg = pg * torch.where(mask, is_weights.detach().to(pg.dtype), 1.0)
    totals = dict(total_sequences=total_sequences, total_tokens=total_tokens, max_length=max_length)
    pg_loss = aggregate(pg, mask, aggregation, **totals)

    kl = None
    if ref_logp is not None:
        kl = kl_k3(torch.where(mask, logp, 0.0), torch.where(mask, ref_logp.detach(), 0.0))
    loss = pg_loss
    if kl is not None and beta > 0:
        loss = aggregate(pg + beta * kl, mask, aggregation, **totals)

    with torch.no_grad():
        hit_high = (ratio > 1.0 + clip_high) & (adv > 0)
        hit_low = (ratio < 1.0 - clip_low) & (adv < 0)
        stats = {
            "clip_frac": _masked_mean((hit_high | hit_low).float(), mask),
            "clip_frac_high": _masked_mean(hit_high.float(), mask),
            "clip_frac_low": _masked_mean(hit_low.float(), mask),
            "kl": _masked_mean(kl, mask) if kl is not None else logp.new_zeros(()),
            "ratio_mean": _masked_mean(ratio, mask),
            "pg_loss": pg_loss.detach(),
        }
    return loss, stats


@dataclass
class GRPOConfig:
    """Hyperparameters of the GRPO update; validated on construction.

    mu is the number of optimisation passes over each rollout batch (mu = 1 is on-policy, where
    rho = 1 and clipping is inactive). max_grad_norm <= 0 is rejected; use a large value to
    effectively disable clipping.
    """

    group_size: int = 8
    scale_by_std: bool = True
    eps: float = 1e-6
    unbiased_std: bool = True
    clip_low: float = 0.2
    clip_high: float = 0.2
    aggregation: str = "grpo"
    beta: float = 0.0
    mu: int = 1
    lr: float = 1e-6
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    micro_batch_size: int = 8
    micro_batch_tokens: int | None = None  # padded-token budget per micro-batch (None: rows only)
    logprob_chunk_tokens: int = DEFAULT_CHUNK_TOKENS  # tokens per chunk of full-vocab logits
    lr_schedule: str = "constant"  # constant | linear | cosine (after the warm-up)
    warmup_steps: int = 0  # RL steps of linear warm-up from lr / warmup_steps to lr
    min_lr_ratio: float = 0.0  # linear/cosine end at lr * min_lr_ratio
    tis_cap: float | None = None  # truncated importance sampling vs the sampler; None = off

    def __post_init__(self) -> None:
        checks: list[tuple[str, Callable[[], bool], str]] = [
            ("group_size", lambda: _is_int(self.group_size) and self.group_size >= 2, "int >= 2"),
            ("scale_by_std", lambda: isinstance(self.scale_by_std, bool), "true or false"),
            ("unbiased_std", lambda: isinstance(self.unbiased_std, bool), "true or false"),
            ("eps", lambda: 0 <= self.eps < float("inf"), "a finite number >= 0"),
            ("clip_low", lambda: 0 < self.clip_low < 1, "0 < clip_low < 1"),
            ("clip_high", lambda: self.clip_high > 0, "> 0"),
            ("aggregation", lambda: self.aggregation in AGGREGATION_MODES, _MODES_TEXT),
            ("beta", lambda: self.beta >= 0, ">= 0"),
            ("mu", lambda: _is_int(self.mu) and self.mu >= 1, "int >= 1"),
            ("lr", lambda: self.lr > 0, "> 0"),
            ("weight_decay", lambda: self.weight_decay >= 0, ">= 0"),
            ("max_grad_norm", lambda: self.max_grad_norm > 0, "> 0"),
            (
                "micro_batch_size",
                lambda: _is_int(self.micro_batch_size) and self.micro_batch_size >= 1,
                "int >= 1",
            ),
            (
                "micro_batch_tokens",
                lambda: (
                    self.micro_batch_tokens is None
                    or (_is_int(self.micro_batch_tokens) and self.micro_batch_tokens >= 1)
                ),
                "null (rows only) or an int >= 1 (padded tokens per micro-batch)",
            ),
            (
                "logprob_chunk_tokens",
                lambda: _is_int(self.logprob_chunk_tokens) and self.logprob_chunk_tokens >= 1,
                "int >= 1 (tokens per chunk of full-vocabulary logits)",
            ),
            (
                "tis_cap",
                lambda: (
                    self.tis_cap is None
                    or (not isinstance(self.tis_cap, bool) and 1.0 <= self.tis_cap < math.inf)
                ),
                "null (off) or a finite number >= 1 (the largest importance weight)",
            ),
        ]
        for key, ok, allowed in checks:
            try:
                valid = bool(ok())
            except TypeError:  # e.g. None or a string where a number is expected
                valid = False
            if not valid:
                raise ConfigError(key, getattr(self, key), allowed)
        check_schedule(self.lr_schedule, self.warmup_steps, self.min_lr_ratio)


def _is_int(x: object) -> bool:
    """True for real integers (bools are ints in Python but never a valid count here)."""
    return isinstance(x, int) and not isinstance(x, bool)
