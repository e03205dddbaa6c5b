"""`model=hub`: any causal LM by local path (offline), with one-line errors for bad paths."""

from __future__ import annotations

import time

import pytest
import torch

from tempo.config_error import ConfigError
from tempo.data.arithmetic import ArithmeticTask
from tempo.models.specs import PretrainedModel


@pytest.fixture
def saved_model(tmp_path, tiny_model, char_tokenizer):
    tiny_model.save_pretrained(tmp_path / "model")
    char_tokenizer.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_local_directory_loads_the_same_weights_and_a_left_padding_tokenizer(
    saved_model, tiny_model
):
    model, tokenizer = PretrainedModel(str(saved_model), dtype="float32").build(ArithmeticTask())
    for (name, a), (_, b) in zip(
        model.state_dict().items(), tiny_model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None
    ids = tokenizer(["1+2=", "12+30="], padding=True, add_special_tokens=False)["input_ids"]
    assert ids[0][0] == tokenizer.pad_token_id  # shorter prompt padded on the left


def test_missing_directory_fails_before_loading(tmp_path):
    with pytest.raises(ConfigError) as err:
        PretrainedModel(str(tmp_path / "nope"))
    assert err.value.key == "name_or_path" and "config.json" in str(err.value)


def test_unknown_hub_id_offline_fails_fast_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        PretrainedModel("tempo-tests/no-such-model").build(ArithmeticTask())
    assert time.monotonic() - started < 10
    assert err.value.key == "model.name_or_path" and "\n" not in str(err.value)


@pytest.mark.parametrize("dtype", ["float8", "half"])
def test_bad_dtype(dtype, saved_model):
    with pytest.raises(ConfigError, match="dtype"):
        PretrainedModel(str(saved_model), dtype=dtype)
