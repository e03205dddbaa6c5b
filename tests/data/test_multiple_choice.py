"""Multiple-choice tasks (ECQA, GPQA-Diamond, MMLU-Pro): each shipped YAML loads local files in
its benchmark's real schema, prompts list lettered options, golds name the correct option (GPQA:
after the seeded shuffle), `check_choice` reads letters robustly and fast, bad configs fail in
one line."""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
import random
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tempo.config_error import ConfigError
from tempo.data.multiple_choice import (
    CHOICE_PROMPT,
    MAX_CHOICE_CHARS,
    MultipleChoiceTask,
    check_choice,
    parse_choice_gold,
)
from tempo.hydra_cli import build as build_part

CONF = Path(__file__).resolve().parents[2] / "conf"
MC_TASKS = ("ecqa", "gpqa_diamond", "mmlu_pro")
SUFFIX = (
    "\nPlease reason step by step, and put the letter of the correct option within \\boxed{}.\n"
)


@pytest.fixture(autouse=True)
def _no_data_dir(monkeypatch):
    """The YAMLs read TEMPO_DATA_DIR; tests that want it set it themselves."""
    monkeypatch.delenv("TEMPO_DATA_DIR", raising=False)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def write_parquet(path: Path, rows: list[dict]) -> str:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def write_csv(path: Path, rows: list[dict]) -> str:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def build(name: str, tmp_path: Path, **overrides) -> MultipleChoiceTask:
    """The shipped YAML with `overrides` merged in, built as the entry points build it."""
    overrides.setdefault("cache_dir", str(tmp_path / "hf-cache"))
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "task" / f"{name}.yaml"), overrides)
    return build_part("task", cfg)


def option_lines(prompt: str) -> dict[str, str]:
    """Letter -> option text, read back from the prompt's "X. text" lines."""
    return dict(re.findall(r"^([A-Z])\. (.*)$", prompt, flags=re.MULTILINE))


# ------------------------------------------------------------------ fixtures in real schemas


def ecqa_row(no: int, text: str, options: list[str], answer: str, why: str) -> dict:
    row = {"q_no": str(no), "q_concept": "concept", "q_text": text}
    row.update({f"q_op{i + 1}": option for i, option in enumerate(options)})
    row.update({"q_ans": answer, "taskA_pos": "pos", "taskA_neg": "neg", "taskB": why})
    return row


ECQA_TRAIN = [
    ecqa_row(
        0,
        "Where would you put a plate after washing it?",
        ["sink", "cupboard", "table", "floor", "oven"],
        "cupboard",
        "Clean plates are stored in a cupboard.",
    ),
    ecqa_row(
        1,
        "What do people use to cut paper?",
        ["spoon", "glue", "scissors", "tape", "pen"],
        "scissors",
        "Scissors have blades that cut paper.",
    ),
    ecqa_row(2, "A row whose answer is no option.", ["a1", "b1", "c1", "d1", "e1"], "zzz", "-"),
]
ECQA_TEST = [
    ecqa_row(
        10,
        "What is frozen water called?",
        ["steam", "ice", "fog", "rain", "dew"],
        "ice",
        "Water turns into ice when it freezes.",
    ),
    ecqa_row(
        11,
        "Where do fish live?",
        ["tree", "desert", "cloud", "road", "water"],
        "water",
        "Fish live in water.",
    ),
]

# GPQA: the correct answer always comes first in the columns; extra columns as in the CSV.
GPQA_ROWS = [
    {
        "Pre-Revision Question": "old",
        "Question": f"  Question {i}: which value of the quantity q_{i} is right?\n",
        "Correct Answer": f"right {i}",
        "Incorrect Answer 1": f"wrong {i}a",
        "Incorrect Answer 2": f"wrong {i}b",
        "Incorrect Answer 3": f"wrong {i}c",
        "Explanation": f"Because of reason {i}.",
        "Subdomain": "Physics (general)",
        "High-level domain": "Physics",
    }
    for i in range(12)
]

MMLU_PRO_TEST = [
    {
        "question_id": 70,
        "question": "Which of the following is a prime number?",
        "options": ["4", "6", "8", "9", "10", "12", "14", "15", "16", "17"],
        "answer": "J",
        "answer_index": 9,
        "cot_content": "",
        "category": "math",
        "src": "ori_mmlu-high_school_mathematics",
    },
    {
        "question_id": 71,
        "question": "What is the capital of France?",
        "options": ["Berlin", "Paris", "Rome", "Madrid"],
        "answer": "B",
        "answer_index": 1,
        "cot_content": "A: Let's think step by step. Paris is the capital. The answer is (B).",
        "category": "other",
        "src": "ori_mmlu-miscellaneous",
    },
    {
        "question_id": 72,
        "question": "A row whose answer letter has no option.",
        "options": ["x", "y", "z"],
        "answer": "E",
        "answer_index": 4,
        "cot_content": "",
        "category": "other",
        "src": "stemez-Physics",
    },
]


