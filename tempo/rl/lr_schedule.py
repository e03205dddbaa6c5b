"""The policy's learning-rate schedule in RL: linear warm-up, then constant, linear or cosine.

The factor multiplies `algorithm.lr` for the update of RL step s (0-based), over
`total_steps` = trainer.max_steps:

    warm-up (s < W):   (s + 1) / W
    constant:          1
    linear:            1 - (1 - m) p          p = (s - W) / (total_steps - W), in [0, 1)
    cosine:            m + (1 - m) (1 + cos(pi p)) / 2

with m = `min_lr_ratio` (TAMPO's paper: cosine to 0.1 of lr 1e-6). The schedule is a
`LambdaLR` stepped once per RL step, so its position rides along in every checkpoint.
"""

from __future__ import annotations

import math

import torch

from tempo.config_error import ConfigError

LR_SCHEDULES = ("constant", "linear", "cosine")


def check_schedule(kind: object, warmup_steps: object, min_lr_ratio: object) -> None:
    """One-line errors for the schedule's settings (keys relative to `algorithm`)."""
    if kind not in LR_SCHEDULES:
        raise ConfigError("lr_schedule", kind, f"one of {', '.join(LR_SCHEDULES)}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ConfigError("warmup_steps", warmup_steps, "an integer >= 0")
    if (
        isinstance(min_lr_ratio, bool)
        or not isinstance(min_lr_ratio, (int, float))
        or not 0.0 <= min_lr_ratio <= 1.0
    ):
        raise ConfigError("min_lr_ratio", min_lr_ratio, "a number in [0, 1]")


def lr_factor(
    step: int, total_steps: int, kind: str, warmup_steps: int = 0, min_lr_ratio: float = 0.0
) -> float:
    """The multiplier of the base learning rate for the update of RL step `step`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if kind == "linear":
        return 1.0 - (1.0 - min_lr_ratio) * progress
    if kind == "cosine":
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr_schedule {kind!r}; allowed {LR_SCHEDULES}")


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    kind: str,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `lr_factor`; step it once after each RL step's update."""

    def factor(step: int) -> float:
        return lr_factor(step, total_steps, kind, warmup_steps, min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
