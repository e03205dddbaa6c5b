"""`task=local`: a user's own jsonl/CSV files through conf/task/local.yaml and BenchmarkTask,
including `holdout` (one file split into train and test), its errors, and both CLIs."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from tempo.config_error import ConfigError
from tempo.data.benchmark import BenchmarkTask
from tempo.hydra_cli import build, compose_task
from tests.test_train_cli import SMALL, run_module, run_train

# Twelve distinct additions; each row also carries a column no field names.
ROWS = [
    {"q": f"{a}+{b}", "a": str(a + b), "tag": f"t{i}"}
    for i, (a, b) in enumerate(
        [
            (1, 2),
            (3, 4),
            (5, 6),
            (7, 1),
            (2, 9),
            (8, 8),
            (4, 0),
            (6, 3),
            (9, 9),
            (0, 5),
            (3, 3),
            (7, 7),
        ]
    )
]
FIELDS = {"question_field": "q", "answer_field": "a", "prompt_template": "{question}="}


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def write_csv(path: Path, rows: list[dict]) -> str:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def local(tmp_path: Path, **values) -> BenchmarkTask:
    """conf/task/local.yaml composed as `task=local`, with `values` merged, built as the CLIs
    build it (a ConfigError comes out as one `task.<key>` line)."""
    values.setdefault("cache_dir", str(tmp_path / "hf-cache"))
    return build("task", compose_task("local", values))


def test_jsonl_train_and_test_files_with_renamed_fields(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", ROWS[:8])
    test = write_jsonl(tmp_path / "test.jsonl", ROWS[8:])
    task = local(tmp_path, data_files={"train": train, "test": test}, **FIELDS)
    assert task.name == "local" and task.train_size == 8
    got = [(p.question, p.answer, p.prompt, p.solution) for p in task.test_problems()]
    assert got == [(r["q"], r["a"], r["q"] + "=", "\\boxed{" + r["a"] + "}") for r in ROWS[8:]]
    assert [p.id for p in task.test_problems()] == [f"local/test/{i}" for i in range(4)]
    # one pass over the training stream visits every train row once
    assert sorted(task.train_problem(i).question for i in range(8)) == sorted(
        r["q"] for r in ROWS[:8]
    )
    assert task.test_problems()[0].columns == ROWS[8]  # every field of the row, tag included


def held_out_questions(rows: list[dict], n: int, seed: int) -> set[str]:
    """The documented rule, recomputed: the n questions whose blake2b(seed|question) is lowest."""
    ranked = sorted(
        rows, key=lambda r: hashlib.blake2b(f"{seed}|{r['q']}".encode(), digest_size=16).digest()
    )
    return {r["q"] for r in ranked[:n]}


def test_a_single_csv_file_with_holdout_splits_into_train_and_test(tmp_path):
    rows = [{"q": r["q"], "a": f"{r['q']} makes #### {r['a']}"} for r in ROWS]
    fields = {**FIELDS, "answer_format": "gsm8k"}
    task = local(
        tmp_path, data_files={"train": write_csv(tmp_path / "all.csv", rows)}, holdout=4, **fields
    )
    test = {p.question for p in task.test_problems()}
    assert test == held_out_questions(rows, 4, seed=0)
    assert task.train_size == 8
    train = {task.train_problem(i).question for i in range(8)}
    assert train | test == {r["q"] for r in rows} and not train & test
    by_question = {r["q"]: r for r in ROWS}
    for problem in task.test_problems():  # gsm8k format: the number after ####
        assert problem.answer == by_question[problem.question]["a"]
        row = next(i for i, r in enumerate(rows) if r["q"] == problem.question)
        assert problem.id == f"local/train/{row}"  # ids keep the file's row numbers
    # file order is kept among the held-out rows
    order = [
        next(i for i, r in enumerate(rows) if r["q"] == p.question) for p in task.test_problems()
    ]
    assert order == sorted(order)

    # the same rows whatever the file's row order; another holdout_seed picks others
    flipped = write_csv(tmp_path / "flipped.csv", rows[::-1])
    again = local(tmp_path, data_files={"train": flipped}, holdout=4, **fields)
    assert {p.question for p in again.test_problems()} == test
    other = local(tmp_path, data_files={"train": flipped}, holdout=4, holdout_seed=1, **fields)
    assert {p.question for p in other.test_problems()} == held_out_questions(rows, 4, seed=1)
    assert {p.question for p in other.test_problems()} != test


def test_only_a_test_file_is_an_eval_only_task(tmp_path):
    task = local(tmp_path, data_files={"test": write_jsonl(tmp_path / "t.jsonl", ROWS)}, **FIELDS)
    assert task.train_size == 0 and len(task.test_problems()) == len(ROWS)
    with pytest.raises(ConfigError) as err:
        task.train_problem(0)
    assert err.value.key == "data_files.train"


@pytest.mark.parametrize(
    ("values", "key", "text"),
    [
        ({"files": ("train", "test"), "holdout": 2}, "task.holdout", "data_files.test is the"),
        ({"files": ("train",), "holdout": 12}, "task.holdout", "fewer than the 12 usable rows"),
        ({"files": ("train",), "holdout": 0}, "task.holdout", "an integer >= 1"),
        ({"files": ("train",), "holdout": True}, "task.holdout", "an integer >= 1"),
        ({"files": (), "holdout": 2}, "task.holdout", "null unless data_files gives only"),
        ({"files": ("train",), "holdout": 2, "holdout_seed": "x"}, "task.holdout_seed", "integer"),
        ({"files": ("train",)}, "task.data_files.test", "or holdout: N"),
        ({"files": ("test",), "question_field": "question"}, "task.question_field", "found"),
        (
            {"files": ("test",), "data_files": {"test": "/no/such.jsonl"}},
            "task.data_files.test",
            "an existing",
        ),
    ],
)
def test_bad_local_settings_fail_in_one_line(tmp_path, values, key, text):
    values = dict(values)
    files = {role: write_jsonl(tmp_path / f"{role}.jsonl", ROWS) for role in values.pop("files")}
    values.setdefault("data_files", files)
    with pytest.raises(ConfigError) as err:
        local(tmp_path, **{**FIELDS, **values})
    assert err.value.key == key and text in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ the command lines


def test_tempo_train_on_one_local_file_with_holdout(tmp_path):
    rows = [{"q": f"{a}+{b}", "a": str(a + b)} for a in range(6) for b in range(5)]
    data = write_jsonl(tmp_path / "mine.jsonl", rows)
    proc = run_train(
        *SMALL,
        "task=local",
        f"task.data_files.train={data}",
        "task.holdout=6",
        "task.question_field=q",
        "task.answer_field=a",
        "task.prompt_template='{question}='",
        "task.name=sums",
        "trainer.max_steps=1",
        "eval.at_start=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        cache=tmp_path / "cache",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["task"] == "sums"
    assert 0.0 <= summary["final"]["eval/sums/pass@2"] <= 1.0


def test_tempo_train_with_a_missing_local_file_fails_in_one_line(tmp_path):
    proc = run_train(
        "task=local",
        f"task.data_files.train={tmp_path}/absent.csv",
        "task.holdout=5",
        f"hydra.run.dir={tmp_path / 'run'}",
        cache=tmp_path / "cache",
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"tempo-train: invalid config: task.data_files.train='{tmp_path}/absent.csv' is invalid:"
        " allowed an existing .jsonl/.json/.parquet/.csv file"
    ]
    assert not (tmp_path / "cache").exists()  # before any model work


def test_tempo_eval_on_a_local_test_file(tmp_path, tiny_model, char_tokenizer):
    tiny_model.save_pretrained(tmp_path / "model")
    char_tokenizer.save_pretrained(tmp_path / "model")
    data = write_csv(tmp_path / "test.csv", [{"q": r["q"], "a": r["a"]} for r in ROWS[:5]])
    proc = run_module(
        "tempo.evaluate",
        "model=hub",
        f"model.name_or_path={tmp_path / 'model'}",
        "tasks=[local]",
        f"+task_overrides.local.data_files.test={data}",
        "+task_overrides.local.question_field=q",
        "+task_overrides.local.answer_field=a",
        "+task_overrides.local.prompt_template='{question}='",
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
    assert results["problems"] == {"local": 5}
    assert sorted(results["tasks"]["local"]) == sorted(
        ["accuracy", "avg@2", "pass@1", "pass@2", "maj@1", "maj@2", "temperature_mean"]
    )
    records = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == [r["q"] + "=" for r in ROWS[:5]]
