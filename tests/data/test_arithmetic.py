"""Tests for the embedded arithmetic task: exact answers, worked solutions, splits, knobs."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from tempo.config_error import ConfigError
from tempo.data.arithmetic import ArithmeticTask, answer_of, solution_of
from tempo.data.generated import question_unit_hash
from tempo.data.problem import Problem

STEP = re.compile(r"^(-?\d+)([+\-*/])(\d+)=(-?\d+)$")
ALL_OPS = ("+", "-", "*", "/")


def exact_eval(question: str) -> Fraction:
    """Python's own precedence on exact rationals: independent of the task's evaluator."""
    return eval(re.sub(r"\d+", lambda m: f"Fraction({m.group()})", question))


def split_question(question: str) -> tuple[list[int], list[str]]:
    tokens = re.findall(r"\d+|[+\-*/]", question)
    assert "".join(tokens) == question
    return [int(t) for t in tokens[0::2]], tokens[1::2]


def check_problem(p: Problem) -> None:
    """Answer equals Python's evaluation; every step is correct and the last gives the answer."""
    exact = exact_eval(p.question)
    assert exact.denominator == 1, p.question
    assert int(p.answer) == exact == eval(p.question.replace("/", "//"))
    assert p.answer == str(int(p.answer))
    body, boxed = p.solution.rsplit(". ", 1)
    assert boxed == f"\\boxed{{{p.answer}}}"
    steps = body.split(", ")
    assert len(steps) == len(split_question(p.question)[1])
    for step in steps:
        m = STEP.match(step)
        assert m, step
        a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
        if op == "/":
            assert b != 0 and a % b == 0, step
            assert a // b == c, step
        else:
            assert eval(f"{a}{op}{b}") == c, step
    assert int(STEP.match(steps[-1])[4]) == int(p.answer)


def test_precedence_examples_exact() -> None:
    assert solution_of("3+4*5-2") == "4*5=20, 3+20=23, 23-2=21. \\boxed{21}"
    assert solution_of("3-8+2") == "3-8=-5, -5+2=-3. \\boxed{-3}"
    assert solution_of("12+7") == "12+7=19. \\boxed{19}"
    assert solution_of("2-3-4*5") == "4*5=20, 2-3=-1, -1-20=-21. \\boxed{-21}"
    assert solution_of("6*1+18/9") == "6*1=6, 18/9=2, 6+2=8. \\boxed{8}"
    assert answer_of("12+7*3") == 33
    p = ArithmeticTask().make_problem("3+4*5-2", "x/0")
    assert (p.prompt, p.answer) == ("3+4*5-2=", "21")


def test_inexact_or_malformed_questions_raise() -> None:
    for bad in ("7/2", "3/0", "3+", "+3", "3++4", "3 + 4", "-3+4", ""):
        with pytest.raises(ValueError):
            answer_of(bad)


def test_answers_and_steps_match_python_for_all_operations() -> None:
    task = ArithmeticTask(operations=ALL_OPS, max_ops=5, seed=3)
    problems = [task.train_problem(i) for i in range(1500)] + task.test_problems()
    for p in problems:
        check_problem(p)
    assert any(int(p.answer) < 0 for p in problems)
    assert any("/" in p.question for p in problems)


def test_default_problems_are_correct() -> None:
    task = ArithmeticTask()
    for p in [task.train_problem(i) for i in range(1000)] + task.test_problems():
        check_problem(p)
        assert p.prompt == p.question + "="


def test_determinism_and_seed_dependence() -> None:
    a, b, c = ArithmeticTask(seed=5), ArithmeticTask(seed=5), ArithmeticTask(seed=6)
    train_a = [a.train_problem(i) for i in range(100)]
    assert train_a == [b.train_problem(i) for i in range(100)]
    assert a.test_problems() == b.test_problems()
    assert a.train_problem(77) == train_a[77]  # random access, independent of call order
    assert [p.question for p in train_a] != [c.train_problem(i).question for i in range(100)]
    assert [p.question for p in a.test_problems()] != [p.question for p in c.test_problems()]


def test_pinned_questions_stay_stable() -> None:
    # Changing these invalidates every stored run's data; only do it deliberately.
    task = ArithmeticTask()
    assert [task.train_problem(i).question for i in range(3)] == ["16-6+1", "21+20", "5*7"]
    assert task.train_problem(0).id == "arithmetic/train/0"


