import pytest
import torch

from tempo.metrics.temperature_profile import (
    ANSWER,
    DIGIT_OP,
    OTHER,
    temperature_by_class,
    temperature_by_position,
    token_classes,
    token_pieces,
)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_token_classes_mark_digits_operators_and_the_boxed_answer(char_tokenizer):
    text = "3*4=12, so \\boxed{12}"
    ids = _ids(char_tokenizer, text)
    tokens = torch.tensor([ids + [char_tokenizer.pad_token_id] * 2])
    mask = torch.tensor([[1.0] * len(ids) + [0.0, 0.0]])
    classes = token_classes(tokens, mask, token_pieces(char_tokenizer))
    expected = []
    inside = range(text.index("{") + 1, text.index("}"))
    for i, ch in enumerate(text):
        if i in inside:
            expected.append(ANSWER)
        elif ch in "0123456789*=,":
            expected.append(DIGIT_OP)
        else:
            expected.append(OTHER)
    assert classes[0, : len(ids)].tolist() == expected
    assert classes[0, len(ids) :].tolist() == [OTHER, OTHER]  # padding is never classed


def test_unclosed_box_runs_to_the_end(char_tokenizer):
    ids = _ids(char_tokenizer, "\\boxed{1")
    classes = token_classes(
        torch.tensor([ids]), torch.ones(1, len(ids)), token_pieces(char_tokenizer)
    )
    assert classes[0, -1] == ANSWER and classes[0, 0] == OTHER


def test_means_by_class_and_position_against_hand_values():
    temps = torch.tensor([[0.5, 1.0, 1.5, 2.0], [0.7, 0.9, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    classes = torch.tensor([[DIGIT_OP, OTHER, ANSWER, OTHER], [DIGIT_OP, DIGIT_OP, ANSWER, OTHER]])
    by_class = temperature_by_class(temps, classes, mask)
    assert by_class["method/T_class=digit_op"] == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert by_class["method/T_class=answer"] == pytest.approx(1.5)  # masked 9.0 excluded
    assert by_class["method/T_class=other"] == pytest.approx((1.0 + 2.0) / 2)
    by_pos = temperature_by_position(temps, mask, max_length=4, buckets=2)
    assert by_pos == {
        "method/T_pos=0-1": pytest.approx((0.5 + 1.0 + 0.7 + 0.9) / 4),
        "method/T_pos=2-3": pytest.approx((1.5 + 2.0) / 2),
    }
