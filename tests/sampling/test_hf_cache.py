"""The HF decoding path (`rollout.decoder=hf`) hands the KV cache over without deprecated
keywords, and still to models whose forward only knows the old name."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM

from tempo.models.tiny import tiny_config
from tempo.sampling.sampler import Sampler, _cache_keyword
from tempo.temperature.fixed import FixedTemperature

PROMPTS = ["12+3=", "1+2*3-4=", "7="]


def _model(tokenizer, architecture: str):
    torch.manual_seed(0)
    config = tiny_config(
        tokenizer,
        architecture=architecture,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=64,
    )
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
def test_hf_path_emits_no_deprecation_warning(char_tokenizer, architecture, static, caplog):
    model = _model(char_tokenizer, architecture)
    enc = char_tokenizer(PROMPTS, padding=True, return_tensors="pt", add_special_tokens=False)
    sampler = Sampler(
        8,
        char_tokenizer.eos_token_id,
        char_tokenizer.pad_token_id,
        static_cache=static,
        decoder="hf",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # `past_key_values` ... removed in 5.40
        warnings.simplefilter("error", DeprecationWarning)
        with caplog.at_level(logging.WARNING, logger="transformers"):
            rollout = sampler.rollout(
                model,
                enc["input_ids"],
                enc["attention_mask"],
                FixedTemperature(1.0),
                generator=torch.Generator().manual_seed(0),
            )
    assert rollout.tokens.shape == (len(PROMPTS), 8)
    assert not [r.message for r in caplog.records if "deprecated" in r.getMessage()]


def test_cache_keyword_follows_the_forward_signature():
    class NewName(torch.nn.Module):
        def forward(self, input_ids, cache=None, **kwargs):
            return input_ids

    class OldName(torch.nn.Module):
        def forward(self, input_ids, past_key_values=None, **kwargs):
            return input_ids

    assert _cache_keyword(NewName()) == "cache"
    assert _cache_keyword(OldName()) == "past_key_values"
