"""Splitting a step's rows into micro-batches by a row count and a padded-token budget.

With `token_budget`, rows are taken longest first and packed greedily so that each
micro-batch's padded size (rows x its longest row, prompt included) stays within the budget,
as verl's dynamic batch size does: a batch of long and short completions then fits the same
memory, and short rows are not padded to the longest row of the whole step (each micro-batch
is trimmed to its own longest row, `Rollout.trimmed`). A row longer than the budget goes alone.
The loss is normalised by whole-batch totals, so the gradient does not depend on the split.
"""

from __future__ import annotations

import torch


def micro_batches(
    rows: torch.Tensor,
    prompt_lengths: torch.Tensor,
    completion_lengths: torch.Tensor,
    max_rows: int,
    token_budget: int | None = None,
) -> list[torch.Tensor]:
    """Index tensors that partition `rows` (indices into the step's batch).

    prompt_lengths / completion_lengths [B] are the real tokens of every row of the batch;
    `rows` index into them. A micro-batch's padded size is its row count times (its longest
    prompt + its longest completion), what it costs once trimmed. Without a budget the rows
    keep their order, `max_rows` at a time.
    """
    if token_budget is None:
        return [rows[i : i + max_rows] for i in range(0, len(rows), max_rows)]
    if len(rows) == 0:
        return []
    prompts = prompt_lengths[rows].tolist()
    completions = completion_lengths[rows].tolist()
    order = sorted(range(len(prompts)), key=lambda i: -(prompts[i] + completions[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    longest_p = longest_c = 0
    for i in order:
        p, c = max(longest_p, int(prompts[i])), max(longest_c, int(completions[i]))
        if current and (len(current) == max_rows or (len(current) + 1) * (p + c) > token_budget):
            batches.append(current)
            current, p, c = [], int(prompts[i]), int(completions[i])
        current.append(i)
        longest_p, longest_c = p, c
    batches.append(current)
    return [rows[torch.tensor(sorted(b), device=rows.device)] for b in batches]
