"""Temperature-scaled log-probs and entropies against direct per-position computations."""

from __future__ import annotations

import math

import pytest
import torch

from tempo.ops.logprobs import candidate_logprobs, token_entropy, token_logprobs

B, L, V = 2, 3, 7


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, L, V, generator=g) * 3
    tokens = torch.randint(0, V, (B, L), generator=g)
    temps = 0.3 + 1.7 * torch.rand(B, L, generator=g)
    return logits, tokens, temps


def test_token_logprobs_per_token_temperature_matches_loop(batch):
    logits, tokens, temps = batch
    got = token_logprobs(logits, tokens, temps)
    assert got.shape == (B, L) and got.dtype == torch.float32
    for b in range(B):
        for t in range(L):
            want = torch.log_softmax(logits[b, t] / temps[b, t], dim=-1)[tokens[b, t]]
            assert got[b, t].item() == pytest.approx(want.item(), abs=1e-5)


def test_token_logprobs_scalar_temperature_and_default(batch):
    logits, tokens, _ = batch
    got = token_logprobs(logits, tokens, 0.7)
    want = torch.log_softmax(logits / 0.7, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(got, want)
    default = token_logprobs(logits, tokens)
    want1 = torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(default, want1)


def test_token_logprobs_bf16_logits_computed_in_float32(batch):
    logits, tokens, temps = batch
    low = logits.bfloat16()
    got = token_logprobs(low, tokens, temps)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, token_logprobs(low.float(), tokens, temps))


def test_token_logprobs_gradient_is_onehot_minus_probs_over_t(batch):
    logits, tokens, temps = batch
    z = logits.clone().requires_grad_(True)
    token_logprobs(z, tokens, temps).sum().backward()
    b, t = 1, 2
    p = torch.softmax(logits[b, t] / temps[b, t], dim=-1)
    onehot = torch.zeros(V)
    onehot[tokens[b, t]] = 1.0
    torch.testing.assert_close(z.grad[b, t], (onehot - p) / temps[b, t])


def test_token_logprobs_rejects_bad_input(batch):
    logits, tokens, temps = batch
    with pytest.raises(ValueError):
        token_logprobs(logits, tokens, 0.0)
    with pytest.raises(ValueError):
        token_logprobs(logits, tokens[:, :2], temps)
    with pytest.raises(ValueError):
        token_logprobs(logits, tokens, temps[:, :2])


def test_token_entropy_matches_direct_formula(batch):
    logits, _, temps = batch
    got = token_entropy(logits, temps)
    got1 = token_entropy(logits)
    for b in range(B):
        for t in range(L):
            for temp, out in ((temps[b, t].item(), got), (1.0, got1)):
                p = [math.exp(x / temp) for x in logits[b, t].tolist()]
                s = sum(p)
                want = -sum(q / s * math.log(q / s) for q in p)
                assert out[b, t].item() == pytest.approx(want, abs=1e-5)


def test_token_entropy_uniform_and_masked_vocab():
    uniform = torch.zeros(1, 1, V)
    assert token_entropy(uniform, 2.0).item() == pytest.approx(math.log(V), abs=1e-6)
    # Two allowed tokens with equal logits, the rest masked to -inf: entropy log 2, no NaN grads.
    z = torch.full((1, 1, V), float("-inf"))
    z[..., :2] = 0.5
    z.requires_grad_(True)
    h = token_entropy(z)
    assert h.item() == pytest.approx(math.log(2), abs=1e-6)
    h.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_candidate_logprobs_matches_token_logprobs_per_candidate(batch):
    logits, tokens, _ = batch
    cands = torch.tensor([0.5, 1.0, 1.7])
    got = candidate_logprobs(logits, tokens, cands)
    assert got.shape == (B, L, 3)
    for k, temp in enumerate(cands.tolist()):
        torch.testing.assert_close(got[..., k], token_logprobs(logits, tokens, temp))
    torch.testing.assert_close(candidate_logprobs(logits, tokens, [0.5, 1.0, 1.7]), got)
    with pytest.raises(ValueError):
        candidate_logprobs(logits, tokens, [1.0, 0.0])
