"""Answer extraction and verifiable rewards for math completions."""

from tempo.rewards.boxed import extract_boxed
from tempo.rewards.math_rewards import format_reward, math_reward, shared_pool
from tempo.rewards.verifier import VerifierPool

__all__ = ["VerifierPool", "extract_boxed", "format_reward", "math_reward", "shared_pool"]