# ------------------------------------------------------------------ one test per shipped YAML


def test_ecqa_yaml_letters_the_five_options_and_finds_the_answer_text(tmp_path):
    files = {
        "train": write_jsonl(tmp_path / "train.jsonl", ECQA_TRAIN),
        "test": write_jsonl(tmp_path / "test.jsonl", ECQA_TEST),
    }
    task = build("ecqa", tmp_path, data_files=files)
    assert isinstance(task, MultipleChoiceTask) and task.answer_check is check_choice
    problems = task.test_problems()
    assert len(problems) == 2 and task.train_size == 2 and task.skipped == 1
    for problem, row in zip(problems, ECQA_TEST, strict=True):
        options = [row[f"q_op{i}"] for i in range(1, 6)]
        letter = "ABCDE"[options.index(row["q_ans"])]
        lines = "\n".join(f"{x}. {o}" for x, o in zip("ABCDE", options, strict=True))
        assert problem.question == f"{row['q_text']}\n{lines}"
        assert problem.prompt == problem.question + SUFFIX
        assert problem.answer == f"{letter}. {row['q_ans']}"
        assert problem.solution == f"{row['taskB']} \\boxed{{{letter}}}"
        assert check_choice(letter, problem.answer) and check_choice(row["q_ans"], problem.answer)
    assert [p.answer[0] for p in problems] == ["B", "E"]
    train = {task.train_problem(i).question.split("\n")[0]: task.train_problem(i) for i in (0, 1)}
    assert train["What do people use to cut paper?"].answer == "C. scissors"


def test_gpqa_yaml_shuffles_options_and_the_letter_follows_the_correct_answer(tmp_path):
    task = build(
        "gpqa_diamond", tmp_path, data_files={"test": write_csv(tmp_path / "g.csv", GPQA_ROWS)}
    )
    problems = task.test_problems()
    assert len(problems) == len(GPQA_ROWS) and task.train_size == 0
    letters = []
    for problem, row in zip(problems, GPQA_ROWS, strict=True):
        shown = option_lines(problem.prompt)
        assert sorted(shown.values()) == sorted(
            row[c]
            for c in (
                "Correct Answer",
                "Incorrect Answer 1",
                "Incorrect Answer 2",
                "Incorrect Answer 3",
            )
        )
        letter, text = parse_choice_gold(problem.answer)
        assert shown[letter] == row["Correct Answer"] == text  # the gold points at the right one
        assert problem.question.startswith(row["Question"].strip() + "\nA. ")
        letters.append(letter)
    assert len(set(letters)) >= 3  # not always A: 12 questions land on several letters

    # The documented rule, recomputed: Random(blake2b("0|question")) shuffles [0, 1, 2, 3].
    for problem, row in zip(problems, GPQA_ROWS, strict=True):
        digest = hashlib.blake2b(f"0|{row['Question'].strip()}".encode(), digest_size=16).digest()
        order = [0, 1, 2, 3]
        random.Random(int.from_bytes(digest, "big")).shuffle(order)
        assert problem.answer[0] == "ABCD"[order.index(0)]

    # Stable per question: the same letters whatever the row order; another seed moves some.
    flipped = build(
        "gpqa_diamond",
        tmp_path,
        data_files={"test": write_csv(tmp_path / "f.csv", GPQA_ROWS[::-1])},
    )
    assert [p.answer for p in flipped.test_problems()][::-1] == [p.answer for p in problems]
    other = build(
        "gpqa_diamond",
        tmp_path,
        data_files={"test": write_csv(tmp_path / "g.csv", GPQA_ROWS)},
        shuffle_seed=1,
    )
    assert [p.answer for p in other.test_problems()] != [p.answer for p in problems]
    assert repr(other) != repr(task)  # caches keyed by repr see the new order


