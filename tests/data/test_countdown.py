"""Tests for the embedded countdown task: solvable problems, a safe exact checker, splits, knobs."""

from __future__ import annotations

import pickle
import re
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf

from tempo.config_error import ConfigError
from tempo.data import generated
from tempo.data.countdown import CountdownTask, check_countdown, gold_answer, parse_gold
from tempo.data.generated import question_unit_hash
from tempo.data.problem import Problem
from tempo.models.tokenizer import CHARACTERS

ROOT = Path(__file__).resolve().parents[2]
QUESTION = re.compile(r"^(\d+(?: \d+)*) -> (\d+)$")
STEP = re.compile(r"^(\d+)([+\-*/])(\d+)=(\d+)$")


def python_value(expression: str) -> Fraction:
    """Python's own arithmetic on exact rationals: independent of the task's evaluator."""
    assert re.fullmatch(r"[0-9+\-*/()]+", expression), expression
    return eval(re.sub(r"\d+", lambda m: f"Fraction({m.group()})", expression))


def boxed_of(solution: str) -> str:
    body, boxed = solution.rsplit(". ", 1)
    assert boxed.startswith("\\boxed{") and boxed.endswith("}"), solution
    return boxed[len("\\boxed{") : -1]


def check_problem(task: CountdownTask, p: Problem) -> None:
    """Question, gold and solution agree, and the boxed expression solves the problem."""
    m = QUESTION.match(p.question)
    assert m, p.question
    numbers, target = [int(n) for n in m[1].split()], int(m[2])
    assert numbers == sorted(numbers)
    assert task.min_numbers <= len(numbers) <= task.max_numbers
    assert all(task.number_min <= n <= task.number_max for n in numbers)
    assert 1 <= target <= task.target_max
    suffix = "|all" if task.use_all else ""
    assert p.answer == f"{target}|{','.join(map(str, numbers))}{suffix}"
    assert p.prompt == task.prompt_template.format(question=p.question)

    expression = boxed_of(p.solution)
    assert python_value(expression) == target
    used, given = Counter(int(n) for n in re.findall(r"\d+", expression)), Counter(numbers)
    if task.use_all:
        assert used == given, p
    else:
        assert all(c <= given[n] for n, c in used.items()), p
        assert target not in numbers  # no single-number answers
    assert check_countdown(expression, p.answer)

    steps = p.solution.rsplit(". ", 1)[0].split(", ")
    assert len(steps) == sum(used.values()) - 1
    for step in steps:
        sm = STEP.match(step)
        assert sm, step
        a, op, b, c = int(sm[1]), sm[2], int(sm[3]), int(sm[4])
        assert python_value(f"{a}{op}{b}") == c  # exact integer, >= 0 by the regex
    assert int(STEP.match(steps[-1])[4]) == target


def test_default_problems_are_solvable_by_their_solutions() -> None:
    task = CountdownTask()
    problems = [task.train_problem(i) for i in range(400)] + task.test_problems()
    for p in problems:
        check_problem(task, p)
    assert {len(p.question.split()) - 2 for p in problems} == {3, 4}
    assert any("/" in p.solution for p in problems)
    assert any("(" in boxed_of(p.solution) for p in problems)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"use_all": True},
        {"use_all": True, "min_numbers": 2, "max_numbers": 6, "seed": 4},
        {"number_min": 0, "number_max": 9, "max_numbers": 5, "target_max": 1000, "seed": 2},
        {"min_numbers": 2, "max_numbers": 2, "number_min": 50, "number_max": 99},
    ],
)
def test_problems_are_solvable_for_other_settings(kwargs: dict) -> None:
    task = CountdownTask(**kwargs)
    for i in range(300):
        check_problem(task, task.train_problem(i))


def test_use_all_solutions_use_every_number() -> None:
    task = CountdownTask(use_all=True)
    p = task.train_problem(0)
    assert p.answer.endswith("|all")
    assert check_countdown(boxed_of(p.solution), p.answer)
    target, numbers, use_all = parse_gold(p.answer)
    assert use_all and not check_countdown(str(target), p.answer)


def test_determinism_and_seed_dependence() -> None:
    a, b, c = CountdownTask(seed=5), CountdownTask(seed=5), CountdownTask(seed=6)
    train_a = [a.train_problem(i) for i in range(100)]
    assert train_a == [b.train_problem(i) for i in range(100)]
    assert a.test_problems() == b.test_problems()
    assert a.train_problem(77) == train_a[77]
    assert [p.question for p in train_a] != [c.train_problem(i).question for i in range(100)]
    assert [p.question for p in a.test_problems()] != [p.question for p in c.test_problems()]


