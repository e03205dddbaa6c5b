"""Tests for unique_answers and the masked token statistics."""

import math

import pytest
import torch

from tempo.metrics import masked_mean, masked_std, unique_answers


def test_unique_answers_by_hand() -> None:
    answers = ["1", "1", "2", None, "3", "3 ", " 3", "3", None, None, None, None]
    # Groups of 4: {1, 2} -> 2; {3} -> 1; {} -> 0. Mean = 1.
    assert unique_answers(answers, 4) == 1.0
    # Groups of 6: {1, 2, 3} -> 3; {3} -> 1. Mean = 2.
    assert unique_answers(answers, 6) == 2.0
    assert unique_answers(["a", "b", "c"], 1) == 1.0
    assert unique_answers(["a", None], 1) == 0.5


def test_unique_answers_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="multiple"):
        unique_answers(["a", "b", "c"], 2)
    with pytest.raises(ValueError, match="multiple"):
        unique_answers([], 2)
    with pytest.raises(ValueError, match="group_size"):
        unique_answers(["a"], 0)


def test_masked_mean_and_std_by_hand() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, -50.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    # Valid entries 1, 2, 3, 4: mean 2.5, population variance (2.25+0.25+0.25+2.25)/4 = 1.25.
    assert masked_mean(x, mask) == pytest.approx(2.5)
    assert masked_std(x, mask) == pytest.approx(math.sqrt(1.25))
    assert masked_mean(x, mask.bool()) == pytest.approx(2.5)
    assert masked_std(x, mask.float()) == pytest.approx(math.sqrt(1.25))


def test_masked_stats_ignore_non_finite_padding_and_low_precision() -> None:
    x = torch.tensor([0.5, float("inf"), 1.5, float("nan")], dtype=torch.bfloat16)
    mask = torch.tensor([True, False, True, False])
    assert masked_mean(x, mask) == pytest.approx(1.0)
    assert masked_std(x, mask) == pytest.approx(0.5)
    x = torch.tensor([3.0], requires_grad=True)
    assert masked_mean(x, torch.ones(1)) == 3.0
    assert masked_std(x, torch.ones(1)) == 0.0


def test_masked_stats_empty_mask_and_shape_mismatch() -> None:
    x = torch.ones(2, 3)
    assert math.isnan(masked_mean(x, torch.zeros(2, 3)))
    assert math.isnan(masked_std(x, torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="shapes"):
        masked_mean(x, torch.ones(3, 2))
