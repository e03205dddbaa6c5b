"""Per-token log-probs from hidden states, never holding more than one chunk of logits.

Every log-prob tempo computes from a forward pass (the policy update, the old-policy and
reference passes, TAMPO's candidate likelihoods, the head update's statistics) goes through
`hidden_token_stats`: given the last hidden states [b, L, d], the LM head, the tokens and the
per-token temperatures T[b, t], it works through the valid (unmasked) tokens in chunks of
`chunk_tokens`, so at most one [chunk, V] block of full-vocabulary logits is alive at a time
(chunk * V * 4 bytes per float32 copy: 256 tokens at V = 151,936 are 156 MB; a pass holds
two such buffers at its peak).

With gradient, the log-probs are an autograd function whose backward recomputes each chunk's
logits from the saved hidden states and the head's weight instead of keeping them: for a
plain `nn.Linear` head (every transformers causal LM, tied or not) the backward is written
out (d log p / d z = (onehot - softmax(z/T)) / T, then the two matmuls); any other head (e.g.
an FSDP-sharded one, whose weight is a DTensor gathered by the module's own hooks) is called
as a module per chunk under activation checkpointing, which recomputes it the same way.

Math is in float32 whatever the model's dtype (the logits are cast per chunk), as in
`tempo.ops.logprobs`, whose full-logits functions remain the reference these equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from tempo.ops.logprobs import token_entropy

#: Default tokens per chunk: measured on CPU and GPU in experiments/bench/README.md ("chunk").
DEFAULT_CHUNK_TOKENS = 256


@dataclass
class TokenStats:
    """What `hidden_token_stats` returns; padding positions (mask 0) hold 0 everywhere.

    logprobs: [b, L] float32 log softmax(z / T)[token], differentiable when the inputs are.
    entropy / entropy_at_T: [b, L] float32 entropy of softmax(z) / softmax(z / T), no grad.
    candidates: [b, L, K] float32 log softmax(z / T_k)[token] per candidate T_k, no grad.
    """

    logprobs: Tensor
    entropy: Tensor | None = None
    entropy_at_T: Tensor | None = None
    candidates: Tensor | None = None


def check_chunk_tokens(value: object, key: str = "chunk_tokens") -> int:
    """A positive int (bools excluded)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key} must be an int >= 1, got {value!r}")
    return value


@dataclass(frozen=True)
class _Wanted:
    """Which no-grad statistics a pass computes besides the log-probs."""

    entropy: bool = False
    entropy_at_t: bool = False
    temps: tuple[float, ...] | None = None

    @property
    def any(self) -> bool:
        return self.entropy or self.entropy_at_t or self.temps is not None


def _chunk_pass(
    z: Tensor,
    tokens: Tensor,
    inv_t: Tensor,
    wanted: _Wanted,
    sink: dict[str, list[Tensor]],
    inplace: bool = False,
) -> tuple[Tensor, Tensor]:
    """(log softmax(z / T)[token], logsumexp(z / T)) of one chunk of float32 logits [c, V];
    the wanted statistics of the chunk are appended to `sink` (no grad). `inplace` scales z
    itself (no autograd through it), saving one [c, V] buffer."""
    chosen = z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if wanted.any:
        with torch.no_grad():
            raw = z.detach()
            if wanted.entropy:
                sink["entropy"].append(token_entropy(raw))
            if wanted.temps is not None:
                lls = [chosen.detach() / t - torch.logsumexp(raw / t, -1) for t in wanted.temps]
                sink["candidates"].append(torch.stack(lls, -1))
    scaled = z.mul_(inv_t.unsqueeze(-1)) if inplace else z * inv_t.unsqueeze(-1)
    lse = torch.logsumexp(scaled, dim=-1)
    if wanted.entropy_at_t:
        with torch.no_grad():
            sink["entropy_at_T"].append(token_entropy(scaled.detach()))
    return chosen * inv_t - lse, lse


