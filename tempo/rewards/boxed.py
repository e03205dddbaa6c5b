"""Extraction of the final ``\\boxed{...}`` answer from a model completion.

The scan is a single left-to-right pass driven by a compiled regex, so it is linear in the
input length and safe on megabyte-sized (e.g. runaway) completions.
"""

from __future__ import annotations

import re

_BOXED = "\\boxed{"
# Tokens that matter for brace matching: an escape pair (``\{``, ``\}``, ``\\`` ...) is skipped
# as a unit so that escaped braces never change the depth; bare braces do.
_BRACE_TOKENS = re.compile(r"\\.|[{}]", re.DOTALL)


def boxed_span(text: str) -> tuple[int, int | None] | None:
    """Character range (start, end) of the last ``\\boxed{...}``'s content, or None.

    ``end`` is None when that box is never closed (e.g. a truncated completion). Anything but
    a string has no box.
    """
    if not isinstance(text, str):
        return None
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    body_start = start + len(_BOXED)
    depth = 1
    for match in _BRACE_TOKENS.finditer(text, body_start):
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return body_start, match.start()
    return body_start, None


def extract_boxed(text: str) -> str | None:
    """Return the content of the last ``\\boxed{...}`` in ``text``, or None.

    Braces inside the box may nest (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``); escaped
    braces (``\\{``, ``\\}``) are content, not structure. Returns None when there is no box or
    when the last box is never closed (e.g. a truncated completion): an earlier box is then
    not used, since the model's final answer is incomplete.
    """
    span = boxed_span(text)
    if span is None or span[1] is None:
        return None
    return text[span[0] : span[1]]
