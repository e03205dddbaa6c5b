"""Multiple-choice benchmarks (ECQA, GPQA-Diamond, MMLU-Pro): lettered options, letter golds.

`MultipleChoiceTask` is a `BenchmarkTask` (same sources, splits, filters, holdout and one-line
ConfigErrors); only the way a row becomes a problem differs:

* options come from one list column (``options_field``, e.g. MMLU-Pro ``options``) or from
  several columns (``option_fields``, e.g. ECQA ``q_op1``..``q_op5``, GPQA ``Correct Answer``
  and ``Incorrect Answer 1..3``); with ``shuffle_options`` they are reordered by a permutation
  seeded by ``blake2b(shuffle_seed|question)``, the same on every run and row order;
* the correct option is named by ``answer_format``: ``letter`` (``"C"``), ``index`` (0-based)
  or ``text`` (the answer field equals exactly one option, compared as `normalize_text` does);
* ``Problem.question`` is the question followed by one ``"A. <option>"`` line per option (the
  prompt template's ``{question}``); ``Problem.answer`` is the correct letter, followed by
  ``". <option text>"`` when ``match_option_text`` is on and that text is unambiguous (no other
  option normalizes to it); the supervised target is the explanation (``solution_field``, if
  any) ending in ``\\boxed{<letter>}``.

Rows with a missing question, fewer than 2 or more than 26 options, an empty option, or a gold
that names no option (or, for ``text``, several) are skipped and counted (``skipped``).

`check_choice(answer, gold)` (the task's ``answer_check``, run by the reward scorer in its
timed workers instead of Math-Verify) reads one letter from the extracted answer; see its
docstring for the accepted forms. It is pure, top-level (picklable), uses only linear regular
expressions and rejects answers longer than ``MAX_CHOICE_CHARS``.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from typing import Any

from tempo.config_error import ConfigError
from tempo.data.answer_formats import build_solution
from tempo.data.benchmark import BenchmarkTask, _is_int, _optional_str
from tempo.data.problem import Problem

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MAX_CHOICE_CHARS = 1000  # longer extracted answers score False without being read (ours)
CHOICE_FORMATS = ("letter", "index", "text")
CHOICE_PROMPT = (
    "{question}\nPlease reason step by step, and put the letter of the correct option within"
    " \\boxed{}.\n"
)

# LaTeX text wrappers unwrapped before reading (innermost first, a few passes).
_WRAPPER = re.compile(
    r"\\(?:text|textbf|textit|textrm|textsf|texttt|textnormal|mathrm|mathbf|mathit|mathsf"
    r"|mathtt|mbox|operatorname|boxed|fbox)\s*\{([^{}]*)\}"
)
_MATH_DELIMITERS = re.compile(r"\\[()\[\]]|\$|\*\*")
_BARE = re.compile(r"[(\[]?\s*([A-Za-z])\s*[)\]]?\s*[.:]?")
_LIST_SEPARATOR = re.compile(r"\s*(?:,|/|&|;|\s(?i:or|and)\s)\s*")
# "C) text", "(C) text", "[C] text", "C. text", "C: text", "c) text", "(c) text"
_LEAD = re.compile(r"(?:[(\[]([A-Za-z])[)\]][.:]?|([A-Z])[.:)]|([a-z])\))\s+(\S.*)", re.DOTALL)
_MARKER = re.compile(r"(?:^|\s)\(?([A-Z])\)\s")  # "D) " or "(D) " inside option text
_LETTER_TOKEN = r"[(\[]?(?<![A-Za-z0-9])[A-Z](?![A-Za-z0-9])[)\]]?"
_PHRASE = re.compile(
    r"(?i:\b(?:answer|option|choice)\b)\s*(?i:is\b|:|=)?\s*(?i:option\b|choice\b)?\s*"
    rf"({_LETTER_TOKEN}(?:\s*(?:,|/|&|(?i:or|and)\b)\s*{_LETTER_TOKEN})*)"
)
_TOKEN = re.compile(r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9])")
_GOLD = re.compile(r"([A-Z])(?:\. (.+))?", re.DOTALL)
_GOLD_LETTER = re.compile(r"\(?([A-Za-z])\)?\.?")


def _unwrap(text: str) -> str:
    """`text` without LaTeX text wrappers, math delimiters and markdown bold, spaces collapsed."""
    for _ in range(4):
        unwrapped = _WRAPPER.sub(r"\1", text)
        if unwrapped == text:
            break
        text = unwrapped
    return " ".join(_MATH_DELIMITERS.sub("", text).split())


def normalize_text(text: str) -> str:
    """Comparison key of an option text: unwrapped, casefolded, spaces collapsed, no final
    period (``"\\text{Paris}."`` and ``"paris"`` compare equal)."""
    return _unwrap(text).casefold().rstrip(". ").strip()


def _letters(answer: str) -> set[str] | None:
    """The option letters `answer` names: a set (several = ambiguous), or None if none."""
    bare = _BARE.fullmatch(answer)
    if bare:
        return {bare[1].upper()}
    parts = [_BARE.fullmatch(part) for part in _LIST_SEPARATOR.split(answer)]
    if len(parts) > 1 and all(parts):
        return {part[1].upper() for part in parts if part}
    lead = _LEAD.fullmatch(answer)
    if lead:
        letter = next(group for group in lead.groups()[:3] if group).upper()
        return {letter, *(m[1] for m in _MARKER.finditer(" " + lead[4] + " "))}
    found: set[str] = set()
    for match in _PHRASE.finditer(answer):
        found.update(_TOKEN.findall(match[1]))
    return found or None


def parse_choice_gold(gold: str) -> tuple[str, str | None]:
    """(letter, option text or None) of a gold string ``"C"`` / ``"C. <text>"``; raises
    ValueError if malformed (golds are ours, not the model's)."""
    match = _GOLD.fullmatch(gold.strip()) if isinstance(gold, str) else None
    if match is None:
        raise ValueError(f"not a multiple-choice gold answer: {gold!r}")
    return match[1], match[2]


def check_choice(answer: str, gold: str) -> bool:
    """True iff the extracted `answer` names the gold option.

    `gold` is ``"C"`` or ``"C. <correct option text>"``. The answer (e.g. the content of
    ``\\boxed{}``) is read after unwrapping ``\\text{}``-like wrappers, ``$``, ``\\(\\)`` and
    ``**``: a bare letter in either case (``C``, ``(C)``, ``C.``, ``[c]``); a list of letters
    (``A, C``, ``B or D``: right only if all name the same one); a letter opening the option
    text (``C) text``, ``(C) text``, ``C. text``, ``C: text``; a second ``(D)``/``D)`` marker in
    the text makes it ambiguous); a phrase (``The answer is C``, ``Answer: (C)``, ``option C``,
    every such phrase counted). Two different letters are wrong. Only when no letter is found is
    the answer compared with the gold's option text (`normalize_text` on both), so an option
    whose text is itself a letter is always read as a letter. Answers longer than
    MAX_CHOICE_CHARS, empty or not strings are wrong.
    """
    letter, text = parse_choice_gold(gold)
    if not isinstance(answer, str) or len(answer) > MAX_CHOICE_CHARS:
        return False
    cleaned = _unwrap(answer)
    if not cleaned:
        return False
    named = _letters(cleaned)
    if named is not None:
        return named == {letter}
    return text is not None and normalize_text(cleaned) == normalize_text(text)


def _option_text(value: object) -> str | None:
    """One option as stripped text (integral floats without ``.0``); None if missing/empty."""
    if value is None or isinstance(value, (bool, bytes, dict, list, tuple)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def option_order(question: str, count: int, seed: int) -> list[int]:
    """The shuffled order of `count` options: a permutation seeded by blake2b(seed|question)."""
    key = f"{seed}|{question}".encode()
    order = list(range(count))
    random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "big")).shuffle(
        order
    )
    return order


