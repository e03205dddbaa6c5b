"""Micro-batches by rows and by a padded-token budget, and trimming a micro-batch's padding."""

from __future__ import annotations

import pytest
import torch

from tempo.config_error import ConfigError
from tempo.rl.grpo import GRPOConfig
from tempo.rl.micro_batches import micro_batches
from tempo.sampling.rollout import Rollout


def _padded(batch, prompt, completion):
    return len(batch) * (max(prompt[i] for i in batch) + max(completion[i] for i in batch))


def test_rows_only_keeps_order():
    rows = torch.tensor([0, 2, 3, 5, 6])
    got = micro_batches(rows, torch.ones(7), torch.ones(7), 2)
    assert [b.tolist() for b in got] == [[0, 2], [3, 5], [6]]


@pytest.mark.parametrize("budget", [1, 20, 37, 64, 500])
def test_token_budget_partitions_within_budget(budget):
    g = torch.Generator().manual_seed(budget)
    prompt = torch.randint(3, 9, (12,), generator=g)
    completion = torch.randint(1, 30, (12,), generator=g)
    rows = torch.tensor([0, 1, 2, 4, 5, 7, 8, 9, 11])
    got = micro_batches(rows, prompt, completion, max_rows=4, token_budget=budget)
    flat = sorted(i for b in got for i in b.tolist())
    assert flat == rows.tolist()  # a partition
    p, c = prompt.tolist(), completion.tolist()
    for b in got:
        b = b.tolist()
        assert len(b) <= 4
        assert len(b) == 1 or _padded(b, p, c) <= budget  # a lone long row may exceed it
    # greedy longest-first: no two consecutive micro-batches could have been merged
    for a, b in zip(got, got[1:], strict=False):
        merged = a.tolist() + b.tolist()
        assert len(merged) > 4 or _padded(merged, p, c) > budget


def test_budget_fits_more_short_rows_than_long():
    prompt = torch.full((8,), 4)
    completion = torch.tensor([60, 60, 4, 4, 4, 4, 4, 4])
    got = micro_batches(torch.arange(8), prompt, completion, max_rows=8, token_budget=130)
    assert [b.tolist() for b in got] == [[0, 1], [2, 3, 4, 5, 6, 7]]


def test_config_checks_the_new_keys():
    with pytest.raises(ConfigError, match="micro_batch_tokens"):
        GRPOConfig(micro_batch_tokens=0)
    with pytest.raises(ConfigError, match="logprob_chunk_tokens"):
        GRPOConfig(logprob_chunk_tokens=True)
    assert GRPOConfig(micro_batch_tokens=4096).micro_batch_tokens == 4096


def _rollout():
    prompt_ids = torch.tensor([[0, 0, 7, 8], [0, 5, 6, 7], [0, 0, 0, 9]])
    prompt_mask = (prompt_ids > 0).long()
    tokens = torch.tensor([[1, 2, 0, 0, 0], [3, 0, 0, 0, 0], [4, 5, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]]).float()
    f = torch.arange(15.0).reshape(3, 5)
    return Rollout(
        prompt_ids,
        prompt_mask,
        tokens,
        mask,
        f + 1,
        -f,
        f * 2,
        f * 3,
        torch.tensor([True, True, False]),
        {"gate": f * 4},
    )


def test_trimmed_drops_only_padding_columns():
    r = _rollout()
    part = r.select(torch.tensor([0, 1])).trimmed()
    assert part.prompt_ids.tolist() == [[0, 7, 8], [5, 6, 7]]
    assert part.tokens.tolist() == [[1, 2], [3, 0]]
    assert part.temperatures.tolist() == (torch.arange(15.0).reshape(3, 5)[:2, :2] + 1).tolist()
    assert part.controller_data["gate"].shape == (2, 2)
    assert part.finished.tolist() == [True, True]
    ids, attn = part.input_ids()
    full_ids, full_attn = r.select(torch.tensor([0, 1])).input_ids()
    # the real tokens, in order, are the same
    assert [row[m.bool()].tolist() for row, m in zip(ids, attn, strict=True)] == [
        row[m.bool()].tolist() for row, m in zip(full_ids, full_attn, strict=True)
    ]
    whole = r.trimmed()
    assert whole.prompt_ids.shape == (3, 3) and whole.tokens.shape == (3, 3)
