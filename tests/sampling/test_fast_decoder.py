import math

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

from tempo.config_error import ConfigError
from tempo.models.policy import forward_hidden
from tempo.sampling.fast_decoder import FastDecoder, supports
from tempo.sampling.sampler import Sampler, _FinishedFlag, exponential_race
from tempo.temperature.fixed import FixedTemperature

SIZES = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    pad_token_id=0,
    eos_token_id=1,
)


GPT2 = dict(
    vocab_size=64, n_embd=32, n_layer=1, n_head=2, n_positions=64, bos_token_id=1, eos_token_id=1
)


def _model(config) -> torch.nn.Module:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # random biases and norm weights, so folding them in is tested
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.normal_(0.5 if "norm" in name else 0.0, 0.3)
    return model


CONFIGS = {
    "qwen2": lambda: Qwen2Config(**SIZES),
    "llama": lambda: LlamaConfig(**SIZES, attention_bias=True, mlp_bias=True),
    "llama-rope-scaled": lambda: LlamaConfig(
        **SIZES, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}
    ),
    "mistral": lambda: MistralConfig(**SIZES, sliding_window=None),
    "qwen3": lambda: Qwen3Config(**SIZES, head_dim=16),
}


def _padded_batch():
    torch.manual_seed(1)
    ids = torch.randint(2, 64, (4, 7))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    mask[2, :1] = 0
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_each_step_matches_the_models_own_forward(arch, fuse):
    model = _model(CONFIGS[arch]())
    assert supports(model) is None
    ids, mask = _padded_batch()
    new = torch.randint(2, 64, (4, 9))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    decoder = FastDecoder(model, ids, mask, max_new_tokens=9, fuse=fuse)
    states = [decoder.first_hidden]
    for t in range(8):
        states.append(decoder.step(new[:, t], t))
    ours = torch.stack(states, dim=1)
    full_ids = torch.cat([ids, new], dim=1)
    full_mask = torch.cat([mask, torch.ones_like(new)], dim=1)
    with torch.no_grad():
        reference = forward_hidden(model, full_ids, full_mask)[:, ids.shape[1] - 1 : -1]
    torch.testing.assert_close(ours, reference, atol=2e-5, rtol=1e-4)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights left untouched


def test_unsupported_models_are_named_and_fall_back():
    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(**GPT2)).eval()
    assert "gpt2" in supports(gpt2)
    sliding = _model(
        Qwen2Config(**SIZES, use_sliding_window=True, sliding_window=4, max_window_layers=0)
    )
    assert "sliding" in supports(sliding)
    with pytest.raises(ConfigError, match="decoder"):
        Sampler(4, 1, 0, decoder="fast").rollout(gpt2, *_padded_batch(), FixedTemperature(1.0))
    with pytest.raises(ConfigError, match="one of auto, fast, hf"):
        Sampler(4, 1, 0, decoder="vllm")


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_fast_and_general_paths_sample_the_same_tokens(arch):
    model = _model(CONFIGS[arch]())
    ids, mask = _padded_batch()
    runs = {}
    for decoder in ("fast", "hf"):
        sampler = Sampler(12, eos_token_id=1, pad_token_id=0, decoder=decoder)
        gen = torch.Generator().manual_seed(5)
        runs[decoder] = sampler.rollout(model, ids, mask, FixedTemperature(0.8), generator=gen)
    fast, hf = runs["fast"], runs["hf"]
    assert torch.equal(fast.tokens, hf.tokens)
    torch.testing.assert_close(fast.logprobs, hf.logprobs, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.entropy, hf.entropy, atol=1e-4, rtol=0)


