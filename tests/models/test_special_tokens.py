"""Stop ids from the tokenizer, the generation config and the run config; context checks;
pad/EOS set-up; all before any weights load."""

from __future__ import annotations

import pytest
from transformers import GenerationConfig

from tempo.config_error import ConfigError
from tempo.data.problem import Problem
from tempo.models.preflight import prepare_model_io
from tempo.models.prompting import PromptConfig
from tempo.models.special_tokens import check_fits_context, context_length, stop_token_ids
from tempo.models.specs import PretrainedModel, configure_special_tokens
from tests.models.chat_fixtures import char_tokenizer, save_chat_model


def test_stop_ids_join_tokenizer_generation_config_and_extra_tokens():
    tok = char_tokenizer(chat_template=True)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    think = tok.convert_tokens_to_ids("<think>")
    gen = GenerationConfig(eos_token_id=[im_end, tok.eos_token_id])
    ids = stop_token_ids(tok, gen, ["<think>", 9, "x"], vocab_size=len(tok))
    assert ids == [tok.eos_token_id, im_end, think, 9, tok.convert_tokens_to_ids("x")]
    assert stop_token_ids(tok, GenerationConfig(eos_token_id=im_end)) == [tok.eos_token_id, im_end]


@pytest.mark.parametrize(("extra", "fragment"), [(["ab"], "2 tokens"), ([10_000], "[0, ")])
def test_bad_stop_tokens_name_the_entry(extra, fragment):
    tok = char_tokenizer()
    with pytest.raises(ConfigError) as err:
        stop_token_ids(tok, None, extra, vocab_size=len(tok))
    assert err.value.key == "rollout.stop_tokens[0]" and fragment in str(err.value)


def test_context_check_names_the_budget_and_the_room_left():
    assert context_length(type("C", (), {"n_positions": 64})()) == 64
    assert check_fits_context([(10, "a"), (20, "b")], 44, 64, "m") == 20
    with pytest.raises(ConfigError) as err:
        check_fits_context([(10, "a"), (20, "task b problem 3")], 45, 64, "m")
    message = str(err.value)
    assert err.value.key == "rollout.max_new_tokens" and "at most 44" in message
    assert "task b problem 3" in message and "\n" not in message


def test_missing_eos_and_pad_are_filled_or_named():
    tok = configure_special_tokens(char_tokenizer(pad=False), None, None)
    assert tok.pad_token == tok.eos_token == "<eos>" and tok.padding_side == "left"
    gen = GenerationConfig(eos_token_id=[5, 6])
    tok = configure_special_tokens(char_tokenizer(pad=False, eos=False), None, None, gen)
    assert tok.eos_token_id == 5 and tok.pad_token_id == 5
    with pytest.raises(ConfigError) as err:
        configure_special_tokens(char_tokenizer(pad=False, eos=False), None, None)
    assert err.value.key == "model.eos_token" and "model.eos_token=<token>" in str(err.value)
    with pytest.raises(ConfigError) as err:
        configure_special_tokens(char_tokenizer(), "<nope>", None)
    assert err.value.key == "model.pad_token"
    tok = configure_special_tokens(char_tokenizer(eos=False), None, "<|im_end|>")
    assert tok.eos_token == "<|im_end|>"


def _problems(prompt: str, n: int = 2) -> list[Problem]:
    return [Problem(f"t/{i}", prompt, prompt, "1", "\\boxed{1}") for i in range(n)]


def test_preflight_checks_prompts_before_the_weights_load(tmp_path):
    folder = save_chat_model(tmp_path / "m", context=64, weights=False)  # no weights at all
    spec = PretrainedModel(str(folder))
    io = prepare_model_io(spec, PromptConfig(), ["<think>"], 8, [("t", _problems("1+1="))])
    tok = spec.load_tokenizer()
    rendered = "<|im_start|>user\n1+1=<|im_end|>\n<|im_start|>assistant\n"
    assert io.prompts.uses_chat and io.longest_prompt == len(io.prompts.token_ids("1+1="))
    assert io.prompts.render("1+1=") == rendered
    assert io.stop_token_ids == [
        tok.eos_token_id,
        tok.convert_tokens_to_ids("<|im_end|>"),
        tok.convert_tokens_to_ids("<think>"),
    ]
    with pytest.raises(ConfigError) as err:
        prepare_model_io(spec, PromptConfig(), [], 40, [("t", _problems("9" * 10))])
    assert err.value.key == "rollout.max_new_tokens" and "context is 64 tokens" in str(err.value)
    with pytest.raises(ConfigError, match="no file named model.safetensors"):
        spec.build(None)  # the weights were never there: nothing above needed them
