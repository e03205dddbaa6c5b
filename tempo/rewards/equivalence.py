"""Math-Verify equivalence check between an extracted answer and a gold answer.

Runs inside the verifier worker processes (see ``verifier.py``). Math-Verify's own timeouts
use ``signal.alarm``, which only works on a process's main thread, so they are disabled here
(``parsing_timeout=None``, ``timeout_seconds=None``); the pool enforces a wall-clock timeout
from the parent instead. Importing this module imports sympy, which takes about a second, so
the parent process never imports it.
"""

from __future__ import annotations

import functools
import re

import math_verify.grader
import math_verify.parser
from math_verify import parse, verify

# Math-Verify logs a warning the first time its timeout is disabled. That is deliberate here,
# and each freshly started worker would otherwise repeat it.
for _module in (math_verify.parser, math_verify.grader):
    if hasattr(_module, "TIMEOUT_WARNING_SHOWN"):
        _module.TIMEOUT_WARNING_SHOWN = True

# Math-Verify's LaTeX parser (ANTLR, full-context prediction) takes time exponential in how
# deeply groups nest: ~1.4 s for ten nested braces, over 5 s for fifteen. Real final answers
# nest a few levels (``\left(\frac{\sqrt{2}}{2}\right)`` is 3), so deeper answers are
# declared not equivalent without parsing.
MAX_NESTING = 10
_BRACKET = re.compile(r"[{}()\[\]]")


def nesting_depth(text: str) -> int:
    """Deepest nesting of ``{}``, ``()`` and ``[]`` groups (any mix; unmatched closers ignored)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(text):
        if match.group() in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif depth:
            depth -= 1
    return deepest


def wrap_answer(answer: str) -> str:
    """Wrap a bare answer (``"1/2"``, ``"\\frac{1}{2}"``) as ``\\boxed{...}`` for ``parse``.

    Math-Verify extracts from free text; bare strings like ``\\sqrt{2}`` or ``(1,2)`` parse to
    nothing, while inside ``\\boxed{}`` they are read as LaTeX. Boxing (rather than ``$...$``)
    also survives answers that contain a ``$`` sign, and it is the form the model wrote.
    """
    return f"\\boxed{{{answer}}}"


def _parse(answer: str) -> list:
    return parse(wrap_answer(answer), parsing_timeout=None, raise_on_error=True)


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list:
    # Golds repeat across the samples of a group, so their parse is cached.
    return _parse(gold)


def answers_equivalent(pred: str, gold: str) -> bool:
    """True if ``pred`` is mathematically equivalent to ``gold`` according to Math-Verify.

    Both are bare answer strings (the content of a ``\\boxed{}``, or a dataset's gold answer).
    Exceptions from Math-Verify propagate (the pool counts them as errors). An answer nested
    deeper than ``MAX_NESTING`` is False without parsing. No timeout: call this through
    ``VerifierPool`` unless the inputs are trusted.
    """
    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        return False
    if nesting_depth(pred) > MAX_NESTING:
        return False
    pred_parsed = _parse(pred)
    if not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None, raise_on_error=True))