def test_gpt2_runs_through_the_general_path():
    model = AutoModelForCausalLM.from_config(GPT2Config(**GPT2)).eval()
    ids, mask = _padded_batch()
    r = Sampler(6, eos_token_id=1, pad_token_id=0).rollout(model, ids, mask, None, greedy=True)
    out = model.generate(
        ids, attention_mask=mask, do_sample=False, max_new_tokens=6, pad_token_id=0, eos_token_id=1
    )[:, ids.shape[1] :]
    for row in range(4):
        n = int(r.lengths[row])
        assert r.tokens[row, :n].tolist() == out[row, :n].tolist()


def test_exponential_race_draws_each_index_with_its_probability():
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0])
    n = 200_000
    draws = exponential_race(probs.expand(n, -1).contiguous(), torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=5).double() / n
    assert freq[4] == 0  # an impossible token is never drawn
    for p, f in zip(probs.tolist(), freq.tolist(), strict=True):
        sigma = math.sqrt(p * (1 - p) / n)
        assert abs(f - p) <= 5 * sigma + 1e-12


def test_unnormalised_weights_are_sampled_proportionally():
    weights = torch.tensor([[3.0, 1.0]])
    n = 100_000
    draws = exponential_race(weights.expand(n, -1).contiguous(), torch.Generator().manual_seed(1))
    assert abs(float(draws.double().mean()) - 0.25) < 5 * math.sqrt(0.25 * 0.75 / n)


def test_finished_flag_reports_only_after_it_was_posted():
    flag = _FinishedFlag(torch.device("cpu"))
    assert not flag.done()  # nothing posted yet
    flag.post(torch.tensor([True, False]))
    assert not flag.done()
    flag.post(torch.tensor([True, True]))  # posted, read and cleared: a fresh post counts
    assert flag.done()
    assert not flag.done()


def test_sampling_under_bf16_autocast_stays_close_to_the_general_path():
    model = _model(CONFIGS["qwen2"]())
    ids, mask = _padded_batch()
    runs = {}
    for decoder in ("fast", "hf"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            runs[decoder] = Sampler(8, 1, 0, decoder=decoder).rollout(
                model, ids, mask, None, greedy=True
            )
    assert runs["fast"].logprobs.dtype == torch.float32
    agree = (runs["fast"].tokens == runs["hf"].tokens).float().mean()
    assert agree >= 0.9  # bf16 rounding may flip a near-tie, not the whole sequence
    assert torch.isfinite(runs["fast"].entropy).all()


def test_finished_rows_leave_the_batch_without_changing_any_row(monkeypatch):
    """Greedy decoding with and without compaction: identical completions, and the decoder's
    batch really shrank. EOS is favoured from the hidden state (not the row index), so it
    follows each row wherever compaction moves it."""
    model = _model(CONFIGS["qwen2"]())
    torch.manual_seed(3)
    ids = torch.randint(2, 64, (16, 5))
    mask = torch.ones_like(ids)

    def favour_eos(module, inputs, output):
        output = output.clone()
        output[..., 1] += 100.0 * (inputs[0][..., 1] > 0.5)
        return output

    sizes = []
    keep = FastDecoder.keep

    def spy(self, rows):
        sizes.append(len(rows))
        keep(self, rows)

    monkeypatch.setattr(FastDecoder, "keep", spy)
    hook = model.get_output_embeddings().register_forward_hook(favour_eos)
    try:
        runs = [
            Sampler(24, 1, 0, check_every=2, compact_below=c).rollout(
                model, ids, mask, None, greedy=True
            )
            for c in (0.0, 1.0)
        ]
    finally:
        hook.remove()
    plain, compacted = runs
    lengths = plain.lengths
    assert len(set(lengths.tolist())) >= 5  # rows end at many different steps
    assert sizes and sizes == sorted(sizes, reverse=True) and sizes[-1] < 16
    assert torch.equal(plain.tokens, compacted.tokens)
    assert torch.equal(plain.mask, compacted.mask)
    assert torch.equal(plain.finished, compacted.finished)
    torch.testing.assert_close(plain.logprobs, compacted.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(plain.entropy, compacted.entropy, atol=1e-5, rtol=0)
