"""A seeded generator of hostile completions for fuzzing the reward (see ``test_hostile.py`` and
``experiments/bench/reward_fuzz.py``).

Each `Hostile` item is a completion, a gold answer and flags. Math items are drawn round-robin
over the categories in `MATH_CATEGORIES` (huge powers, factorial towers, deep nesting, unclosed
boxes, megabyte outputs, malformed LaTeX, control characters, non-ASCII text, huge integers,
sympy-hostile expressions, random noise), countdown items over `COUNTDOWN_CATEGORIES`; the same
seed always gives the same items. ``hangs`` marks inputs on which Math-Verify runs for hours
(a tower like ``9^{9^{9^{9}}}``), so any timeout of seconds must fire.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

MATH_GOLDS = ("42", "\\frac{1}{2}", "x^2+1")
COUNTDOWN_GOLDS = ("24|1,3,5,8", "100|2,5,10|all", "10|1,2,3,4", "50|5,10,25,50")
MEGABYTE = 1 << 20


@dataclass(frozen=True)
class Hostile:
    category: str
    completion: str
    gold: str
    hangs: bool = False  # Math-Verify would run for hours on it: a timeout must fire


def boxed(answer: str) -> str:
    return f"\\boxed{{{answer}}}"


def _around(rng: random.Random, answer: str) -> str:
    """``answer`` boxed, with some of the usual prose around it (or none)."""
    before = rng.choice(["", "The answer is ", "So we get\n\n", "Therefore, "])
    after = rng.choice(["", ".", " $\\blacksquare$", "\n"])
    return before + boxed(answer) + after


# ----------------------------------------------------------------------- math categories
# Each returns (completion, hangs).

_HANGING_POWERS = (
    "9^{9^{9^{9}}}",
    "9^{9^{9}}",
    "10^{10^{10}}",
    "e^{e^{e^{e^{e}}}}",
)


def _power(rng: random.Random) -> tuple[str, bool]:
    if rng.random() < 0.1:
        return _around(rng, rng.choice(_HANGING_POWERS)), True
    a, b, c = (rng.randint(2, 5) for _ in range(3))
    answer = rng.choice(
        [
            "10**10**10",
            "2**2**2**2**2",
            "2^{2^{2^{2^{2^{30}}}}}",  # ends in seconds, by a MemoryError at the worker's cap
            f"{a}^{{{b}^{{{c}}}}}",
            f"{a}^{b}^{c}",
            f"2^{{{rng.choice([100, 1000, 10_000, 100_000])}}}",
            f"{a}^{{-{b}^{{{c}}}}}",
            f"(-{a})^{{{b}/{c}}}",
            f"{a}^{{{a}^{{{a}}}}} - {a}^{{{a}^{{{a}}}}}",
            "x^{x^{x^{x}}}",
            "^".join(str(rng.randint(2, 9)) for _ in range(rng.randint(3, 8))),
        ]
    )
    return _around(rng, answer), False


_HANGING_FACTORIALS = ("(10^{10})!", "99999999999999!", "\\binom{10^{10}}{10^{5}}", "10^{10}!")


def _factorial(rng: random.Random) -> tuple[str, bool]:
    if rng.random() < 0.1:
        return _around(rng, rng.choice(_HANGING_FACTORIALS)), True
    n = rng.randint(0, 30)
    # Math-Verify reads n!! as (n!)!: small n only (26!! runs for hours).
    answer = rng.choice(
        [f"{n}!", f"({n % 4}!)!", "((3!)!)!", f"{n % 7}!!", f"\\binom{{{n}}}{{{n // 2}}}", "0!"]
    )
    return _around(rng, answer), False


_NESTERS = (("{", "}"), ("(", ")"), ("[", "]"), ("\\sqrt{", "}"), ("\\frac{1}{", "}"))
_NESTERS += (("x^{", "}"), ("\\left(", "\\right)"))


def _nested(rng: random.Random) -> tuple[str, bool]:
    opener, closer = rng.choice(_NESTERS)
    depth = rng.choice([1, 3, 12, 40, 300, 10_000])
    core = opener * depth + rng.choice(["1", "42", "x"]) + closer * depth
    shape = rng.randrange(5)
    if shape == 0:  # balanced, boxed
        return _around(rng, core), False
    if shape == 1:  # never closed
        return boxed(opener * depth + "1"), False
    if shape == 2:  # nesting before a normal final answer
        return core + " " + boxed("42"), False
    if shape == 3:  # 10k raw open braces after the box
        return "\\boxed{" + "{" * 10_000, False
    return "{" * depth + boxed("42") + "}" * depth, False


def _unclosed(rng: random.Random) -> tuple[str, bool]:
    return (
        rng.choice(
            [
                "\\boxed{42",
                "\\boxed{\\frac{1}{2}",
                "\\boxed{" * rng.randint(2, 50_000),
                "\\boxed{42}" + "}" * rng.randint(1, 1000),
                "\\boxed{42\\}",
                "\\boxed",
                "\\boxed{",
                "\\boxed{}" * rng.randint(1, 1000),
                "\\boxed{\\\\}",
                "\\boxed{\\}",
                "\\boxed{x^2+1} then \\boxed{",
                "\\boxed{42} \\boxed{" + "4" * rng.randint(1, 100),
                "\\\\" * rng.randint(1, 1000) + "\\boxed{42}",
            ]
        ),
        False,
    )


def _filler(rng: random.Random, size: int) -> str:
    word = rng.choice(["word {nested} \\alpha ", "so x = 1. ", "\\frac{1}{2}+", "{{}}", "aaaa"])
    return (word * (size // len(word) + 1))[:size]


def _megabyte(rng: random.Random) -> tuple[str, bool]:
    size = rng.randint(MEGABYTE, 2 * MEGABYTE)
    shape = rng.randrange(7)
    if shape == 0:
        return _filler(rng, size), False  # no box at all
    if shape == 1:
        return _filler(rng, size) + boxed("42"), False  # a right answer after a megabyte
    if shape == 2:
        return boxed("9" * size), False  # a megabyte-long number
    if shape == 3:
        return "\\boxed{" + _filler(rng, size), False  # unclosed, scanned to the end
    if shape == 4:
        return boxed(_filler(rng, size)), False  # a megabyte-long boxed answer
    if shape == 5:
        return boxed("\\frac{" * (size // 6)), False
    return boxed("{" * (size // 2) + "}" * (size // 2)), False


_MALFORMED = (
    "\\frac{",
    "\\frac{1}{",
    "\\sqrt[",
    "\\sqrt[3]{",
    "\\left(",
    "\\right)",
    "\\begin{matrix}",
    "\\begin{matrix} 1 & 2 \\\\",
    "\\end{array}",
    "^^^^",
    "____",
    "_{_{_{",
    "\\\\\\\\",
    "$$$",
    "\\over",
    "&&&",
    "\\text{",
    "\\mathrm{}}",
    "%",
    "#",
    "~",
    "\\boxed{\\boxed{}}",
    "\\operatorname{",
    "\\left.\\right.",
    "\\frac{1}{0}",
    "0/0",
    "0^0",
    "\\infty-\\infty",
    "\\log(0)",
    "\\begin{cases}",
    "\\sqrt{-1}",
    "\\frac{}{}",
    "\\dfrac12",
    "1..2",
    "1,,,2",
    "\\,\\;\\!\\quad",
    "\\\\frac",
    "\\undefinedmacro{1}",
    "\\def\\x{\\x}\\x",
    "\\newcommand",
    "\\input{/etc/passwd}",
    "x=",
    "=",
    "\\in\\in",
    "\\pm\\mp",
)


def _malformed(rng: random.Random) -> tuple[str, bool]:
    answer = "".join(rng.choice(_MALFORMED) for _ in range(rng.randint(1, 6)))
    return (_around(rng, answer) if rng.random() < 0.8 else answer), False


_CONTROL = [chr(c) for c in range(0x20)] + ["\x7f"]


def _control(rng: random.Random) -> tuple[str, bool]:
    base = _around(rng, rng.choice(["42", "\\frac{1}{2}", "x^2+1", "41"]))
    chars = list(base)
    for _ in range(rng.randint(1, 20)):
        chars.insert(rng.randrange(len(chars) + 1), rng.choice(_CONTROL))
    if rng.random() < 0.2:
        return "\x00" * rng.randint(1, 10_000) + boxed("\x00"), False
    if rng.random() < 0.2:
        return boxed("\x1b[31m42\x1b[0m"), False
    return "".join(chars), False


_UNICODE = (
    "\u200f42\u202e",  # RTL mark, right-to-left override
    "\u202e24\u202c",
    "\U0001f600",
    "4\u0303\u0304\u0305\u03062",  # combining marks
    "e\u0301" * 50,
    "\ud800",  # lone surrogates: valid in a Python str, not in UTF-8
    "\udfff42\ud83d",
    "\uff14\uff12",  # fullwidth 42
    "\u0664\u0662",  # Arabic-Indic 42
    "\u2074\u00b2",  # superscript 42
    "\u2212 42",  # unicode minus
    "4\u200d2",  # zero-width joiner
    "\ufeff42",  # BOM
    "\u00bd",  # vulgar fraction one half
    "\u221a2",
    "x\u00b2+1",
    "\u03c0",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467" * 20,
    "\u0000\uffff\ufffe",
    "\U0010ffff",
    "\u4e8c\u5341\u4e8c",
)


def _unicode(rng: random.Random) -> tuple[str, bool]:
    answer = rng.choice(_UNICODE)
    if rng.random() < 0.3:
        answer += rng.choice(_UNICODE)
    if rng.random() < 0.2:
        return "\U0001f600" * rng.randint(1, 5000) + _around(rng, answer), False
    return _around(rng, answer), False


def _huge_int(rng: random.Random) -> tuple[str, bool]:
    digits = rng.choice([999, 1000, 1001, 4301, 100_000])
    number = str(rng.randint(1, 9)) + "".join(rng.choice("0123456789") for _ in range(digits - 1))
    answer = rng.choice(
        [
            number,
            "-" + number,
            "0." + number,
            ",".join(number[i : i + 3] for i in range(0, len(number), 3)),
            "1e100000",
            "10^{100000}",
            "10^{10^{5}}",
            number[:40] + "\\times 10^{" + number[:6] + "}",
            "42" + "0" * digits,
            "0" * digits + "42",  # the value 42, zero-padded
        ]
    )
    return _around(rng, answer), False


_SYMPY = (
    "\\int_0^1 x^x dx",
    "\\int e^{x^2} dx",
    "\\sum_{n=1}^{\\infty} \\frac{1}{n^2}",
    "\\sum_{n=1}^{\\infty} n",
    "\\prod_{k=1}^{\\infty} (1+\\frac{1}{k^2})",
    "\\lim_{x\\to 0} \\frac{\\sin x}{x}",
    "x^{x^{x}}",
    "\\frac{d}{dx} x^{x}",
    "\\zeta(3)",
    "\\Gamma(\\frac{1}{2})",
    "\\cos^{2}x+\\sin^{2}x",
    "\\sin(10^{100})",
    "\\log(\\log(\\log(x)))",
    "\\sqrt{\\sqrt{\\sqrt{\\sqrt{2}}}}",
    "x^{1000000}+1",
    "(x+1)^{30}",
    "\\{1,2,3\\}\\cup\\{4\\}",
    "[0, \\infty)",
    "x \\in (0,1]",
    "a=b=c=42",
    "\\tan(\\frac{\\pi}{2})",
    "1/x",
    "\\frac{x^2+1}{1}",
)


def _matrix(rng: random.Random) -> str:
    size = rng.randint(5, 16)
    cell = rng.choice(["x", "1", "x^{2}", "\\frac{1}{2}"])
    rows = "\\\\".join("&".join([cell] * size) for _ in range(size))
    return f"\\begin{{pmatrix}}{rows}\\end{{pmatrix}}"


def _sympy(rng: random.Random) -> tuple[str, bool]:
    answer = _matrix(rng) if rng.random() < 0.2 else rng.choice(_SYMPY)
    return _around(rng, answer), False


def _noise(rng: random.Random) -> tuple[str, bool]:
    size = rng.randint(1, 5000)
    shape = rng.randrange(4)
    if shape == 0:  # any code point, lone surrogates included
        text = "".join(chr(rng.randrange(0x110000)) for _ in range(size))
    elif shape == 1:  # raw bytes read as Latin-1
        text = rng.randbytes(size).decode("latin-1")
    elif shape == 2:  # LaTeX-ish ASCII soup
        text = "".join(rng.choice("\\{}()[]^_$&%#~0123456789+-*/=.,xyz ") for _ in range(size))
    else:  # invalid UTF-8 decoded with replacement characters
        text = rng.randbytes(size).decode("utf-8", errors="replace")
    return (boxed(text) if rng.random() < 0.5 else text), False


MATH_CATEGORIES: dict[str, Callable[[random.Random], tuple[str, bool]]] = {
    "power": _power,
    "factorial": _factorial,
    "nested": _nested,
    "unclosed": _unclosed,
    "megabyte": _megabyte,
    "malformed": _malformed,
    "control": _control,
    "unicode": _unicode,
    "huge_int": _huge_int,
    "sympy": _sympy,
    "noise": _noise,
}


def hostile_math(n: int, seed: int = 0, categories: list[str] | None = None) -> Iterator[Hostile]:
    """``n`` hostile math completions, round-robin over ``categories`` (default: all).

    A generator: megabyte items are built one at a time, so memory stays flat.
    """
    rng = random.Random(seed)
    names = list(MATH_CATEGORIES) if categories is None else categories
    for i in range(n):
        name = names[i % len(names)]
        completion, hangs = MATH_CATEGORIES[name](rng)
        yield Hostile(name, completion, rng.choice(MATH_GOLDS), hangs)


# ----------------------------------------------------------------------- countdown

_COUNTDOWN_ANSWERS = (
    "(8-5)*8",  # 24, but uses the single 8 twice: wrong
    "8*3*1",  # right for 24|1,3,5,8
    "3*8",
    "(5-3)*(8+1)+6",
    "2*5*10",
    "(2+5)*10",
    "25+25",
    "50",
    "9**9**9",
    "9**9**9**9",
    "2**100",
    "10//3",
    "7%3",
    "-1+25",
    "1/0",
    "(1-1)/(1-1)",
    "999999999999*999999999999",
    "1000000000000+1",
    "__import__('os').system('true')",
    "lambda: 0",
    "[1]*10**9",
    "\\frac{1}{2}",
    "8 \\times 3",
    "8 \\div 1 \\times 3",
    "\\times" * 100,
    "\uff12\uff14",
    "8*3\x00",
    "8*3\u200f",
    "",
    " ",
    "()",
    "1+",
    "+1",
    "(((((((((((((((((((((3*8)))))))))))))))))))))",
)


def _countdown_answer(rng: random.Random) -> str:
    shape = rng.randrange(6)
    if shape == 0:
        depth = rng.choice([10, 99, 100, 150, 5000])
        return "(" * depth + "3*8" + ")" * depth
    if shape == 1:
        return rng.choice(["1+", "1*", "10/", "(1-"]) * rng.randint(10, 100_000) + "1"
    if shape == 2:
        return "9" * rng.choice([12, 13, 199, 200, 201, 5000, MEGABYTE])
    if shape == 3:
        return "".join(rng.choice("0123456789+-*/() ") for _ in range(rng.randint(1, 300)))
    if shape == 4:
        return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randint(1, 300)))
    return rng.choice(_COUNTDOWN_ANSWERS)


def hostile_countdown(n: int, seed: int = 0) -> Iterator[Hostile]:
    """``n`` hostile countdown completions (boxed, unboxed or unclosed) with countdown golds."""
    rng = random.Random(seed)
    for _ in range(n):
        answer = _countdown_answer(rng)
        wrap = rng.randrange(6)
        if wrap == 0:
            completion = answer  # no box
        elif wrap == 1:
            completion = "\\boxed{" + answer  # unclosed
        else:
            completion = _around(rng, answer)
        yield Hostile("countdown", completion, rng.choice(COUNTDOWN_GOLDS))
