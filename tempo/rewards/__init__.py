"""Answer extraction, verifiable rewards for math completions, and weighted reward functions."""

from tempo.rewards.boxed import extract_boxed
from tempo.rewards.code import code_reward
from tempo.rewards.functions import RewardFunction
from tempo.rewards.math_rewards import format_reward, math_reward, shared_pool
from tempo.rewards.scorer import RewardScorer, ScoredBatch
from tempo.rewards.verifier import VerifierPool

__all__ = [
    "RewardFunction",
    "RewardScorer",
    "ScoredBatch",
    "VerifierPool",
    "code_reward",
    "extract_boxed",
    "format_reward",
    "math_reward",
    "shared_pool",
]
