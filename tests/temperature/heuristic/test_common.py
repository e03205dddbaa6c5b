import math

import pytest
import torch

from tempo.temperature.heuristic.common import token_entropy
from tempo.temperature.heuristic.ead import ExploratoryAnnealedDecoding
from tempo.temperature.heuristic.schedules import LinearSchedule


def entropy_by_hand(row: list[float]) -> float:
    finite = [x for x in row if x != -math.inf]
    z = sum(math.exp(x) for x in finite)
    return -sum(math.exp(x) / z * math.log(math.exp(x) / z) for x in finite)


def test_token_entropy_matches_the_formula_and_ignores_masked_logits():
    rows = [[0.0, 0.0, 0.0, 0.0], [2.0, 1.0, 0.0, -1.0], [0.5, -math.inf, 1.5, -math.inf]]
    got = token_entropy(torch.tensor(rows))
    expected = [entropy_by_hand(r) for r in rows]
    assert got.tolist() == pytest.approx(expected, abs=1e-6)
    assert got[0].item() == pytest.approx(math.log(4), abs=1e-6)


def test_token_entropy_of_a_one_hot_row_is_zero_not_nan():
    got = token_entropy(torch.tensor([[3.0, -math.inf, -math.inf]]))
    assert got.tolist() == [0.0]


def test_loading_another_rules_state_is_refused():
    ead = ExploratoryAnnealedDecoding()
    with pytest.raises(ValueError, match="rule"):
        ead.load_state_dict(LinearSchedule().state_dict())
