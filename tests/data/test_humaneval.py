"""HumanEval: the shipped YAML loads local files in the hub's schema, and its problems score
through the real scorer path (task extraction + task check in the verifier workers)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tempo.config_error import ConfigError
from tempo.data.code_tasks import HumanEvalTask
from tempo.hydra_cli import build as build_part
from tempo.rewards.code import extract_code, parse_gold
from tempo.rl.settings import RewardConfig
from tests.data.test_benchmark import write_jsonl

CONF = Path(__file__).resolve().parents[2] / "conf"

# Rows in openai_humaneval's schema (task_id / prompt / canonical_solution / test / entry_point),
# including a helper defined in the prompt that the tests use (as HumanEval/38 and /50 do).
ROWS = [
    {
        "task_id": "HumanEval/0",
        "prompt": 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum of'
        ' xs.\n    >>> total([1, 2])\n    3\n    """\n',
        "canonical_solution": "    return sum(xs)\n",
        "test": "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate([1, 2]) == 3\n"
        "    assert candidate([]) == 0\n",
        "entry_point": "total",
    },
    {
        "task_id": "HumanEval/1",
        "prompt": "def encode(s: str) -> str:\n    return s[::-1]\n\n\ndef decode(s: str) -> str:\n"
        '    """Undo encode."""\n',
        "canonical_solution": "    return s[::-1]\n",
        "test": "def check(candidate):\n    for w in ['ab', 'xyz']:\n"
        "        assert candidate(encode(w)) == w\n",
        "entry_point": "decode",
    },
    {  # unusable: no check in the tests -> skipped
        "task_id": "HumanEval/2",
        "prompt": "def f():\n",
        "canonical_solution": "    return 1\n",
        "test": "assert True\n",
        "entry_point": "f",
    },
]


@pytest.fixture(autouse=True)
def _no_data_dir(monkeypatch):
    monkeypatch.delenv("TEMPO_DATA_DIR", raising=False)


def build(tmp_path: Path, **overrides) -> HumanEvalTask:
    overrides.setdefault("cache_dir", str(tmp_path / "hf-cache"))
    config = OmegaConf.merge(OmegaConf.load(CONF / "task" / "humaneval.yaml"), overrides)
    return build_part("task", config)


def test_yaml_names_the_hub_dataset_and_is_eval_only() -> None:
    config = OmegaConf.load(CONF / "task" / "humaneval.yaml")
    assert config.path == "openai_humaneval" and config.test_split == "test"
    assert config.train_split is None and config.data_files.train is None
    assert (config.question_field, config.answer_field) == ("prompt", "test")
    assert (config.solution_field, config.entry_point_field) == (
        "canonical_solution",
        "entry_point",
    )


def test_loads_local_jsonl_in_the_hub_schema(tmp_path: Path) -> None:
    test_file = write_jsonl(tmp_path / "humaneval" / "test.jsonl", ROWS)
    task = build(tmp_path, data_files={"test": test_file})
    problems = task.test_problems()
    assert [p.id for p in problems] == ["humaneval/test/0", "humaneval/test/1"]
    assert task.skipped == 1 and task.train_size == 0
    first = problems[0]
    assert first.prompt == ROWS[0]["prompt"]  # verbatim: the completion continues it
    assert first.solution == ROWS[0]["canonical_solution"]
    assert first.columns["task_id"] == "HumanEval/0"
    gold = parse_gold(first.answer)
    assert gold["prompt"] == ROWS[0]["prompt"] and gold["test"] == ROWS[0]["test"]
    assert (gold["entry_point"], gold["timeout"], gold["memory_mb"]) == ("total", 3.0, 512)
    assert HumanEvalTask.answer_check.__name__ == "check_code"
    assert task.extract_answer is extract_code
    pickle.dumps((task.answer_check, task.extract_answer))  # they travel to the workers
    with pytest.raises(ConfigError, match="train"):
        task.train_problem(0)
    # data_dir works as for the other benchmarks.
    same = build(tmp_path, data_dir=str(tmp_path))
    assert [p.answer for p in same.test_problems()] == [p.answer for p in problems]


def test_bad_config_values_are_one_line(tmp_path: Path) -> None:
    test_file = write_jsonl(tmp_path / "t.jsonl", ROWS)
    with pytest.raises(ConfigError, match="task.timeout"):
        build(tmp_path, data_files={"test": test_file}, timeout=0)
    with pytest.raises(ConfigError, match="task.entry_point_field"):
        build(tmp_path, data_files={"test": test_file}, entry_point_field="nope")
    with pytest.raises(ConfigError, match="task.answer_format"):
        build(tmp_path, data_files={"test": test_file}, answer_format="raw")


def test_problems_score_through_the_reward_scorer(tmp_path: Path) -> None:
    test_file = write_jsonl(tmp_path / "t.jsonl", ROWS)
    task = build(tmp_path, data_files={"test": test_file}, timeout=2.0)
    total, decode = task.test_problems()
    config = RewardConfig(timeout=5.0)
    scorer = config.scorer(check=task.answer_check, extract=task.extract_answer)
    completions = [
        total.solution,  # the canonical continuation
        "    return len(xs)\n",  # wrong
        "```python\ndef total(xs):\n    return sum(x for x in xs)\n```",  # full, in a block
        "```python\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```",  # uses the
        # prompt's import
        decode.solution,
        "    return s\n",  # wrong: the tests use the prompt's encode
        "    while True:\n        pass\n",
        "    import os\n    return os.listdir('/root')\n",
    ]
    golds = [total.answer] * 4 + [decode.answer] * 4
    try:
        out = scorer(completions, golds)
    finally:
        scorer.close()
    assert out.correct == [True, False, True, True, True, False, False, False]
    assert out.rewards == [float(c) for c in out.correct]
    assert out.answers[2] == "def total(xs):\n    return sum(x for x in xs)\n"
