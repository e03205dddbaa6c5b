"""hidden_token_stats against an independent full-logits computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tempo.ops.chunked_logprobs import hidden_token_stats

B, L, D, V = 3, 7, 5, 11


def _inputs(seed: int = 0, bias: bool = True, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, L, D, generator=g).to(dtype).requires_grad_()
    head = nn.Linear(D, V, bias=bias).to(dtype)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, D, generator=g) * 2)
        if bias:
            head.bias.copy_(torch.randn(V, generator=g))
    tokens = torch.randint(0, V, (B, L), generator=g)
    temps = torch.rand(B, L, generator=g) * 1.5 + 0.3
    mask = torch.ones(B, L)
    mask[0, 5:] = 0  # ragged rows
    mask[2, 2:] = 0
    return hidden, head, tokens, temps, mask


def _reference(hidden, head, tokens, temps, mask, candidates=(0.5, 1.0, 1.7)):
    """Full [B, L, V] logits, written out with log_softmax (not tempo's code)."""
    z = head(hidden).float()
    logp_all = torch.log_softmax(z / temps.unsqueeze(-1), dim=-1)
    logp = logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) * mask
    p1 = torch.softmax(z, -1)
    ent = -(p1 * torch.log_softmax(z, -1)).sum(-1) * mask
    pt = logp_all.exp()
    ent_t = -(pt * logp_all).sum(-1) * mask
    tok = tokens.unsqueeze(-1)
    per_t = [torch.log_softmax(z / t, -1).gather(-1, tok).squeeze(-1) for t in candidates]
    cands = torch.stack(per_t, -1) * mask.unsqueeze(-1)
    return logp, ent.detach(), ent_t.detach(), cands.detach()


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("chunk", [1, 2, 4, 5, 16, 1000])
@pytest.mark.parametrize("bias", [True, False])
def test_values_and_gradients_equal_full_logits(chunk: int, bias: bool) -> None:
    hidden, head, tokens, temps, mask = _inputs(bias=bias)
    weights = torch.randn(B, L)  # an arbitrary upstream gradient
    ref, ent, ent_t, cands = _reference(hidden, head, tokens, temps, mask)
    params = [hidden, head.weight] + ([head.bias] if bias else [])
    ref_grads = _grads((ref * weights).sum(), params)

    out = hidden_token_stats(
        hidden,
        head,
        tokens,
        temps,
        mask=mask,
        chunk_tokens=chunk,
        entropy=True,
        entropy_at_T=True,
        candidates=[0.5, 1.0, 1.7],
    )
    torch.testing.assert_close(out.logprobs, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.entropy, ent, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.entropy_at_T, ent_t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.candidates, cands, rtol=1e-5, atol=1e-5)
    assert out.entropy.requires_grad is False and out.candidates.requires_grad is False
    for got, want in zip(_grads((out.logprobs * weights).sum(), params), ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk", [3, 64])
def test_module_head_path_equals_full_logits(chunk: int) -> None:
    """A head that is not a plain nn.Linear goes through per-chunk checkpointing."""
    hidden, linear, tokens, temps, mask = _inputs(seed=1)
    head = nn.Sequential(linear)
    ref, ent, _, cands = _reference(hidden, linear, tokens, temps, mask)
    weights = torch.randn(B, L)
    params = [hidden, linear.weight, linear.bias]
    ref_grads = _grads((ref * weights).sum(), params)
    out = hidden_token_stats(
        hidden,
        head,
        tokens,
        temps,
        mask=mask,
        chunk_tokens=chunk,
        entropy=True,
        candidates=(0.5, 1.0, 1.7),
    )
    torch.testing.assert_close(out.logprobs, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.entropy, ent, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.candidates, cands, rtol=1e-5, atol=1e-5)
    for got, want in zip(_grads((out.logprobs * weights).sum(), params), ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_tied_weight_gets_both_gradients() -> None:
    """A head tied to an embedding: the shared weight's gradient is the sum of both uses."""
    hidden, head, tokens, temps, mask = _inputs(seed=2, bias=False)
    emb = nn.Embedding(V, D)
    emb.weight = head.weight
    x = torch.randint(0, V, (B, L))

    def run(chunked: bool):
        h = hidden.detach() + emb(x)
        if chunked:
            logp = hidden_token_stats(h, head, tokens, temps, mask=mask, chunk_tokens=4).logprobs
        else:
            logp = _reference(h, head, tokens, temps, mask)[0]
        return torch.autograd.grad(logp.sum(), head.weight)[0]

    torch.testing.assert_close(run(True), run(False), rtol=1e-4, atol=1e-5)


def test_scalar_temperature_and_no_mask() -> None:
    hidden, head, tokens, _, _ = _inputs(seed=3)
    ones = torch.ones(B, L)
    ref = _reference(hidden, head, tokens, torch.full((B, L), 0.8), ones)[0]
    out = hidden_token_stats(hidden, head, tokens, 0.8, chunk_tokens=6).logprobs
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_bf16_inputs_give_float32_math() -> None:
    """bf16 hidden and head: the result matches full logits cast to float32 per position."""
    hidden, head, tokens, temps, mask = _inputs(seed=4, dtype=torch.bfloat16)
    ref = _reference(hidden, head, tokens, temps, mask)[0]
    out = hidden_token_stats(hidden, head, tokens, temps, mask=mask, chunk_tokens=4)
    assert out.logprobs.dtype == torch.float32
    torch.testing.assert_close(out.logprobs, ref, rtol=1e-5, atol=1e-5)
    grad = torch.autograd.grad(out.logprobs.sum(), hidden)[0]
    ref_grad = torch.autograd.grad(ref.sum(), hidden)[0]
    assert grad.dtype == torch.bfloat16
    torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=2e-2, atol=2e-2)


def test_masked_out_everything_gives_zeros() -> None:
    hidden, head, tokens, temps, _ = _inputs(seed=5)
    out = hidden_token_stats(
        hidden, head, tokens, temps, mask=torch.zeros(B, L), candidates=[1.0], entropy=True
    )
    assert torch.equal(out.logprobs, torch.zeros(B, L))
    assert out.candidates.shape == (B, L, 1) and not out.candidates.any()
    assert torch.equal(out.entropy, torch.zeros(B, L))


def test_only_one_chunk_of_logits_is_alive(monkeypatch) -> None:
    """The largest float32 tensor with a vocabulary dim the primitive creates is one chunk."""
    hidden, head, tokens, temps, mask = _inputs(seed=6)
    seen: list[tuple[int, ...]] = []
    linear = torch.nn.functional.linear

    def spy(x, w, b=None):
        out = linear(x, w, b)
        seen.append(tuple(out.shape))
        return out

    monkeypatch.setattr("tempo.ops.chunked_logprobs.F.linear", spy)
    out = hidden_token_stats(hidden, head, tokens, temps, mask=mask, chunk_tokens=4)
    out.logprobs.sum().backward()
    assert seen and max(s[0] for s in seen) == 4 and all(s[-1] == V for s in seen)
    # forward and backward each see every valid token once
    assert sum(s[0] for s in seen) == 2 * int(mask.sum())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_tokens": 0}, "chunk_tokens must be an int >= 1"),
        ({"candidates": [1.0, -0.5]}, "candidate temperatures must be > 0"),
        ({"candidates": []}, "candidate temperatures must be > 0"),
    ],
)
def test_bad_arguments(kwargs, message) -> None:
    hidden, head, tokens, temps, mask = _inputs()
    with pytest.raises(ValueError, match=message):
        hidden_token_stats(hidden, head, tokens, temps, mask=mask, **kwargs)


def test_bad_scalar_temperature() -> None:
    hidden, head, tokens, _, _ = _inputs()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        hidden_token_stats(hidden, head, tokens, 0.0)