def test_pinned_questions_stay_stable() -> None:
    # Changing these invalidates every stored run's data; only do it deliberately.
    task = CountdownTask()
    questions = [task.train_problem(i).question for i in range(3)]
    assert questions == ["10 13 17 -> 20", "7 13 14 17 -> 81", "1 3 3 12 -> 7"]
    p = task.train_problem(0)
    assert p.id == "countdown/train/0"
    assert p.prompt == "10 13 17 -> 20="
    assert p.answer == "20|10,13,17"
    assert p.solution == "17+13=30, 30-10=20. \\boxed{17+13-10}"


def test_train_and_test_are_disjoint_and_sized() -> None:
    task = CountdownTask(name="cd", num_test=150)
    problems = task.test_problems()
    assert len(problems) == 150
    test_qs = {p.question for p in problems}
    assert len(test_qs) == 150
    train_qs = {task.train_problem(i).question for i in range(3000)}
    assert not train_qs & test_qs
    assert all(question_unit_hash(q) >= 0.1 for q in train_qs)
    assert all(question_unit_hash(q) < 0.1 for q in test_qs)
    assert all(task.split_of(q) == "test" for q in test_qs)
    problems.clear()  # callers get a copy, not the cache
    assert len(task.test_problems()) == 150
    for p in task.test_problems()[:20]:
        _, split, index = p.id.split("/")
        assert split == "test" and task.problem("test", int(index)) == p


def test_repr_covers_every_setting() -> None:
    base = repr(CountdownTask())
    variants = [
        {"name": "cd2"},
        {"seed": 1},
        {"min_numbers": 2},
        {"max_numbers": 5},
        {"number_min": 2},
        {"number_max": 30},
        {"target_max": 200},
        {"num_test": 100},
        {"test_fraction": 0.2},
        {"prompt_template": "Q: {question}\nA: "},
        {"use_all": True},
    ]
    reprs = {repr(CountdownTask(**kw)) for kw in variants}
    assert len(reprs) == len(variants) and base not in reprs


def test_prompt_and_solution_fit_the_char_tokenizer() -> None:
    task = CountdownTask()
    text = "".join(p.prompt + p.solution + p.answer for p in task.test_problems())
    assert set(text) <= set(CHARACTERS)
    assert set(text) <= set("0123456789 ->=+*/(),.|\\boxed{}")


def test_answer_check_is_the_picklable_checker() -> None:
    task = CountdownTask()
    assert task.answer_check is check_countdown
    assert pickle.loads(pickle.dumps(check_countdown)) is check_countdown
    assert pickle.loads(pickle.dumps(task)).train_problem(3) == task.train_problem(3)


def test_gold_format_round_trip() -> None:
    assert gold_answer(24, [8, 1, 5, 3], False) == "24|1,3,5,8"
    assert gold_answer(24, [8, 1, 5, 3], True) == "24|1,3,5,8|all"
    assert parse_gold("24|1,3,5,8|all") == (24, [1, 3, 5, 8], True)
    assert parse_gold("7|3,3") == (7, [3, 3], False)
    for bad in ("24", "24|", "24|1,,3", "24|1,3|some", "-24|1,3", " 24|1,3", "24|1, 3"):
        with pytest.raises(ValueError):
            parse_gold(bad)
    with pytest.raises(ValueError):
        check_countdown("3*8", "nonsense")


GOLD = "24|1,3,5,8"
GOLD_ALL = "24|1,3,5,8|all"


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        # correct, in several forms
        ("3*8", GOLD, True),
        ("8*3", GOLD, True),
        (" 3 * 8 ", GOLD, True),
        ("(3)*(8)", GOLD, True),
        ("((3*8))", GOLD, True),
        ("3\\times 8", GOLD, True),
        ("3 \\cdot 8", GOLD, True),
        ("8\\div 1*3", GOLD, True),
        ("1*3*8", GOLD, True),
        ("(1+5-3)*8", GOLD, True),
        ("(1+5-3)*8", GOLD_ALL, True),
        ("8*(5-1)-8", "24|1,5,8,8", True),
        ("8/(3-8/3)", "24|3,3,8,8", True),  # exact rationals: 8/(1/3)
        ("8/3*9", "24|3,8,9", True),
        ("3-5+26", "24|3,5,26", True),  # negative intermediate
        # wrong value
        ("3*8+1", GOLD, False),
        ("3+8", GOLD, False),
        ("8/3*3", GOLD, False),  # 3 used twice
        ("8/3", "24|3,8", False),
        # number not given / used too often
        ("24", GOLD, False),
        ("4*6", GOLD, False),
        ("3*8+0", GOLD, False),
        ("3*8*1*1", GOLD, False),
        ("8*(5-1)-8", GOLD, False),
        ("03*8", GOLD, False),
        # use_all violations
        ("3*8", GOLD_ALL, False),
        ("1*3*8", GOLD_ALL, False),
        ("(1+5-3)*8*1", GOLD_ALL, False),
        # non-arithmetic input
        ("__import__('os')", GOLD, False),
        ("__import__('os').system('true')", GOLD, False),
        ("x", GOLD, False),
        ("abs(24)", GOLD, False),
        ("int(3*8)", GOLD, False),
        ("3**2", "9|3,2", False),
        ("9**9**9", "24|9,9,9", False),
        ("8*3//1", GOLD, False),
        ("8*3%25", GOLD, False),
        ("-3*-8", "24|3,8", False),
        ("+(3*8)", GOLD, False),
        ("3.0*8", GOLD, False),
        ("0x3*8", GOLD, False),
        ("3_0", "30|30", False),
        ("3*8;1", GOLD, False),
        ("[3*8]", GOLD, False),
        ("3*8 == 24", GOLD, False),
        ("3*8=24", GOLD, False),
        ("\\boxed{3*8}", GOLD, False),
        ("(3*8", GOLD, False),
        ("3*", GOLD, False),
        ("3 8", GOLD, False),
        (GOLD, GOLD, False),
        # division by zero
        ("8/(3-3)*3", "24|3,3,8", False),
        ("8/0", "24|0,8", False),
        ("8*3+1/(5-5)", "24|1,3,5,5,8", False),
        # empty / None-like
        ("", GOLD, False),
        ("   ", GOLD, False),
        ("None", GOLD, False),
        (None, GOLD, False),
        ("()", GOLD, False),
    ],
)
def test_checker_table(answer: str, gold: str, expected: bool) -> None:
    assert check_countdown(answer, gold) is expected