class MultipleChoiceTask(BenchmarkTask):
    """A multiple-choice benchmark; see the module docstring. Takes every `BenchmarkTask`
    argument plus `options_field` or `option_fields`, `shuffle_options`, `shuffle_seed` and
    `match_option_text`; `answer_format` is one of letter | index | text."""

    ANSWER_FORMATS = CHOICE_FORMATS
    answer_check = staticmethod(check_choice)  # the scorer's check for this task's answers

    def __init__(
        self,
        *,
        options_field: str | None = None,
        option_fields: Sequence[str] | None = None,
        shuffle_options: bool = False,
        shuffle_seed: int = 0,
        match_option_text: bool = True,
        question_field: str = "question",
        answer_format: str = "letter",
        prompt_template: str = CHOICE_PROMPT,
        **kwargs: Any,
    ) -> None:
        self.options_field = _optional_str("options_field", options_field)
        self.option_fields = self._check_option_fields(option_fields)
        if (self.options_field is None) == (self.option_fields is None):
            raise ConfigError(
                "options_field",
                options_field,
                "exactly one of options_field (one list column) and option_fields (a list of"
                f" columns); got option_fields={option_fields!r}",
            )
        if not isinstance(shuffle_options, bool):
            raise ConfigError("shuffle_options", shuffle_options, "true or false")
        self.shuffle_options = shuffle_options
        if not _is_int(shuffle_seed):
            raise ConfigError("shuffle_seed", shuffle_seed, "an integer")
        self.shuffle_seed = shuffle_seed
        if not isinstance(match_option_text, bool):
            raise ConfigError("match_option_text", match_option_text, "true or false")
        self.match_option_text = match_option_text
        super().__init__(
            question_field=question_field,
            answer_format=answer_format,
            prompt_template=prompt_template,
            **kwargs,
        )

    @staticmethod
    def _check_option_fields(fields: object) -> list[str] | None:
        if fields is None:
            return None
        allowed = f"a list of 2 to {len(LETTERS)} distinct column names, or null"
        if isinstance(fields, str) or not isinstance(fields, Sequence):
            raise ConfigError("option_fields", fields, allowed)
        names = list(fields)
        if (
            not 2 <= len(names) <= len(LETTERS)
            or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)
        ):
            raise ConfigError("option_fields", names, allowed)
        return names

    def __repr__(self) -> str:
        options = self.options_field or self.option_fields
        base = super().__repr__()[:-1].replace("BenchmarkTask(", "MultipleChoiceTask(", 1)
        return (
            f"{base}, options={options}, shuffle={self.shuffle_options}/{self.shuffle_seed}"
            f", match_option_text={self.match_option_text})"
        )

    # ----------------------------------------------------------------- rows -> problems

    def _row_columns(self) -> list[tuple[str, str | None]]:
        columns = super()._row_columns()
        if self.options_field is not None:
            return [*columns, ("options_field", self.options_field)]
        return [*columns, *((f"option_fields[{i}]", c) for i, c in enumerate(self.option_fields))]

    def _options(self, row: dict[str, Any]) -> list[str] | None:
        if self.options_field is not None:
            values = row[self.options_field]
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                return None
        else:
            values = [row[column] for column in self.option_fields]
        texts = [_option_text(value) for value in values]
        if not 2 <= len(texts) <= len(LETTERS) or any(t is None for t in texts):
            return None
        return texts

    def _gold_index(self, value: object, options: list[str]) -> int | None:
        if self.answer_format == "letter":
            match = _GOLD_LETTER.fullmatch(value.strip()) if isinstance(value, str) else None
            index = LETTERS.index(match[1].upper()) if match else None
        elif self.answer_format == "index":
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value.strip())
            index = value if _is_int(value) else None
        else:
            text = _option_text(value)
            key = normalize_text(text) if text else None
            hits = [i for i, option in enumerate(options) if normalize_text(option) == key]
            index = hits[0] if key and len(hits) == 1 else None
        return index if index is not None and 0 <= index < len(options) else None

    def _row_problem(self, problem_id: str, row: dict[str, Any]) -> Problem | None:
        stem = row[self.question_field]
        options = self._options(row)
        if not isinstance(stem, str) or not stem.strip() or options is None:
            return None
        stem = stem.strip()
        correct = self._gold_index(row[self.answer_field], options)
        if correct is None:
            return None
        if self.shuffle_options:
            order = option_order(stem, len(options), self.shuffle_seed)
            options, correct = [options[i] for i in order], order.index(correct)
        letter = LETTERS[correct]
        keys = [normalize_text(option) for option in options]
        answer = letter
        if self.match_option_text and keys[correct] and keys.count(keys[correct]) == 1:
            answer = f"{letter}. {' '.join(options[correct].split())}"
        lines = "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(options))
        question = f"{stem}\n{lines}"
        explanation = row[self.solution_field] if self.solution_field else None
        return Problem(
            id=problem_id,
            question=question,
            prompt=self.prompt_template.replace("{question}", question),
            answer=answer,
            solution=build_solution(explanation, letter, "raw"),
            columns=row,
        )
