import pytest
from transformers import AutoModelForCausalLM

from tempo.config_error import ConfigError
from tempo.models.tiny import tiny_config


def test_default_tiny_model_has_about_one_million_parameters(char_tokenizer):
    config = tiny_config(char_tokenizer)
    model = AutoModelForCausalLM.from_config(config)
    n = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < n < 1.5e6
    assert config.vocab_size % 64 == 0 and config.vocab_size >= len(char_tokenizer)
    assert config.eos_token_id == char_tokenizer.eos_token_id


def test_llama_architecture(char_tokenizer):
    assert tiny_config(char_tokenizer, architecture="llama").model_type == "llama"


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"architecture": "gpt9"}, "architecture"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"num_heads": 3}, "num_heads"),
        ({"num_layers": 1.5}, "num_layers"),
    ],
)
def test_bad_sizes_name_the_key(char_tokenizer, kwargs, key):
    with pytest.raises(ConfigError) as err:
        tiny_config(char_tokenizer, **kwargs)
    assert err.value.key == key