def test_train_and_test_are_disjoint_and_respect_the_hash() -> None:
    task = ArithmeticTask()
    test_qs = {p.question for p in task.test_problems()}
    train_qs = {task.train_problem(i).question for i in range(5000)}
    assert not train_qs & test_qs
    assert all(question_unit_hash(q) >= 0.1 for q in train_qs)
    assert all(question_unit_hash(q) < 0.1 for q in test_qs)


def test_hash_split_fraction_is_close_to_test_fraction() -> None:
    questions = [f"{a}+{b}-{c}" for a in range(21) for b in range(21) for c in range(21)]
    hashes = [question_unit_hash(q) for q in questions]
    assert all(0.0 <= h < 1.0 for h in hashes)
    assert question_unit_hash("3+4") == question_unit_hash("3+4")
    for fraction in (0.1, 0.3):
        task = ArithmeticTask(test_fraction=fraction)
        share = sum(task.split_of(q) == "test" for q in questions) / len(questions)
        assert abs(share - fraction) < 0.02


def test_test_problems_are_distinct_cached_and_sized() -> None:
    task = ArithmeticTask(name="arith", num_test=150)
    problems = task.test_problems()
    assert len(problems) == 150
    assert len({p.question for p in problems}) == 150
    assert task.test_problems() == problems
    problems.clear()  # callers get a copy, not the cache
    assert len(task.test_problems()) == 150
    for p in task.test_problems():
        split, index = p.id.split("/")[1:]
        assert p.id.startswith("arith/test/") and split == "test"
        assert task.problem("test", int(index)) == p


def test_operands_stay_within_ranges() -> None:
    task = ArithmeticTask(
        operations=ALL_OPS, max_ops=4, operand_min=10, operand_max=20, mul_max=5, seed=1
    )
    for i in range(1500):
        values, ops = split_question(task.train_problem(i).question)
        for k, v in enumerate(values):
            left = ops[k - 1] if k > 0 else None
            right = ops[k] if k < len(ops) else None
            if left == "/":
                assert 2 <= v <= 5
            elif left == "*":
                assert 0 <= v <= 5
            elif right == "*":
                assert 0 <= v <= 5
            elif right == "/":  # dividend opening a term: quotient * divisor
                assert 0 <= v <= 25 and v % values[k + 1] == 0
            else:
                assert 10 <= v <= 20
        assert 1 <= len(ops) <= 4


def test_knobs_are_respected() -> None:
    one = ArithmeticTask(max_ops=1)
    assert all(len(split_question(one.train_problem(i).question)[1]) == 1 for i in range(300))
    three = ArithmeticTask(min_ops=3, max_ops=3)
    assert all(len(split_question(three.train_problem(i).question)[1]) == 3 for i in range(300))
    plus = ArithmeticTask(operations=("+",), max_ops=3)
    assert all(set(split_question(plus.train_problem(i).question)[1]) == {"+"} for i in range(300))
    div = ArithmeticTask(operations=("/",), max_ops=2)
    for i in range(300):
        p = div.train_problem(i)
        assert set(split_question(p.question)[1]) == {"/"}
        check_problem(p)
    seen_ops = {op for i in range(300) for op in split_question(one.train_problem(i).question)[1]}
    assert seen_ops == {"+", "-", "*"}


def test_prompt_template() -> None:
    task = ArithmeticTask(prompt_template="Q: {question}\nA: ")
    p = task.train_problem(0)
    assert p.prompt == f"Q: {p.question}\nA: "


def test_prompt_and_solution_character_set() -> None:
    task = ArithmeticTask()
    text = "".join(p.prompt + p.solution for p in [task.train_problem(i) for i in range(2000)])
    assert set(text) == set("0123456789+-*=,. \\boxed{}")


