"""Helpers for the heuristic-rule tests: hand-made rollouts."""

from __future__ import annotations

import pytest
import torch

from tempo.sampling.rollout import Rollout


def make_rollout(
    entropy: list[list[float]],
    mask: list[list[float]],
    entropy_at_T: list[list[float]] | None = None,
    temperatures: list[list[float]] | None = None,
) -> Rollout:
    """A Rollout whose per-token fields are the given [B, L] lists (others are dummies)."""
    ent = torch.tensor(entropy, dtype=torch.float32)
    batch, length = ent.shape
    return Rollout(
        prompt_ids=torch.zeros(batch, 1, dtype=torch.long),
        prompt_mask=torch.ones(batch, 1, dtype=torch.long),
        tokens=torch.zeros(batch, length, dtype=torch.long),
        mask=torch.tensor(mask, dtype=torch.float32),
        temperatures=torch.tensor(
            temperatures if temperatures is not None else [[1.0] * length] * batch
        ),
        logprobs=torch.zeros(batch, length),
        entropy=ent,
        entropy_at_T=torch.tensor(entropy_at_T) if entropy_at_T is not None else ent.clone(),
        finished=torch.ones(batch, dtype=torch.bool),
    )


@pytest.fixture
def rollout_factory():
    return make_rollout
