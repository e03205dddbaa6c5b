"""Gold answers and worked solutions from benchmark rows, one rule per `answer_format`.

* ``raw``: the field itself as a string, stripped (integral numbers print without ``.0``);
* ``gsm8k``: the text after the last ``####``, thousands separators removed (``1,234`` -> ``1234``);
* ``boxed``: the content of the field's last ``\\boxed{...}`` (nested braces kept), also
  ``\\fbox{...}`` and the brace-less ``\\boxed 5``;
* ``list_first``: the first element of a list field (e.g. OlympiadBench ``final_answer``), with
  surrounding ``$...$`` removed.

A worked solution becomes ``<text with its final-answer marker removed> \\boxed{<answer>}``:
GSM8K text is cut before ``####`` and loses its ``<<48/2=24>>`` calculator notes, and the last box
of any solution is unwrapped (``$\\boxed{5}$.`` -> ``$5$.``) so the answer is boxed exactly once,
at the end. Without a solution the target is just ``\\boxed{<answer>}``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tempo.rewards.boxed import boxed_span

ANSWER_FORMATS = ("raw", "gsm8k", "boxed", "list_first")

_BOXED = "\\boxed{"
_GSM8K_MARK = "####"
_CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")
_BARE_BOX = re.compile(r"\\boxed\s+([^\s${}\\]+)")


def _as_text(value: object) -> str | None:
    """A scalar field as a stripped string (27.0 -> "27"); None for missing or non-scalar."""
    if value is None or isinstance(value, (bytes, dict, list, tuple)):
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def _first(value: object) -> object:
    """The first element of a list-like field; a scalar passes through unchanged."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return value
    return value[0] if len(value) else None


def _strip_dollars(text: str) -> str:
    """Remove math delimiters around the whole answer: ``$x$`` / ``$$x$$`` -> ``x``."""
    while len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text[1:-1].strip()
    return text


def _last_box(text: str) -> tuple[int, int, str] | None:
    """(start, end, content) of the last closed box in `text`, ``\\fbox{`` read as a box."""
    text = text.replace("\\fbox{", _BOXED)
    span = boxed_span(text)
    if span is not None and span[1] is not None:
        body_start, body_end = span
        return body_start - len(_BOXED), body_end + 1, text[body_start:body_end]
    matches = list(_BARE_BOX.finditer(text))
    bare = matches[-1] if matches else None
    if bare is not None and (span is None or bare.start() > span[0]):
        return bare.start(), bare.end(), bare.group(1)
    return None


def extract_answer(value: object, answer_format: str) -> str | None:
    """The gold answer of one row's answer field, or None when it cannot be extracted."""
    if answer_format == "raw":
        return _as_text(value)
    if answer_format == "list_first":
        text = _as_text(_first(value))
        return None if text is None else _strip_dollars(text) or None
    text = _as_text(value)
    if text is None:
        return None
    if answer_format == "gsm8k":
        cut = text.rfind(_GSM8K_MARK)
        if cut < 0:
            return None
        return text[cut + len(_GSM8K_MARK) :].replace(",", "").strip() or None
    if answer_format == "boxed":
        box = _last_box(text)
        return None if box is None else box[2].strip() or None
    raise ValueError(f"unknown answer_format {answer_format!r}; allowed {ANSWER_FORMATS}")


def build_solution(value: object, answer: str, answer_format: str) -> str:
    """The supervised target: the worked solution (if any) ending in ``\\boxed{answer}``."""
    text = _as_text(_first(value))
    boxed_answer = f"\\boxed{{{answer}}}"
    if text is None:
        return boxed_answer
    if answer_format == "gsm8k":
        cut = text.rfind(_GSM8K_MARK)
        text = text[:cut] if cut >= 0 else text
        text = _CALCULATOR_NOTE.sub("", text)
    text = text.replace("\\fbox{", _BOXED)
    box = _last_box(text)
    if box is not None:
        start, end, content = box
        text = text[:start] + content + text[end:]
    text = text.strip()
    return f"{text} {boxed_answer}" if text else boxed_answer
