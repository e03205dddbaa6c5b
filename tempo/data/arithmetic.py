"""Seeded multi-step integer arithmetic: an embedded task with exact answers and worked solutions.

Problems are drawn per index and split by a stable hash of the question text (see
`tempo.data.generated`), so any problem is reproducible in O(1) and the splits are disjoint.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from tempo.config_error import ConfigError
from tempo.data.generated import GeneratedTask, _is_int, question_unit_hash
from tempo.data.problem import Problem

ALLOWED_OPERATIONS = ("+", "-", "*", "/")
_MUL_DIV = ("*", "/")
_TOKEN = re.compile(r"\d+|[+\-*/]")


def parse(question: str) -> tuple[list[int], list[str]]:
    """Split `a op b op c ...` (non-negative integer literals, no spaces) into operands, ops."""
    tokens = _TOKEN.findall(question)
    if "".join(tokens) != question or len(tokens) % 2 == 0:
        raise ValueError(f"not an arithmetic question: {question!r}")
    values, ops = tokens[0::2], tokens[1::2]
    if not all(v.isdigit() for v in values) or any(o.isdigit() for o in ops):
        raise ValueError(f"not an arithmetic question: {question!r}")
    return [int(v) for v in values], ops


def _apply(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0 or a % b != 0:
        raise ValueError(f"inexact division {a}/{b}")
    return a // b


def reduction_steps(question: str) -> list[tuple[int, str, int, int]]:
    """The (a, op, b, result) steps that evaluate `question` by precedence, left to right.

    Each step reduces the leftmost `*`/`/` if any remain, else the leftmost `+`/`-`.
    """
    values, ops = parse(question)
    steps = []
    while ops:
        i = next((k for k, op in enumerate(ops) if op in _MUL_DIV), 0)
        a, op, b = values[i], ops[i], values[i + 1]
        c = _apply(a, op, b)
        steps.append((a, op, b, c))
        values[i : i + 2] = [c]
        del ops[i]
    return steps


def answer_of(question: str) -> int:
    """Exact value of `question` with standard precedence; raises on inexact division."""
    steps = reduction_steps(question)
    return steps[-1][3] if steps else parse(question)[0][0]


def solution_of(question: str) -> str:
    """Worked solution, e.g. `4*5=20, 3+20=23, 23-2=21. \\boxed{21}` for `3+4*5-2`."""
    steps = reduction_steps(question)
    body = ", ".join(f"{a}{op}{b}={c}" for a, op, b, c in steps)
    return f"{body}. \\boxed{{{answer_of(question)}}}"


def direct_solution_of(question: str) -> str:
    """The answer without working, e.g. `\\boxed{21}` for `3+4*5-2`."""
    return f"\\boxed{{{answer_of(question)}}}"


def unboxed_solution_of(question: str) -> str:
    """The worked steps without the boxed answer, e.g. `4*5=20, 3+20=23, 23-2=21.`"""
    return solution_of(question).split(" \\boxed{", 1)[0]


def answers_directly(question: str, direct_fraction: float) -> bool:
    """Whether `question`'s warm-start target skips the working: a stable hash choice
    (salted, so independent of the train/test split) for a `direct_fraction` share."""
    return question_unit_hash(f"direct|{question}") < direct_fraction


def leaves_unboxed(question: str, unboxed_fraction: float) -> bool:
    """Whether `question`'s warm-start target ends without `\\boxed{}` (a salted hash choice,
    independent of the split and of `answers_directly`)."""
    return question_unit_hash(f"unboxed|{question}") < unboxed_fraction


class ArithmeticTask(GeneratedTask):
    """Generator of integer arithmetic problems with 1..n binary operations and exact answers.

    `+`/`-` operands come from [operand_min, operand_max]; operands of `*` from [0, mul_max];
    `/` is exact division with divisors from [2, mul_max] (a dividend that opens its term is
    drawn as quotient*divisor, a running product is divided by one of its divisors).
    """

    def __init__(
        self,
        *,
        name: str = "arithmetic",
        seed: int = 0,
        min_ops: int = 1,
        max_ops: int = 2,
        operations: Sequence[str] = ("+", "-", "*"),
        operand_min: int = 0,
        operand_max: int = 50,
        mul_max: int = 9,
        num_test: int = 200,
        test_fraction: float = 0.1,
        prompt_template: str = "{question}=",
        direct_fraction: float = 0.0,
        unboxed_fraction: float = 0.0,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError("name", name, "a non-empty string")
        if not _is_int(seed):
            raise ConfigError("seed", seed, "an integer")
        if not _is_int(min_ops) or min_ops < 1:
            raise ConfigError("min_ops", min_ops, "an integer >= 1")
        if not _is_int(max_ops) or max_ops < min_ops:
            raise ConfigError("max_ops", max_ops, "an integer >= 1 and >= min_ops")
        ops = tuple(operations) if not isinstance(operations, str) else None
        if not ops or any(op not in ALLOWED_OPERATIONS for op in ops) or len(set(ops)) != len(ops):
            raise ConfigError(
                "operations",
                operations,
                f"a non-empty list of distinct items of {ALLOWED_OPERATIONS}",
            )
        if not _is_int(operand_min) or operand_min < 0:
            raise ConfigError("operand_min", operand_min, "an integer >= 0")
        if not _is_int(operand_max) or operand_max < operand_min:
            raise ConfigError("operand_max", operand_max, "an integer >= operand_min")
        min_mul = 2 if "/" in ops else 0
        if not _is_int(mul_max) or mul_max < min_mul:
            raise ConfigError("mul_max", mul_max, "an integer >= 0 (>= 2 when '/' is used)")
        if not _is_int(num_test) or num_test < 1:
            raise ConfigError("num_test", num_test, "an integer >= 1")
        if not isinstance(test_fraction, (int, float)) or not 0.0 < test_fraction < 1.0:
            raise ConfigError("test_fraction", test_fraction, "a number strictly between 0 and 1")
        if not isinstance(prompt_template, str) or "{question}" not in prompt_template:
            raise ConfigError("prompt_template", prompt_template, "a string containing {question}")
        try:
            prompt_template.format(question="1+1")
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(
                "prompt_template", prompt_template, "a format string whose only field is {question}"
            ) from err

        if (
            isinstance(direct_fraction, bool)
            or not isinstance(direct_fraction, (int, float))
            or not 0.0 <= direct_fraction <= 1.0
        ):
            raise ConfigError("direct_fraction", direct_fraction, "a number in [0, 1]")
        if (
            isinstance(unboxed_fraction, bool)
            or not isinstance(unboxed_fraction, (int, float))
            or not 0.0 <= unboxed_fraction <= 1.0
        ):
            raise ConfigError("unboxed_fraction", unboxed_fraction, "a number in [0, 1]")
        if direct_fraction and unboxed_fraction:
            raise ConfigError(
                "unboxed_fraction",
                unboxed_fraction,
                "0 when direct_fraction is set (one style knob)",
            )

        self.name = name
        self.seed = seed
        self.direct_fraction = float(direct_fraction)
        self.unboxed_fraction = float(unboxed_fraction)
        self.min_ops = min_ops
        self.max_ops = max_ops
        self.operations = ops
        self.operand_min = operand_min
        self.operand_max = operand_max
        self.mul_max = mul_max
        self.num_test = num_test
        self.test_fraction = float(test_fraction)
        self.prompt_template = prompt_template
        self._test_cache: list[Problem] | None = None

    def __repr__(self) -> str:
        return (
            f"ArithmeticTask(name={self.name!r}, seed={self.seed}"
            f", ops={self.min_ops}..{self.max_ops}"
            f", operations={self.operations}, operands={self.operand_min}..{self.operand_max}"
            f", mul_max={self.mul_max}, num_test={self.num_test}"
            f", test_fraction={self.test_fraction}, direct_fraction={self.direct_fraction}"
            f", unboxed_fraction={self.unboxed_fraction})"
        )

    def make_problem(self, question: str, problem_id: str) -> Problem:
        """Wrap a question with its prompt, canonical answer and worked solution."""
        return Problem(
            id=problem_id,
            question=question,
            prompt=self.prompt_template.format(question=question),
            answer=str(answer_of(question)),
            solution=self.solution(question),
        )

    def solution(self, question: str) -> str:
        """The warm-start target: worked steps and the boxed answer; for a `direct_fraction`
        share of the questions the boxed answer alone, for an `unboxed_fraction` share the
        steps without the box (which the boxed reward scores 0). Either makes the warm-started
        policy choose between two styles, one rarer and better: something RL has to find."""
        if self.direct_fraction and answers_directly(question, self.direct_fraction):
            return direct_solution_of(question)
        if self.unboxed_fraction and leaves_unboxed(question, self.unboxed_fraction):
            return unboxed_solution_of(question)
        return solution_of(question)

    def _candidate(self, rng: random.Random) -> tuple[str, str, str] | None:
        question = self._question(rng)
        if question is None:
            return None
        return question, str(answer_of(question)), self.solution(question)

    def _question(self, rng: random.Random) -> str | None:
        """One random question, or None when an exact division is impossible (v/d with v=1)."""
        n_ops = rng.randint(self.min_ops, self.max_ops)
        ops = [rng.choice(self.operations) for _ in range(n_ops)]
        operands: list[int] = []
        i = 0
        while i <= n_ops:  # one term per iteration: a maximal run of * and / ops
            j = i
            while j < n_ops and ops[j] in _MUL_DIV:
                j += 1
            term = self._term(rng, ops[i:j])
            if term is None:
                return None
            operands.extend(term)
            i = j + 1
        parts = [str(operands[0])]
        for op, value in zip(ops, operands[1:], strict=True):
            parts += [op, str(value)]
        return "".join(parts)

    def _term(self, rng: random.Random, ops: list[str]) -> list[int] | None:
        """Operands of one product/quotient term; a lone operand comes from the +/- range."""
        if not ops:
            return [rng.randint(self.operand_min, self.operand_max)]
        if ops[0] == "/":
            divisor = rng.randint(2, self.mul_max)
            factors = [rng.randint(0, self.mul_max) * divisor, divisor]
            value = factors[0] // divisor
        else:
            factors = [rng.randint(0, self.mul_max), rng.randint(0, self.mul_max)]
            value = factors[0] * factors[1]
        for op in ops[1:]:
            if op == "*":
                factor = rng.randint(0, self.mul_max)
                value *= factor
            else:
                divisors = [d for d in range(2, self.mul_max + 1) if value % d == 0]
                if not divisors:
                    return None
                factor = rng.choice(divisors)
                value //= factor
            factors.append(factor)
        return factors
