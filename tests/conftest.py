"""Test-wide settings: no network, no W&B, a private warm-start cache, a tiny random model."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TEMPO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tempo-cache"))


@pytest.fixture(scope="session")
def char_tokenizer():
    from tempo.models.tokenizer import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(char_tokenizer):
    """A randomly initialised 2-layer model (eval mode), fast enough for per-test use."""
    from transformers import AutoModelForCausalLM

    from tempo.models.tiny import tiny_config

    torch.manual_seed(0)
    config = tiny_config(
        char_tokenizer,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=64,
    )
    return AutoModelForCausalLM.from_config(config).eval()