def test_mmlu_pro_yaml_reads_up_to_ten_options_and_the_answer_letter(tmp_path):
    path = write_parquet(tmp_path / "test.parquet", MMLU_PRO_TEST)
    task = build("mmlu_pro", tmp_path, data_files={"test": path})
    problems = task.test_problems()
    assert len(problems) == 2 and task.skipped == 1  # "E" names no option of 3
    prime, capital = problems
    assert option_lines(prime.prompt) == dict(
        zip("ABCDEFGHIJ", MMLU_PRO_TEST[0]["options"], strict=True)
    )
    assert prime.answer == "J. 17" and prime.solution == "\\boxed{J}"  # empty cot_content
    assert capital.answer == "B. Paris"
    assert capital.solution == (
        "A: Let's think step by step. Paris is the capital. The answer is (B). \\boxed{B}"
    )
    assert prime.prompt == (
        "Which of the following is a prime number?\n"
        + "\n".join(
            f"{x}. {o}" for x, o in zip("ABCDEFGHIJ", MMLU_PRO_TEST[0]["options"], strict=True)
        )
        + SUFFIX
    )
    # the 0-based answer_index column gives the same golds
    by_index = build(
        "mmlu_pro",
        tmp_path,
        data_files={"test": path},
        answer_field="answer_index",
        answer_format="index",
    )
    assert [p.answer for p in by_index.test_problems()] == ["J. 17", "B. Paris"]
    # letters only: match_option_text false keeps the gold a bare letter
    bare = build("mmlu_pro", tmp_path, data_files={"test": path}, match_option_text=False)
    assert [p.answer for p in bare.test_problems()] == ["J", "B"]
    assert not check_choice("Paris", "B") and check_choice("(B)", "B")


@pytest.mark.parametrize("name", MC_TASKS)
def test_each_choice_task_composes_with_train_yaml_and_local_files(name, tmp_path):
    row = {"q": "Pick the vowel.", "o1": "b", "o2": "a", "o3": "c", "ans": "a", "why": "a is."}
    test_file = write_jsonl(tmp_path / "test.jsonl", [row])
    overrides = [
        f"task={name}",
        f"task.data_files.test={test_file}",
        "task.question_field=q",
        "task.options_field=null",
        "task.option_fields=[o1,o2,o3]",
        "task.answer_field=ans",
        "task.answer_format=text",
        "task.shuffle_options=false",
        "task.solution_field=why",
        f"task.cache_dir={tmp_path / 'hf-cache'}",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    task = build_part("task", cfg.task)
    assert isinstance(task, MultipleChoiceTask) and task.name == name
    (problem,) = task.test_problems()
    assert problem.prompt == "Pick the vowel.\nA. b\nB. a\nC. c" + SUFFIX
    assert problem.answer == "B. a" and problem.solution == "a is. \\boxed{B}"
    assert cfg.task.prompt_template == CHOICE_PROMPT


def test_task_and_check_pickle_for_the_worker_pool(tmp_path):
    task = build(
        "mmlu_pro", tmp_path, data_files={"test": write_jsonl(tmp_path / "t.jsonl", MMLU_PRO_TEST)}
    )
    clone = pickle.loads(pickle.dumps(task))
    assert [p.answer for p in clone.test_problems()] == [p.answer for p in task.test_problems()]
    assert pickle.loads(pickle.dumps(check_choice)) is check_choice


def test_reward_scorer_uses_check_choice_in_its_workers(tmp_path):
    from tempo.rewards.scorer import RewardScorer

    task = build(
        "mmlu_pro", tmp_path, data_files={"test": write_jsonl(tmp_path / "t.jsonl", MMLU_PRO_TEST)}
    )
    gold = task.test_problems()[1].answer  # "B. Paris"
    completions = [
        "Paris is the capital, so \\boxed{B}.",
        "So the answer is \\boxed{\\text{(B)}}",
        "It must be \\boxed{Paris}.",
        "I pick \\boxed{C}.",
        "Either \\boxed{B or C}.",
        "No box: B",
    ]
    scorer = RewardScorer(timeout=10.0, check=task.answer_check)
    try:
        checked = scorer.check(completions, [gold] * len(completions))
    finally:
        scorer.close()
    assert checked.correct == [True, True, True, False, False, False]


# ------------------------------------------------------------------ check_choice

CASES = [
    # (answer, gold, expected)
    ("C", "C", True),
    ("c", "C", True),
    ("(C)", "C", True),
    ("C.", "C", True),
    ("[C]", "C", True),
    (" C ", "C", True),
    ("C) Paris", "C", True),
    ("(C) Paris", "C. Paris", True),
    ("C. Paris", "C. Paris", True),
    ("C: Paris", "C", True),
    ("c) paris", "C", True),
    ("\\text{C}", "C", True),
    ("\\textbf{(C)}", "C", True),
    ("\\mathrm{C}", "C", True),
    ("$C$", "C", True),
    ("**C**", "C", True),
    ("The answer is C", "C", True),
    ("The answer is (C).", "C", True),
    ("Answer: C", "C", True),
    ("the correct option is C", "C", True),
    ("The answer is option C", "C", True),
    ("C, C", "C", True),
    ("Paris", "C. Paris", True),
    ("paris.", "C. Paris", True),
    ("\\text{Paris}", "C. Paris", True),
    ("10^{-4} eV", "B. $10^{-4}$ eV", True),
    # wrong or ambiguous
    ("B", "C", False),
    ("(B)", "C", False),
    ("b", "C", False),
    ("A, C", "C", False),
    ("C or D", "C", False),
    ("C/D", "C", False),
    ("C and D", "C", False),
    ("The answer is C or D", "C", False),
    ("The answer is C. Answer: D", "C", False),
    ("C) Paris (D) Rome", "C", False),
    ("Rome", "C. Paris", False),
    ("Paris", "C", False),  # a letter-only gold cannot match option text
    ("Paris, France", "C. Paris", False),
    ("the answer is c", "C", False),  # lowercase letters only count on their own
    ("C", "C. B", True),  # an option text that looks like a letter: the letter is read
    ("B", "C. B", False),
    ("", "C", False),
    ("   ", "C", False),
    ("CD", "C", False),
    ("Cat", "C", False),
    ("\\boxed{", "C", False),
    ("C" * (MAX_CHOICE_CHARS + 1), "C", False),
]


@pytest.mark.parametrize(("answer", "gold", "expected"), CASES)
def test_check_choice_cases(answer, gold, expected):
    assert check_choice(answer, gold) is expected


def test_check_choice_non_string_answer_and_bad_gold():
    assert check_choice(None, "C") is False  # type: ignore[arg-type]
    for gold in ("", "CC", "c", "C.Paris", "3"):
        with pytest.raises(ValueError, match="multiple-choice gold"):
            check_choice("C", gold)


@pytest.mark.parametrize(
    "hostile",
    [
        "answer " * 140,
        "A, " * 333,
        "(" * 999,
        "\\text{" * 140,
        "answer is A or " * 66,
        "A " * 499,
        "C) " + "D) " * 330,
        "\\textbf{" * 100 + "C" + "}" * 100,
        "{" * 999,
        "x" * 10**6,
    ],
)
def test_check_choice_is_fast_on_hostile_input(hostile):
    started = time.perf_counter()
    for _ in range(20):
        check_choice(hostile, "C. Paris")
    assert (time.perf_counter() - started) / 20 < 0.01


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("overrides", "key", "text"),
    [
        ({"options_field": "options"}, "task.options_field", "exactly one of"),
        ({"option_fields": None}, "task.options_field", "exactly one of"),
        ({"option_fields": ["q_op1"]}, "task.option_fields", "2 to 26 distinct"),
        ({"option_fields": ["q_op1", "q_op1"]}, "task.option_fields", "2 to 26 distinct"),
        ({"option_fields": "q_op1"}, "task.option_fields", "2 to 26 distinct"),
        ({"option_fields": ["q_op1", "q_op9"]}, "task.option_fields[1]", "found ["),
        ({"answer_format": "boxed"}, "task.answer_format", "letter, index, text"),
        ({"shuffle_seed": "x"}, "task.shuffle_seed", "an integer"),
        ({"shuffle_options": "yes"}, "task.shuffle_options", "true or false"),
        ({"match_option_text": 1}, "task.match_option_text", "true or false"),
        ({"question_field": "question"}, "task.question_field", "found ["),
        ({"answer_field": "q_ans", "answer_format": "letter"}, "task.answer_field", "none of the"),
    ],
)
def test_bad_choice_settings_fail_in_one_line(tmp_path, overrides, key, text):
    files = {
        "train": write_jsonl(tmp_path / "train.jsonl", ECQA_TRAIN),
        "test": write_jsonl(tmp_path / "test.jsonl", ECQA_TEST),
    }
    with pytest.raises(ConfigError) as err:
        build("ecqa", tmp_path, data_files=files, **overrides)
    assert err.value.key == key and text in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ the command line


