"""Per-token log-probabilities and entropies of temperature-scaled policies.

The behaviour policy that emitted token o_t is softmax(z_t / T_t) with a per-token stored
temperature T[b, t]; every log-prob used by the GRPO loss (old, current, reference) must be
recomputed with that same T[b, t], so all helpers here take the temperature explicitly.
Math is done in float32 even for bf16 logits, since log-ratios of nearly equal policies are
small differences of large numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _scaled_logits(logits: Tensor, temperatures: Tensor | float) -> Tensor:
    """Return float32 z / T, with T of shape logits.shape[:-1] (or a scalar) broadcast over V."""
    z = logits.float()
    if isinstance(temperatures, Tensor):
        if temperatures.dim() > 0 and temperatures.shape != logits.shape[:-1]:
            raise ValueError(
                f"temperatures shape {tuple(temperatures.shape)} must match logits shape "
                f"without the vocab dim {tuple(logits.shape[:-1])}"
            )
        t = temperatures.to(device=z.device, dtype=torch.float32)
        return z / t.unsqueeze(-1) if t.dim() > 0 else z / t
    if temperatures <= 0:
        raise ValueError(f"temperature must be > 0, got {temperatures}")
    return z / float(temperatures)


def _check_tokens(logits: Tensor, tokens: Tensor) -> None:
    """Tokens index the vocab dim, so their shape must be the logits' shape minus V."""
    if tokens.shape != logits.shape[:-1]:
        raise ValueError(
            f"tokens shape {tuple(tokens.shape)} must equal logits shape without the vocab dim "
            f"{tuple(logits.shape[:-1])}"
        )


def token_logprobs(logits: Tensor, tokens: Tensor, temperatures: Tensor | float = 1.0) -> Tensor:
    """log softmax(z / T)[token] per position, as z_o / T - logsumexp(z / T).

    Shapes: logits [B, L, V], tokens [B, L] (long), temperatures [B, L] or a scalar; returns a
    float32 [B, L] tensor. Temperatures must be > 0 at every position, padding included (store
    e.g. 1.0 there), otherwise padded positions become inf/NaN; scalars are checked, tensors are
    not (that would force a device sync).
    """
    _check_tokens(logits, tokens)
    scaled = _scaled_logits(logits, temperatures)
    chosen = scaled.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(scaled, dim=-1)


def token_entropy(logits: Tensor, temperatures: Tensor | float | None = None) -> Tensor:
    """Entropy (nats) of softmax(z / T) per position; T = 1 when None. Returns float32 [B, L].

    Positions with -inf logits (masked vocabulary) contribute 0 rather than NaN.
    """
    scaled = _scaled_logits(logits, 1.0 if temperatures is None else temperatures)
    logp = torch.log_softmax(scaled, dim=-1)
    # 0 * log 0 := 0; clamping (not where) keeps both forward and backward free of NaN.
    safe_logp = logp.clamp(min=torch.finfo(logp.dtype).min)
    return -(logp.exp() * safe_logp).sum(dim=-1)


def candidate_logprobs(
    logits: Tensor, tokens: Tensor, candidates: Tensor | Sequence[float]
) -> Tensor:
    """log softmax(z / T_k)[token] for each candidate temperature T_k; returns float32 [B, L, K].

    Loops over the K candidates so peak memory stays O(B * L * V) rather than O(B * L * V * K).
    """
    _check_tokens(logits, tokens)
    temps = torch.as_tensor(candidates, dtype=torch.float32).reshape(-1)
    if temps.numel() == 0:
        raise ValueError("candidates must contain at least one temperature")
    if temps.device.type == "cpu" and bool((temps <= 0).any()):
        raise ValueError(f"candidate temperatures must be > 0, got {temps.tolist()}")
    temps = temps.to(logits.device)
    z = logits.float()
    chosen = z.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    out = []
    for k in range(temps.numel()):
        t = temps[k]
        out.append(chosen / t - torch.logsumexp(z / t, dim=-1))
    return torch.stack(out, dim=-1)