class _LinearHeadLogprob(torch.autograd.Function):
    """log softmax((h W^T + b) / T)[token] over chunks of rows, backward recomputed per chunk.

    Saves only the inputs and one float per token (the logsumexp); the backward rebuilds each
    chunk's softmax in one [c, V] buffer and turns it into the chunk's logit gradient in place.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, tokens, inv_t, chunk, wanted, sink):  # type: ignore[override]
        n = hidden.shape[0]
        out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            z = F.linear(hidden[s:e], weight, bias).float()
            out[s:e], lse[s:e] = _chunk_pass(z, tokens[s:e], inv_t[s:e], wanted, sink, inplace=True)
            del z
        ctx.save_for_backward(hidden, weight, bias, tokens, inv_t, lse)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        hidden, weight, bias, tokens, inv_t, lse = ctx.saved_tensors
        chunk, n = ctx.chunk, hidden.shape[0]
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        grad_w = grad_w if need_w else None
        grad_b = None
        if need_b and bias is not None:
            grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
        rows = torch.arange(min(chunk, n), device=hidden.device)
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            h, it = hidden[s:e], inv_t[s:e].unsqueeze(-1)
            scale = grad_out[s:e].float().unsqueeze(-1) * it  # g / T
            p = F.linear(h, weight, bias).float()
            p.mul_(it).sub_(lse[s:e].unsqueeze(-1)).exp_()  # softmax(z / T)
            grad_z = p.mul_(scale.neg())  # g * d log p[token] / dz = g / T * (onehot - p)
            grad_z[rows[: e - s], tokens[s:e]] += scale.squeeze(-1)
            if grad_h is not None:
                grad_h[s:e] = grad_z.to(weight.dtype) @ weight
            if grad_w is not None:
                grad_w.addmm_(grad_z.t(), h.float())
            if grad_b is not None:
                grad_b += grad_z.sum(0)
            del p, grad_z
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None, None, None, None


def _plain_linear(head: nn.Module) -> bool:
    """True for an nn.Linear whose weight is an ordinary tensor (not sharded or wrapped)."""
    if type(head) is not nn.Linear:
        return False
    tensors = [head.weight] + ([head.bias] if head.bias is not None else [])
    return all(type(t) in (nn.Parameter, Tensor) for t in tensors)


def _module_logprob(
    head: nn.Module,
    hidden: Tensor,
    tokens: Tensor,
    inv_t: Tensor,
    chunk: int,
    wanted: _Wanted,
    sink: dict[str, list[Tensor]],
) -> Tensor:
    """Any head module, per chunk; with grad, each chunk is recomputed in backward
    (activation checkpointing), and the statistics are taken on the first run only."""
    grad = torch.is_grad_enabled()
    parts = []
    for s in range(0, hidden.shape[0], chunk):
        e = s + chunk
        first = [True]

        def one(h: Tensor, tok: Tensor, it: Tensor, first: list[bool] = first) -> Tensor:
            logits = head(h).float()
            logp = _chunk_pass(logits, tok, it, wanted if first[0] else _Wanted(), sink)[0]
            first[0] = False
            return logp

        args = (hidden[s:e], tokens[s:e], inv_t[s:e])
        parts.append(checkpoint(one, *args, use_reentrant=False) if grad else one(*args))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def _flat_inverse_temperatures(
    temperatures: Tensor | float, shape: torch.Size, valid: Tensor | None, device: torch.device
) -> Tensor:
    """1 / T of the computed tokens, float32 [n]."""
    if isinstance(temperatures, Tensor) and temperatures.dim() > 0:
        if temperatures.shape != shape:
            raise ValueError(
                f"temperatures shape {tuple(temperatures.shape)} must equal tokens shape "
                f"{tuple(shape)}"
            )
        t = temperatures.to(device=device, dtype=torch.float32)
        return (t[valid] if valid is not None else t.reshape(-1)).reciprocal()
    value = float(temperatures)
    if not value > 0:
        raise ValueError(f"temperature must be > 0, got {value}")
    count = int(valid.sum()) if valid is not None else shape.numel()
    return torch.full((count,), 1.0 / value, dtype=torch.float32, device=device)


def _candidate_tuple(candidates: Sequence[float] | Tensor | None) -> tuple[float, ...] | None:
    if candidates is None:
        return None
    temps = torch.as_tensor(candidates, dtype=torch.float64).reshape(-1).tolist()
    if not temps or not all(t > 0 for t in temps):
        raise ValueError(f"candidate temperatures must be > 0, got {temps}")
    return tuple(temps)


def hidden_token_stats(
    hidden: Tensor,
    head: nn.Module,
    tokens: Tensor,
    temperatures: Tensor | float = 1.0,
    *,
    mask: Tensor | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    entropy: bool = False,
    entropy_at_T: bool = False,
    candidates: Sequence[float] | Tensor | None = None,
) -> TokenStats:
    """Log-probs (and on request entropies and candidate log-likelihoods) of `tokens`.

    hidden [b, L, d] are the states that preceded each token, `head` maps them to logits,
    tokens [b, L], temperatures [b, L] or a scalar (> 0), mask [b, L] (1 = a real token;
    None = all). Only masked-in tokens are computed; the others hold 0 in every output.
    The statistics (entropy, candidates) come from the same chunks as the log-probs, without
    gradient; each costs one more [chunk, V] temporary while its chunk is alive.
    """
    chunk = check_chunk_tokens(chunk_tokens)
    if tokens.shape != hidden.shape[:-1]:
        raise ValueError(
            f"tokens shape {tuple(tokens.shape)} must equal hidden shape without the hidden "
            f"dim {tuple(hidden.shape[:-1])}"
        )
    shape, device = tokens.shape, hidden.device
    valid = None if mask is None else (mask.to(device) > 0)
    flat_h = hidden[valid] if valid is not None else hidden.reshape(-1, hidden.shape[-1])
    flat_tok = tokens.to(device)
    flat_tok = (flat_tok[valid] if valid is not None else flat_tok.reshape(-1)).long()
    inv_t = _flat_inverse_temperatures(temperatures, shape, valid, device)
    wanted = _Wanted(entropy, entropy_at_T, _candidate_tuple(candidates))
    sink: dict[str, list[Tensor]] = {"entropy": [], "entropy_at_T": [], "candidates": []}

    if _plain_linear(head):
        args = (flat_h, head.weight, head.bias, flat_tok, inv_t, chunk, wanted, sink)
        logp = _LinearHeadLogprob.apply(*args)
    else:
        logp = _module_logprob(head, flat_h, flat_tok, inv_t, chunk, wanted, sink)

    def spread(values: Tensor) -> Tensor:
        if valid is None:
            return values.reshape(*shape, *values.shape[1:])
        full = values.new_zeros(*shape, *values.shape[1:])
        return full.index_put((valid,), values)

    def collected(name: str, on: bool, width: int | None = None) -> Tensor | None:
        if not on:
            return None
        parts = sink[name]
        if not parts:
            empty = (0,) if width is None else (0, width)
            return spread(torch.zeros(empty, dtype=torch.float32, device=device))
        return spread(torch.cat(parts))

    width = None if wanted.temps is None else len(wanted.temps)
    return TokenStats(
        logprobs=spread(logp),
        entropy=collected("entropy", entropy),
        entropy_at_T=collected("entropy_at_T", entropy_at_T),
        candidates=collected("candidates", wanted.temps is not None, width),
    )