def test_tempo_eval_on_local_ecqa_files(tmp_path, tiny_model, char_tokenizer):
    from tests.test_train_cli import run_module

    tiny_model.save_pretrained(tmp_path / "model")
    char_tokenizer.save_pretrained(tmp_path / "model")
    data = write_jsonl(tmp_path / "test.jsonl", ECQA_TEST)
    proc = run_module(
        "tempo.evaluate",
        "model=hub",
        f"model.name_or_path={tmp_path / 'model'}",
        "tasks=[ecqa]",
        f"+task_overrides.ecqa.data_files.test={data}",
        "eval.samples=2",
        "eval.max_new_tokens=6",
        "trainer.threads=1",
        "trainer.progress_bar=false",
        "save_samples=true",
        f"hydra.run.dir={tmp_path / 'out'}",
        cache=tmp_path / "cache",
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert results["problems"] == {"ecqa": 2}
    assert 0.0 <= results["tasks"]["ecqa"]["pass@2"] <= 1.0
    records = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert {r["gold"] for r in records} == {"B. ice", "E. water"}
    assert {r["prompt"] for r in records} == {
        f"{row['q_text']}\n"
        + "\n".join(f"{x}. {row[f'q_op{i + 1}']}" for i, x in enumerate("ABCDE"))
        + SUFFIX
        for row in ECQA_TEST
    }
