"""Tests for extract_boxed and format_reward."""

import time

import pytest

from tempo.rewards import extract_boxed, format_reward


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is \\boxed{14}.", "14"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("x \\boxed{\\frac{\\sqrt{3}}{2^{x+1}}} y", "\\frac{\\sqrt{3}}{2^{x+1}}"),
        ("first \\boxed{1} then \\boxed{2} finally \\boxed{-3}", "-3"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        # Escaped braces are content, not structure.
        ("\\boxed{\\left\\{ x \\right.}", "\\left\\{ x \\right."),
        ("\\boxed{ 14 }", " 14 "),
        ("\\boxed{}", ""),
        ("\\boxed{a}\n\n\\boxed{b\nc}", "b\nc"),
    ],
)
def test_extract_boxed(text: str, expected: str) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no box here, the answer is 14",
        "\\boxed{14",  # never closed
        "\\boxed{\\frac{1}{2}",  # inner group closes, outer does not
        "\\boxed{1} and then a truncated \\boxed{2",  # last box unbalanced: no fallback
        "\\boxed 14",
        "\\fbox{14}",
    ],
)
def test_extract_boxed_none(text: str) -> None:
    assert extract_boxed(text) is None


def test_extract_boxed_megabyte_inputs_are_fast() -> None:
    filler = "word {nested} \\alpha " * 60_000  # ~1.3 MB
    cases = [
        (filler + "\\boxed{7}", "7"),
        ("\\boxed{" + filler, None),  # unclosed box scanned to the end
        ("\\boxed{" + "{" * 500_000 + "}" * 500_000 + "}", "{" * 500_000 + "}" * 500_000),
        ("\\boxed{" * 200_000, None),
    ]
    start = time.perf_counter()
    for text, expected in cases:
        assert extract_boxed(text) == expected
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{42}", 1.0),
        ("\\boxed{\\frac{1}{2}}", 1.0),
        ("no answer", 0.0),
        ("\\boxed{42", 0.0),
        ("\\boxed{}", 0.0),
        ("\\boxed{   }", 0.0),
    ],
)
def test_format_reward(text: str, expected: float) -> None:
    assert format_reward(text) == expected
