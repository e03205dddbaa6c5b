"""Countdown: reach a target with + - * / and parentheses over given numbers, each used at most
once (or exactly once with ``use_all``). Solvable by construction, checked by exact evaluation.

Problems are drawn per index from an RNG seeded by (seed, split, index, attempt), like the
arithmetic task, and the train/test split partitions the question space by a stable hash of the
question text. The question lists the numbers in ascending order, so a question is fixed by its
number multiset and target and no reordering of a held-out question can appear in training.

Formats (all printable ASCII, so they fit the char tokenizer):

* question: ``"1 3 5 8 -> 24"`` (numbers ascending, then `` -> `` and the target);
* gold answer (``Problem.answer``): ``"<target>|<n1>,<n2>,...[|all]"``, numbers ascending, e.g.
  ``"24|1,3,5,8"``; the ``|all`` suffix means every number must be used exactly once;
* solution: steps then the boxed expression, e.g. ``"8-5=3, 3*8=24. \\boxed{(8-5)*8}"``.

`check_countdown(answer, gold)` takes the *extracted* boxed content (e.g. ``"(8-5)*8"``) and the
gold string; it is pure, top-level (picklable) and bounded in time and memory on any input.
"""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

from tempo.config_error import ConfigError
from tempo.data.generated import GeneratedTask, _is_int
from tempo.data.problem import Problem

