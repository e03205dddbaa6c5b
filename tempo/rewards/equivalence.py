"""Math-Verify checks: an extracted answer against a gold answer (`answers_equivalent`), and a
whole completion with Math-Verify's own answer extraction (`verify_completion`,
`extract_answer`: ``reward.extraction=math_verify``).

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
    """A gold answer's parse (cached: golds repeat across a group's samples). A bare answer
    (``\\frac{1}{2}``) is read inside a box; one that brings its own math delimiters
    (``$28\\%$``) is read as it is written, as Math-Verify's own tests write golds."""
    if "$" in gold or "\\(" in gold or "\\[" in gold:
        parsed = parse(gold, parsing_timeout=None, raise_on_error=True)
        if parsed:
            return parsed
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


def _answer_text(parsed: list) -> str | None:
    """The extracted text of a ``parse`` result: its string fallback, else the parsed value."""
    if not parsed:
        return None
    last = parsed[-1]
    return last if isinstance(last, str) else str(parsed[0])


def _parse_completion(completion: str) -> list:
    # Math-Verify's default extraction configs (LaTeX, then plain expressions), rightmost first.
    return parse(completion, parsing_timeout=None, raise_on_error=True)


def extract_answer(completion: str) -> str | None:
    """Math-Verify's own extraction of the final answer anywhere in ``completion`` (the last
    LaTeX or plain expression it can read), as text; None if it finds none."""
    return _answer_text(_parse_completion(completion))


def verify_completion(
    completion: str, gold: str, max_answer_chars: int | None = None
) -> tuple[bool | None, str | None]:
    """(correct?, extracted answer) for a whole completion, the way TRL's accuracy reward
    checks it: ``parse(completion)`` with Math-Verify's default extraction, the gold parsed as
    in `answers_equivalent`, then ``verify(gold, pred)``.

    The verdict is None (not checked) when the extracted answer is longer than
    ``max_answer_chars``; it is False when nothing is extracted or the gold does not parse.
    No timeout: call this through ``VerifierPool.verify`` unless the inputs are trusted.
    """
    pred_parsed = _parse_completion(completion)
    answer = _answer_text(pred_parsed)
    if answer is None:
        return False, None
    if max_answer_chars is not None and len(answer) > max_answer_chars:
        return None, answer
    gold = gold.strip()
    gold_parsed = _parse_gold(gold) if gold else []
    if not gold_parsed:
        return False, answer
    verdict = verify(gold_parsed, pred_parsed, timeout_seconds=None, raise_on_error=True)
    return bool(verdict), answer
