"""Per-completion reward functions: answer correctness (Math-Verify) and answer format."""

from __future__ import annotations

import threading

from tempo.rewards.boxed import extract_boxed
from tempo.rewards.verifier import VerifierPool

_shared_pool: VerifierPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> VerifierPool:
    """The process-wide pool behind ``math_reward`` (created lazily, one worker)."""
    global _shared_pool
    with _shared_lock:
        if _shared_pool is None:
            _shared_pool = VerifierPool()
        return _shared_pool


def math_reward(
    completion: str, gold: str, timeout: float = 5.0, extraction: str = "boxed"
) -> float:
    """1.0 if the completion's final answer is equivalent to ``gold``, else 0.0.

    ``extraction="boxed"`` (default) reads the last closed ``\\boxed{}`` only; an answer equal
    to ``gold`` after stripping whitespace scores 1.0 without Math-Verify. ``"math_verify"``
    lets Math-Verify extract the last LaTeX or plain expression from the whole completion
    (``"The answer is $\\frac{1}{2}$"``, ``"x = 3"``), as TRL's accuracy reward does. The check
    runs in the shared worker pool under a ``timeout``-second limit (overrun, Math-Verify
    error or no answer all score 0.0). For batches, call ``VerifierPool.verify`` directly.
    """
    return shared_pool().verify([completion], [gold], extraction, timeout=timeout)[0][0]


def format_reward(completion: str) -> float:
    """1.0 if the completion ends its answer in a closed, non-empty ``\\boxed{...}``."""
    answer = extract_boxed(completion)
    return 1.0 if answer is not None and answer.strip() else 0.0