MAX_ANSWER_CHARS = 200  # longer answers are rejected before parsing
MAX_MAGNITUDE = 10**12  # any literal or intermediate (numerator/denominator) above this: reject
MAX_NUMBERS = 10  # most numbers per question (keeps expressions far below MAX_ANSWER_CHARS)
MAX_NUMBER_VALUE = 10**6  # largest allowed number_max / target_max
_LATEX = (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"))
_ALLOWED_CHARS = re.compile(r"[0-9+\-*/() ]+")
_GOLD = re.compile(r"(\d+)\|(\d+(?:,\d+)*)(\|all)?")
_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


class _Reject(Exception):
    """An answer that is not an admissible countdown expression."""


def gold_answer(target: int, numbers: list[int], use_all: bool) -> str:
    """Encode the gold string, e.g. ``gold_answer(24, [8, 1, 5, 3], False) == "24|1,3,5,8"``."""
    body = f"{target}|{','.join(str(n) for n in sorted(numbers))}"
    return body + "|all" if use_all else body


def parse_gold(gold: str) -> tuple[int, list[int], bool]:
    """Decode a gold string into (target, numbers, use_all); raises ValueError if malformed."""
    match = _GOLD.fullmatch(gold) if isinstance(gold, str) else None
    if match is None:
        raise ValueError(f"not a countdown gold answer: {gold!r}")
    return int(match[1]), [int(n) for n in match[2].split(",")], match[3] is not None


def _bounded(value: Fraction) -> Fraction:
    if abs(value.numerator) > MAX_MAGNITUDE or value.denominator > MAX_MAGNITUDE:
        raise _Reject
    return value


def _evaluate(node: ast.AST, literals: list[int]) -> Fraction:
    """Exact value of an int-literal / + - * / tree; collects literals; rejects anything else."""
    if isinstance(node, ast.Constant):
        value = node.value
        if type(value) is not int or value > MAX_MAGNITUDE:
            raise _Reject
        literals.append(value)
        return Fraction(value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left = _evaluate(node.left, literals)
        right = _evaluate(node.right, literals)
        op = _BINOPS[type(node.op)]
        if op == "+":
            return _bounded(left + right)
        if op == "-":
            return _bounded(left - right)
        if op == "*":
            return _bounded(left * right)
        if right == 0:
            raise _Reject
        return _bounded(left / right)
    raise _Reject  # names, calls, unary ops, **, //, %, comparisons, ...


def evaluate_expression(expression: str) -> tuple[Fraction, list[int]] | None:
    """(exact value, literals used) of an admissible expression, or None if it is not one."""
    if not isinstance(expression, str) or len(expression) > MAX_ANSWER_CHARS:
        return None
    for latex, op in _LATEX:
        expression = expression.replace(latex, op)
    expression = expression.strip()
    if not expression or not _ALLOWED_CHARS.fullmatch(expression):
        return None
    try:
        tree = ast.parse(expression, mode="eval")
        literals: list[int] = []
        value = _evaluate(tree.body, literals)
    except (_Reject, SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return value, literals


def check_countdown(answer: str, gold: str) -> bool:
    """True iff `answer` is an expression over the gold numbers that equals the gold target.

    `answer` is the extracted final answer (e.g. the content of ``\\boxed{...}``); only
    non-negative int literals, binary + - * /, parentheses and spaces are admitted (``\\times``,
    ``\\cdot``, ``\\div`` are read as * and /); no unary minus. Each literal consumes one copy of
    a given number (all copies, exactly, when the gold ends in ``|all``). Evaluation is exact
    (Fraction); division by zero, over-long input (> MAX_ANSWER_CHARS) or any magnitude above
    MAX_MAGNITUDE gives False. A malformed `gold` raises ValueError (it is ours, not the model's).
    """
    target, numbers, use_all = parse_gold(gold)
    result = evaluate_expression(answer)
    if result is None:
        return False
    value, literals = result
    if value != target:
        return False
    used, given = Counter(literals), Counter(numbers)
    if use_all:
        return used == given
    return all(count <= given[n] for n, count in used.items())


@dataclass(frozen=True)
class _Node:
    """A sub-expression of a generated solution: value, text, precedence (1 +-, 2 */, 3 atom)."""

    value: int
    text: str
    prec: int


def _wrap(node: _Node, parens: bool) -> str:
    return f"({node.text})" if parens else node.text


def _combine(a: _Node, op: str, b: _Node) -> _Node:
    """`a op b` with the fewest parentheses that keep the tree's evaluation order exact."""
    if op == "+":
        return _Node(a.value + b.value, f"{a.text}+{b.text}", 1)
    if op == "-":
        return _Node(a.value - b.value, f"{a.text}-{_wrap(b, b.prec <= 1)}", 1)
    if op == "*":
        return _Node(a.value * b.value, f"{_wrap(a, a.prec < 2)}*{_wrap(b, b.prec < 2)}", 2)
    return _Node(a.value // b.value, f"{_wrap(a, a.prec < 2)}/{_wrap(b, b.prec < 3)}", 2)


class CountdownTask(GeneratedTask):
    """Generator of countdown problems: k numbers, a target reachable from (a subset of) them.

    Numbers are drawn from [number_min, number_max], k from [min_numbers, max_numbers]. A random
    expression tree over all of them (``use_all``) or over a random subset of >= 2 of them
    combines two pending sub-expressions at a time with + - * or exact / such that every
    intermediate is an integer >= 0; a draw whose value is not in 1..target_max (or, without
    ``use_all``, equals one of the numbers, so a bare number would solve it) is redrawn.
    """

    rng_prefix = "countdown|"

    answer_check = staticmethod(check_countdown)  # the runner's checker for this task

    def __init__(
        self,
        *,
        name: str = "countdown",
        seed: int = 0,
        min_numbers: int = 3,
        max_numbers: int = 4,
        number_min: int = 1,
        number_max: int = 20,
        target_max: int = 100,
        num_test: int = 200,
        test_fraction: float = 0.1,
        prompt_template: str = "{question}=",
        use_all: bool = False,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError("name", name, "a non-empty string")
        if not _is_int(seed):
            raise ConfigError("seed", seed, "an integer")
        if not _is_int(min_numbers) or not 2 <= min_numbers <= MAX_NUMBERS:
            raise ConfigError("min_numbers", min_numbers, f"an integer in 2..{MAX_NUMBERS}")
        if not _is_int(max_numbers) or not min_numbers <= max_numbers <= MAX_NUMBERS:
            raise ConfigError(
                "max_numbers", max_numbers, f"an integer in min_numbers..{MAX_NUMBERS}"
            )
        if not _is_int(number_min) or number_min < 0:
            raise ConfigError("number_min", number_min, "an integer >= 0")
        if not _is_int(number_max) or not max(1, number_min) <= number_max <= MAX_NUMBER_VALUE:
            raise ConfigError(
                "number_max",
                number_max,
                f"an integer >= 1 and >= number_min, <= {MAX_NUMBER_VALUE}",
            )
        if not _is_int(target_max) or not 1 <= target_max <= MAX_NUMBER_VALUE:
            raise ConfigError("target_max", target_max, f"an integer in 1..{MAX_NUMBER_VALUE}")
        if not _is_int(num_test) or num_test < 1:
            raise ConfigError("num_test", num_test, "an integer >= 1")
        if not isinstance(test_fraction, (int, float)) or isinstance(test_fraction, bool):
            raise ConfigError("test_fraction", test_fraction, "a number strictly between 0 and 1")
        if not 0.0 < test_fraction < 1.0:
            raise ConfigError("test_fraction", test_fraction, "a number strictly between 0 and 1")
        if not isinstance(prompt_template, str) or "{question}" not in prompt_template:
            raise ConfigError("prompt_template", prompt_template, "a string containing {question}")
        try:
            prompt_template.format(question="1 2 -> 3")
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(
                "prompt_template", prompt_template, "a format string whose only field is {question}"
            ) from err
        if not isinstance(use_all, bool):
            raise ConfigError("use_all", use_all, "true or false")

        self.name = name
        self.seed = seed
        self.min_numbers = min_numbers
        self.max_numbers = max_numbers
        self.number_min = number_min
        self.number_max = number_max
        self.target_max = target_max
        self.num_test = num_test
        self.test_fraction = float(test_fraction)
        self.prompt_template = prompt_template
        self.use_all = use_all
        self._test_cache: list[Problem] | None = None

    def __repr__(self) -> str:
        return (
            f"CountdownTask(name={self.name!r}, seed={self.seed}"
            f", numbers={self.min_numbers}..{self.max_numbers}"
            f", number_range={self.number_min}..{self.number_max}"
            f", target_max={self.target_max}, use_all={self.use_all}"
            f", num_test={self.num_test}, test_fraction={self.test_fraction}"
            f", prompt_template={self.prompt_template!r})"
        )

    def _candidate(self, rng: random.Random) -> tuple[str, str, str] | None:
        drawn = self._draw(rng)
        if drawn is None:
            return None
        numbers, target, steps, expression = drawn
        question = f"{' '.join(str(n) for n in numbers)} -> {target}"
        solution = f"{', '.join(steps)}. \\boxed{{{expression}}}"
        return question, gold_answer(target, numbers, self.use_all), solution

    def _draw(self, rng: random.Random) -> tuple[list[int], int, list[str], str] | None:
        """(sorted numbers, target, steps, expression), or None if the draw misses 1..target_max."""
        k = rng.randint(self.min_numbers, self.max_numbers)
        numbers = [rng.randint(self.number_min, self.number_max) for _ in range(k)]
        used = k if self.use_all else rng.randint(2, k)
        pool = [_Node(n, str(n), 3) for n in rng.sample(numbers, used)]
        steps: list[str] = []
        while len(pool) > 1:
            a = pool.pop(rng.randrange(len(pool)))
            b = pool.pop(rng.randrange(len(pool)))
            ops = ["+", "*"]
            if a.value != b.value:  # x-x=0 is legal but a wasted step
                ops.append("-")
            if b.value != 0 and a.value % b.value == 0 or a.value != 0 and b.value % a.value == 0:
                ops.append("/")
            op = rng.choice(ops)
            if op == "-" and a.value < b.value:
                a, b = b, a
            if op == "/" and (b.value == 0 or a.value % b.value != 0):
                a, b = b, a
            node = _combine(a, op, b)
            if node.value > MAX_MAGNITUDE:
                return None
            steps.append(f"{a.value}{op}{b.value}={node.value}")
            pool.append(node)
        root = pool[0]
        if not 1 <= root.value <= self.target_max:
            return None
        if not self.use_all and root.value in numbers:  # answerable by one bare number
            return None
        checked = evaluate_expression(root.text)  # the gold must pass the checker's own bounds
        if checked is None or checked[0] != root.value:
            return None
        return sorted(numbers), root.value, steps, root.text
