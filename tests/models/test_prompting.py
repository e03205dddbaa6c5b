"""The prompt path: chat templates, system prompts, BOS, enable_thinking, left padding."""

from __future__ import annotations

import pytest

from tempo.config_error import ConfigError
from tempo.models.prompting import PromptBuilder, PromptConfig
from tests.models.chat_fixtures import char_tokenizer


def _ids(tok, text: str) -> list[int]:
    return [tok.convert_tokens_to_ids(t) for t in _pieces(text)]


def _pieces(text: str) -> list[str]:
    """Split into special tokens (whole) and single characters, as the fixture tokenizer does."""
    specials = ["<|im_start|>", "<|im_end|>", "<bos>", "<think>"]
    out, i = [], 0
    while i < len(text):
        hit = next((s for s in specials if text.startswith(s, i)), None)
        out.append(hit or text[i])
        i += len(hit) if hit else 1
    return out


def test_chat_template_renders_system_and_user_turns_and_the_generation_prompt():
    tok = char_tokenizer(chat_template=True, adds_bos=True)
    builder = PromptBuilder(tok, PromptConfig(system_prompt="Be brief."))
    text = builder.render("1+1=")
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n1+1=<|im_end|>\n<|im_start|>assistant\n"
    )
    # The template writes its own special tokens: nothing (no BOS) is added on top.
    assert builder.uses_chat and not builder.add_special_tokens
    assert builder.token_ids("1+1=") == _ids(tok, text)


def test_enable_thinking_reaches_the_template():
    tok = char_tokenizer(chat_template=True)
    off = PromptBuilder(tok, PromptConfig(enable_thinking=False)).render("q")
    default = PromptBuilder(tok, PromptConfig()).render("q")
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert default.endswith("<|im_start|>assistant\n")
    kwargs = PromptBuilder(tok, PromptConfig(template_kwargs={"enable_thinking": False}))
    assert kwargs.render("q") == off


def test_without_a_template_the_tokenizer_adds_its_own_bos():
    tok = char_tokenizer(adds_bos=True)
    builder = PromptBuilder(tok, PromptConfig())
    assert not builder.uses_chat and builder.render("7*6=") == "7*6="
    assert builder.token_ids("7*6=") == [tok.bos_token_id, *_ids(tok, "7*6=")]
    plain = PromptBuilder(tok, PromptConfig(add_special_tokens=False))
    assert plain.token_ids("7*6=") == _ids(tok, "7*6=")


def test_chat_template_can_be_switched_off():
    tok = char_tokenizer(chat_template=True)
    builder = PromptBuilder(tok, PromptConfig(chat_template=False))
    assert builder.render("2-1=") == "2-1=" and not builder.uses_chat


def test_encode_left_pads_and_shown_gives_back_the_exact_model_input():
    tok = char_tokenizer(chat_template=True)
    builder = PromptBuilder(tok, PromptConfig(system_prompt="S"))
    ids, mask = builder.encode(["1=", "12345="])
    assert ids.shape == mask.shape and ids.shape[0] == 2
    short, long_ = (int(m.sum()) for m in mask)
    assert long_ - short == 4  # "2345" more characters
    assert mask[0, : ids.shape[1] - short].sum() == 0  # padding on the left
    assert (ids[0, : ids.shape[1] - short] == tok.pad_token_id).all()
    assert builder.shown(ids, mask) == [builder.render("1="), builder.render("12345=")]


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (PromptConfig(chat_template=True), "prompt.chat_template"),
        (PromptConfig(system_prompt="x"), "prompt.system_prompt"),
        (PromptConfig(enable_thinking=True), "prompt.enable_thinking"),
    ],
)
def test_chat_only_settings_without_a_template_fail_in_one_line(config, key):
    with pytest.raises(ConfigError) as err:
        PromptBuilder(char_tokenizer(), config)
    assert err.value.key == key and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("chat_template", "yes"), ("add_special_tokens", 2), ("enable_thinking", "no")],
)
def test_bad_prompt_values(field, value):
    with pytest.raises(ConfigError) as err:
        PromptConfig(**{field: value})
    assert err.value.key == field