@pytest.mark.parametrize(
    ("key", "kwargs"),
    [
        ("name", {"name": ""}),
        ("seed", {"seed": 1.5}),
        ("min_ops", {"min_ops": 0}),
        ("max_ops", {"max_ops": 0}),
        ("max_ops", {"min_ops": 3, "max_ops": 2}),
        ("operations", {"operations": ("+", "^")}),
        ("operations", {"operations": ()}),
        ("operations", {"operations": ("+", "+")}),
        ("operations", {"operations": "+-"}),
        ("operand_min", {"operand_min": -1}),
        ("operand_max", {"operand_min": 10, "operand_max": 5}),
        ("mul_max", {"mul_max": -1}),
        ("mul_max", {"operations": ("/",), "mul_max": 1}),
        ("num_test", {"num_test": 0}),
        ("test_fraction", {"test_fraction": 0.0}),
        ("test_fraction", {"test_fraction": 1.0}),
        ("test_fraction", {"test_fraction": 1.5}),
        ("prompt_template", {"prompt_template": "{q}="}),
        ("prompt_template", {"prompt_template": "{question}{other}="}),
        ("direct_fraction", {"direct_fraction": -0.1}),
        ("direct_fraction", {"direct_fraction": 1.5}),
        ("direct_fraction", {"direct_fraction": True}),
        ("unboxed_fraction", {"unboxed_fraction": 2}),
        ("unboxed_fraction", {"direct_fraction": 0.5, "unboxed_fraction": 0.5}),
    ],
)
def test_invalid_config_names_the_key(key: str, kwargs: dict) -> None:
    with pytest.raises(ConfigError) as info:
        ArithmeticTask(**kwargs)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}=")


def test_invalid_split_and_index() -> None:
    task = ArithmeticTask()
    with pytest.raises(ConfigError) as info:
        task.problem("val", 0)
    assert info.value.key == "split"
    with pytest.raises(IndexError):
        task.problem("train", -1)


def test_num_test_larger_than_the_held_out_space_raises() -> None:
    task = ArithmeticTask(
        operations=("+",), max_ops=1, operand_max=3, num_test=50, test_fraction=0.5
    )
    space = [f"{a}+{b}" for a in range(4) for b in range(4)]
    n_test = sum(task.split_of(q) == "test" for q in space)
    with pytest.raises(ConfigError) as info:
        task.test_problems()
    assert info.value.key == ("num_test" if n_test else "test_fraction")


def test_direct_fraction_gives_that_share_of_boxed_only_targets() -> None:
    """Direct targets are `\\boxed{<answer>}` alone, chosen per question by a salted hash:
    the same question always gets the same target, the share is close to the fraction, and
    the choice is independent of the train/test split."""
    plain = ArithmeticTask(seed=4)
    task = ArithmeticTask(seed=4, direct_fraction=0.75)
    problems = [task.train_problem(i) for i in range(2000)]
    direct = [p for p in problems if not re.search(r"\d=", p.solution)]
    assert abs(len(direct) / len(problems) - 0.75) < 0.03
    for p in direct:
        assert p.solution == f"\\boxed{{{exact_eval(p.question)}}}"
        assert question_unit_hash(f"direct|{p.question}") < 0.75
    for i, p in enumerate(problems):
        assert p.question == plain.train_problem(i).question  # same questions as without it
        if p not in direct:
            assert p.solution == solution_of(p.question)
    assert (
        task.make_problem("3+4*5-2", "x").solution
        == ArithmeticTask(direct_fraction=0.75).make_problem("3+4*5-2", "y").solution
    )
    assert all(p.solution == solution_of(p.question) for p in plain.test_problems())
    everything = ArithmeticTask(seed=4, direct_fraction=1.0)
    assert all(p.solution.startswith("\\boxed{") for p in everything.test_problems())


def test_unboxed_fraction_drops_only_the_box_for_that_share() -> None:
    task = ArithmeticTask(seed=2, unboxed_fraction=0.75)
    problems = [task.train_problem(i) for i in range(2000)]
    unboxed = [p for p in problems if "\\boxed" not in p.solution]
    assert abs(len(unboxed) / len(problems) - 0.75) < 0.03
    for p in problems:
        worked = solution_of(p.question)
        if p in unboxed:
            assert p.solution + f" \\boxed{{{exact_eval(p.question)}}}" == worked
            assert p.solution.endswith(f"={exact_eval(p.question)}.")
            assert question_unit_hash(f"unboxed|{p.question}") < 0.75
        else:
            assert p.solution == worked
