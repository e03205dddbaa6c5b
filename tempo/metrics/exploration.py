"""Exploration statistics: answer diversity per group and masked token-level moments.

The masked moments summarise per-token quantities (entropy, sampling temperature) over the
valid completion tokens only, excluding prompt and padding positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tempo.metrics.sampling_metrics import normalize_answer


def unique_answers(answers: Sequence[str | None], group_size: int) -> float:
    """Mean over consecutive groups of ``group_size`` of the number of distinct answers.

    None (and empty) answers are not counted; answers are compared after removing whitespace.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if len(answers) == 0 or len(answers) % group_size != 0:
        raise ValueError(
            f"need a positive multiple of group_size={group_size} answers, got {len(answers)}"
        )
    n_groups = len(answers) // group_size
    total = 0
    for g in range(n_groups):
        group = answers[g * group_size : (g + 1) * group_size]
        total += len({normalize_answer(a) for a in group} - {None})
    return total / n_groups


def _valid_values(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if x.shape != mask.shape:
        raise ValueError(f"x and mask shapes differ: {tuple(x.shape)} vs {tuple(mask.shape)}")
    # Indexing (not x * mask) so that inf/nan at masked-out positions cannot leak in.
    return x.detach()[mask.detach().bool()].to(torch.float64)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of ``x`` over positions where ``mask`` is nonzero; nan if there are none."""
    values = _valid_values(x, mask)
    if values.numel() == 0:
        return float("nan")
    return values.mean().item()


def masked_std(x: torch.Tensor, mask: torch.Tensor) -> float:
    """Population std of ``x`` over positions where ``mask`` is nonzero; nan if there are none."""
    values = _valid_values(x, mask)
    if values.numel() == 0:
        return float("nan")
    return values.std(correction=0).item()