def test_checker_bounds_hostile_input_quickly() -> None:
    nines = ",".join(["9"] * 60)
    cases = [
        ("*".join(["9"] * 60), f"24|{nines}"),  # 9**60 built from allowed literals
        ("9" * 150, "24|9"),  # a huge literal
        ("(" * 99 + "9*9*9*9*9*9*9*9*9*9*9*9*9" + ")" * 99, f"24|{nines}"),
        ("1+" * 5000 + "1", "24|1"),  # 10_001 characters
        ("(" * 10_000, GOLD),
        ("9" * 10_000, GOLD),
        ("3*8" + " " * 10_000, GOLD),
        ("9**9**9**9**9", "24|9,9,9,9,9"),
    ]
    start = time.perf_counter()
    for answer, gold in cases:
        assert check_countdown(answer, gold) is False
    assert time.perf_counter() - start < 0.5
    deep = "(" * 98 + "1" + ")" * 98  # deep but admissible nesting within the length bound
    assert check_countdown(deep, "1|1|all") is True


@pytest.mark.parametrize(
    ("key", "kwargs"),
    [
        ("name", {"name": ""}),
        ("seed", {"seed": 1.5}),
        ("min_numbers", {"min_numbers": 1}),
        ("min_numbers", {"min_numbers": 11, "max_numbers": 12}),
        ("max_numbers", {"min_numbers": 4, "max_numbers": 3}),
        ("max_numbers", {"max_numbers": 11}),
        ("number_min", {"number_min": -1}),
        ("number_max", {"number_min": 10, "number_max": 5}),
        ("number_max", {"number_min": 0, "number_max": 0}),
        ("number_max", {"number_max": 10**7}),
        ("target_max", {"target_max": 0}),
        ("target_max", {"target_max": 2.5}),
        ("num_test", {"num_test": 0}),
        ("test_fraction", {"test_fraction": 0.0}),
        ("test_fraction", {"test_fraction": 1.0}),
        ("test_fraction", {"test_fraction": True}),
        ("prompt_template", {"prompt_template": "{q}="}),
        ("prompt_template", {"prompt_template": "{question}{other}="}),
        ("use_all", {"use_all": "yes"}),
    ],
)
def test_invalid_config_names_the_key(key: str, kwargs: dict) -> None:
    with pytest.raises(ConfigError) as info:
        CountdownTask(**kwargs)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}=")


def test_invalid_split_and_index() -> None:
    task = CountdownTask()
    with pytest.raises(ConfigError) as info:
        task.problem("val", 0)
    assert info.value.key == "split"
    with pytest.raises(IndexError):
        task.problem("train", -1)


def test_num_test_larger_than_the_held_out_space_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generated, "_MAX_STALE_INDICES", 300)
    task = CountdownTask(
        min_numbers=2, max_numbers=2, number_max=2, target_max=4, num_test=50, test_fraction=0.5
    )
    with pytest.raises(ConfigError) as info:
        task.test_problems()
    assert info.value.key in ("num_test", "test_fraction")


def test_yaml_instantiates_with_the_code_defaults() -> None:
    cfg = OmegaConf.load(ROOT / "conf" / "task" / "countdown.yaml")
    task = hydra.utils.instantiate(cfg)
    assert isinstance(task, CountdownTask)
    assert repr(task) == repr(CountdownTask())
    assert set(cfg) - {"_target_"} == {
        "name",
        "seed",
        "min_numbers",
        "max_numbers",
        "number_min",
        "number_max",
        "target_max",
        "num_test",
        "test_fraction",
        "prompt_template",
        "use_all",
    }
    check_problem(task, task.train_problem(0))
