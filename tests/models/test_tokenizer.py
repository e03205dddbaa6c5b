import pytest

from tempo.models.tokenizer import CHARACTERS, SPECIAL_TOKENS, build_char_tokenizer


def test_one_token_per_character_and_exact_round_trip(char_tokenizer):
    text = "12+7*3=7*3=21, 12+21=33. \\boxed{33}\nQ: (x)?"
    ids = char_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    assert char_tokenizer.decode(ids) == text
    vocab = char_tokenizer.get_vocab()
    assert ids[0] == vocab["1"] and ids[2] == vocab["+"]


def test_vocabulary_is_specials_then_printable(char_tokenizer):
    assert len(char_tokenizer) == len(SPECIAL_TOKENS) + len(CHARACTERS)
    assert char_tokenizer.pad_token_id == 0
    assert char_tokenizer.eos_token_id == 2
    assert char_tokenizer.padding_side == "left"


def test_unknown_characters_map_to_unk(char_tokenizer):
    ids = char_tokenizer("aé", add_special_tokens=False)["input_ids"]
    assert ids[1] == char_tokenizer.unk_token_id


def test_specials_are_skipped_on_decode(char_tokenizer):
    ids = char_tokenizer("12", add_special_tokens=False)["input_ids"]
    ids = [char_tokenizer.pad_token_id, *ids, char_tokenizer.eos_token_id]
    assert char_tokenizer.decode(ids, skip_special_tokens=True) == "12"


def test_save_and_reload_keep_ids(tmp_path, char_tokenizer):
    from transformers import AutoTokenizer

    char_tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "3-8=-5. \\boxed{-5}"
    assert again(text)["input_ids"] == char_tokenizer(text)["input_ids"]


@pytest.mark.parametrize("chars", ["abc", "aabbc"])
def test_custom_character_set(chars):
    tok = build_char_tokenizer(chars)
    assert len(tok) == len(SPECIAL_TOKENS) + 3
