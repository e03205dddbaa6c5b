"""The unit every task hands to training and evaluation: one question with its gold answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One task instance; `prompt` + `solution` is the supervised text, `answer` the gold result.

    The completion starts right after `prompt`; `solution` ends in `\\boxed{answer}` (no EOS).
    """

    id: str  # stable id, e.g. "arithmetic/test/17"
    question: str  # the bare question, e.g. "12+7*3"
    prompt: str  # the exact text fed to the model; the completion starts right after it
    answer: str  # gold final answer as a canonical string, e.g. "-12"
    solution: str  # short worked solution ending in \boxed{answer} (no EOS)
    # The source row's fields (a dataset's columns), handed to reward functions.
    columns: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
