"""Benchmark tasks: every shipped YAML parses fixture files in its benchmark's real schema."""

from __future__ import annotations

import hashlib
import json
import pickle
import time
from pathlib import Path

import hydra
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tempo.config_error import ConfigError
from tempo.data.answer_formats import build_solution, extract_answer
from tempo.data.benchmark import DEFAULT_PROMPT, BenchmarkTask
from tempo.data.problem import Problem
from tempo.hydra_cli import build as build_part

CONF = Path(__file__).resolve().parents[2] / "conf"
BENCHMARKS = (
    "gsm8k",
    "math",
    "math500",
    "aime24",
    "amc23",
    "minerva",
    "olympiadbench",
    "omni_math",
)
SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}.\n"


@pytest.fixture(autouse=True)
def _no_data_dir(monkeypatch):
    """The YAMLs read TEMPO_DATA_DIR; tests that want it set it themselves."""
    monkeypatch.delenv("TEMPO_DATA_DIR", raising=False)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def write_parquet(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def load_yaml(name: str):
    return OmegaConf.load(CONF / "task" / f"{name}.yaml")


def build(name: str, tmp_path: Path, **overrides) -> BenchmarkTask:
    """The shipped YAML with `overrides` merged in, instantiated as the entry points do (a
    constructor's ConfigError comes out as one `task.<key>` line) with a private cache."""
    overrides.setdefault("cache_dir", str(tmp_path / "hf-cache"))
    return build_part("task", OmegaConf.merge(load_yaml(name), overrides))


def quad(problems: list[Problem]) -> list[tuple[str, str, str, str]]:
    return [(p.question, p.answer, p.prompt, p.solution) for p in problems]


# ------------------------------------------------------------------ fixtures in real schemas

GSM8K_TRAIN = [
    {
        "question": "Tom has 1,200 stamps and buys 34 more. How many stamps does he have?",
        "answer": "He has 1200+34=<<1200+34=1234>>1,234 stamps.\n#### 1,234",
    },
    {
        "question": "A box holds 6 eggs. How many eggs are in 4 boxes?",
        "answer": "4 boxes hold 4*6=<<4*6=24>>24 eggs.\n#### 24",
    },
    {"question": "Broken row without a final answer.", "answer": "No marker here."},
]
GSM8K_TEST = [
    {
        "question": "Sam reads 5 pages a day for 7 days. How many pages?",
        "answer": "Sam reads 5*7=<<5*7=35>>35 pages.\n#### 35",
    },
    {
        "question": "Ann had $12 and spent $5. How much is left?",
        "answer": "She has 12-5=<<12-5=7>>7 dollars left.\n#### 7",
    },
]

MATH_TRAIN = [
    {
        "problem": "Simplify $\\frac{1}{\\sqrt{2}}$.",
        "level": "Level 2",
        "type": "Algebra",
        "solution": "Multiply top and bottom by $\\sqrt{2}$ to get "
        "$\\boxed{\\frac{\\sqrt{2}}{2}}$.",
    },
    {
        "problem": "What is $2+3$?",
        "level": "Level 1",
        "type": "Prealgebra",
        "solution": "We have $2+3=\\boxed{5}$.",
    },
    {
        "problem": "A problem whose solution has no box.",
        "level": "Level 1",
        "type": "Prealgebra",
        "solution": "The answer is 4.",
    },
]
MATH_TEST = [
    {
        "problem": "Find the set of $x$ with $x^2=1$.",
        "level": "Level 3",
        "type": "Algebra",
        "solution": "Since $x^2=1$, $x=\\pm 1$, so the set is $\\boxed{\\{-1, 1\\}}$.",
    },
    {
        "problem": "Compute $\\dbinom{4}{2}$.",
        "level": "Level 1",
        "type": "Counting & Probability",
        "solution": "$\\dbinom{4}{2}=\\boxed{6}$ ways.",
    },
]

MATH500_TEST = [
    {
        "problem": "Convert the point $(0,3)$ to polar coordinates.",
        "solution": "We have $r = 3$ and $\\theta = \\frac{\\pi}{2}$, so the point is "
        "$\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.",
        "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
        "subject": "Precalculus",
        "level": 2,
        "unique_id": "test/precalculus/807.json",
    },
    {
        "problem": "What is $1+1$?",
        "solution": "Adding gives $2$.",
        "answer": "2",
        "subject": "Prealgebra",
        "level": 1,
        "unique_id": "test/prealgebra/1.json",
    },
]

AIME24_TEST = [
    {
        "id": 60,
        "problem": "Find the remainder when $2^{10}$ is divided by $1000$.",
        "solution": "$2^{10}=1024$, so the remainder is $\\boxed{024}$.\n~author",
        "answer": "24",
        "url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_I_Problems/Problem_1",
        "year": "2024",
    },
    {
        "id": 61,
        "problem": "How many positive divisors does $12$ have?",
        "solution": "They are 1, 2, 3, 4, 6, 12: $\\boxed{6}$.",
        "answer": "6",
        "url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_I_Problems/Problem_2",
        "year": "2024",
    },
]

AMC23_TEST = [
    {
        "id": 0,
        "question": "Cities $A$ and $B$ are $45$ miles apart. How far from $A$ do they meet?",
        "answer": 27.0,
        "url": "https://artofproblemsolving.com/wiki/index.php/2023_AMC_12A_Problems/Problem_1",
    },
    {
        "id": 1,
        "question": "What is the value of $\\frac{3}{4}$ as a decimal?",
        "answer": 0.75,
        "url": "https://artofproblemsolving.com/wiki/index.php/2023_AMC_12A_Problems/Problem_2",
    },
]

MINERVA_TEST = [
    {
        "question": "Each of the two Magellan telescopes has a diameter of $6.5 \\mathrm{~m}$. "
        "What is the area of one mirror in $\\mathrm{m}^2$?",
        "answer": "33.2",
    },
    {"question": "Compute $\\lambda$ in nm for $E = 2$ eV.", "answer": "620"},
]

OLYMPIAD_TEST = [
    {
        "id": 1606,
        "question": "Compute the smallest positive integer $n$ such that $n^2 > 50$.",
        "final_answer": ["$8$"],
        "modality": "Text-only",
        "is_multiple_answer": False,
        "unit": None,
        "answer_type": "Numerical",
        "language": "English",
    },
    {
        "id": 1607,
        "question": "Find $x$ with $2x = 1$.",
        "final_answer": ["$\\frac{1}{2}$"],
        "modality": "Text-only",
        "is_multiple_answer": False,
        "unit": None,
        "answer_type": "Expression",
        "language": "English",
    },
    {
        "id": 1608,
        "question": "A row with no final answer.",
        "final_answer": [],
        "modality": "Text-only",
        "is_multiple_answer": False,
        "unit": None,
        "answer_type": "Numerical",
        "language": "English",
    },
]


OMNI_MATH_TEST = [
    {
        "domain": ["Mathematics -> Algebra -> Intermediate Algebra -> Inequalities"],
        "difficulty": 6.5,
        "problem": "Find the largest $c$ with $a^2+b^2 \\ge c\\,ab$ for all real $a, b$.",
        "solution": "By AM-GM, $a^2+b^2 \\ge 2ab$, so the answer is $\\boxed{2}$.",
        "answer": "2",
        "source": "china_national_olympiad",
    },
    {
        "domain": ["Mathematics -> Number Theory -> Other", "Mathematics -> Algebra -> Other"],
        "difficulty": 8.0,
        "problem": "Determine all $n$ such that $n^2 + 1$ divides $n + 1$.",
        "solution": "Only small $n$ work; checking gives $n \\in \\{0, 1\\}$.",
        "answer": "\\{0, 1\\}",
        "source": "imo_shortlist",
    },
]

# open-s1 rows: problem / solution / answer / source / messages (a chat list).
OPEN_S1_TRAIN = [
    {
        "problem": f"What is ${i} \\times 3$?",
        "solution": f"Multiplying, ${i} \\times 3 = \\boxed{{{3 * i}}}$.",
        "answer": str(3 * i),
        "source": "AI-MO/NuminaMath-CoT/synthetic_math",
        "messages": [
            {"content": f"What is ${i} \\times 3$?", "role": "user"},
            {"content": f"${3 * i}$", "role": "assistant"},
        ],
    }
    for i in range(1, 13)
]


# ------------------------------------------------------------------ one test per shipped YAML


def test_gsm8k_yaml_parses_jsonl(tmp_path):
    task = build(
        "gsm8k",
        tmp_path,
        data_files={
            "train": write_jsonl(tmp_path / "train.jsonl", GSM8K_TRAIN),
            "test": write_jsonl(tmp_path / "test.jsonl", GSM8K_TEST),
        },
    )
    assert task.name == "gsm8k"
    assert quad(task.test_problems()) == [
        (
            GSM8K_TEST[0]["question"],
            "35",
            GSM8K_TEST[0]["question"] + SUFFIX,
            "Sam reads 5*7=35 pages. \\boxed{35}",
        ),
        (
            GSM8K_TEST[1]["question"],
            "7",
            GSM8K_TEST[1]["question"] + SUFFIX,
            "She has 12-5=7 dollars left. \\boxed{7}",
        ),
    ]
    train = {p.question: p for p in (task.train_problem(i) for i in range(task.train_size))}
    assert task.train_size == 2 and task.skipped == 1  # the row without #### is dropped
    first = train[GSM8K_TRAIN[0]["question"]]
    assert first.answer == "1234"  # "1,234" -> "1234"
    assert first.solution == "He has 1200+34=1,234 stamps. \\boxed{1234}"
    assert first.id == "gsm8k/train/0"


def test_math_yaml_parses_parquet_with_nested_boxes(tmp_path):
    task = build(
        "math",
        tmp_path,
        data_files={
            "train": write_parquet(tmp_path / "train.parquet", MATH_TRAIN),
            "test": write_parquet(tmp_path / "test.parquet", MATH_TEST),
        },
    )
    assert quad(task.test_problems()) == [
        (
            MATH_TEST[0]["problem"],
            "\\{-1, 1\\}",
            MATH_TEST[0]["problem"] + SUFFIX,
            "Since $x^2=1$, $x=\\pm 1$, so the set is $\\{-1, 1\\}$. \\boxed{\\{-1, 1\\}}",
        ),
        (
            MATH_TEST[1]["problem"],
            "6",
            MATH_TEST[1]["problem"] + SUFFIX,
            "$\\dbinom{4}{2}=6$ ways. \\boxed{6}",
        ),
    ]
    assert task.skipped == 1 and task.skipped_by_role == {"train": 1, "test": 0}
    train = {p.question: p for p in (task.train_problem(i) for i in range(task.train_size))}
    simplify = train[MATH_TRAIN[0]["problem"]]
    assert simplify.answer == "\\frac{\\sqrt{2}}{2}"
    assert simplify.solution == (
        "Multiply top and bottom by $\\sqrt{2}$ to get $\\frac{\\sqrt{2}}{2}$."
        " \\boxed{\\frac{\\sqrt{2}}{2}}"
    )


def test_math500_yaml_is_eval_only(tmp_path):
    task = build(
        "math500", tmp_path, data_files={"test": write_jsonl(tmp_path / "t.jsonl", MATH500_TEST)}
    )
    assert quad(task.test_problems()) == [
        (
            MATH500_TEST[0]["problem"],
            "\\left( 3, \\frac{\\pi}{2} \\right)",
            MATH500_TEST[0]["problem"] + SUFFIX,
            "We have $r = 3$ and $\\theta = \\frac{\\pi}{2}$, so the point is "
            "$\\left( 3, \\frac{\\pi}{2} \\right)$. \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}",
        ),
        ("What is $1+1$?", "2", "What is $1+1$?" + SUFFIX, "Adding gives $2$. \\boxed{2}"),
    ]
    with pytest.raises(ConfigError, match="no train split") as err:
        task.train_problem(0)
    assert err.value.key == "train_split"


def test_aime24_yaml_parses_parquet(tmp_path):
    task = build(
        "aime24",
        tmp_path,
        data_files={"test": write_parquet(tmp_path / "aime.parquet", AIME24_TEST)},
    )
    assert quad(task.test_problems()) == [
        (
            AIME24_TEST[0]["problem"],
            "24",
            AIME24_TEST[0]["problem"] + SUFFIX,
            "$2^{10}=1024$, so the remainder is $024$.\n~author \\boxed{24}",
        ),
        (
            AIME24_TEST[1]["problem"],
            "6",
            AIME24_TEST[1]["problem"] + SUFFIX,
            "They are 1, 2, 3, 4, 6, 12: $6$. \\boxed{6}",
        ),
    ]
    assert [p.id for p in task.test_problems()] == ["aime24/test/0", "aime24/test/1"]


def test_amc23_yaml_prints_integral_float_answers_without_decimals(tmp_path):
    task = build(
        "amc23", tmp_path, data_files={"test": write_jsonl(tmp_path / "amc.jsonl", AMC23_TEST)}
    )
    assert quad(task.test_problems()) == [
        (AMC23_TEST[0]["question"], "27", AMC23_TEST[0]["question"] + SUFFIX, "\\boxed{27}"),
        (AMC23_TEST[1]["question"], "0.75", AMC23_TEST[1]["question"] + SUFFIX, "\\boxed{0.75}"),
    ]


def test_minerva_yaml_parses_jsonl(tmp_path):
    task = build(
        "minerva", tmp_path, data_files={"test": write_jsonl(tmp_path / "m.jsonl", MINERVA_TEST)}
    )
    assert quad(task.test_problems()) == [
        (
            MINERVA_TEST[0]["question"],
            "33.2",
            MINERVA_TEST[0]["question"] + SUFFIX,
            "\\boxed{33.2}",
        ),
        (MINERVA_TEST[1]["question"], "620", MINERVA_TEST[1]["question"] + SUFFIX, "\\boxed{620}"),
    ]


def test_olympiadbench_yaml_takes_the_first_final_answer_without_dollars(tmp_path):
    task = build(
        "olympiadbench",
        tmp_path,
        data_files={"test": write_jsonl(tmp_path / "o.jsonl", OLYMPIAD_TEST)},
    )
    assert quad(task.test_problems()) == [
        (OLYMPIAD_TEST[0]["question"], "8", OLYMPIAD_TEST[0]["question"] + SUFFIX, "\\boxed{8}"),
        (
            OLYMPIAD_TEST[1]["question"],
            "\\frac{1}{2}",
            OLYMPIAD_TEST[1]["question"] + SUFFIX,
            "\\boxed{\\frac{1}{2}}",
        ),
    ]
    assert task.skipped == 1  # empty final_answer list
    assert [p.id for p in task.test_problems()] == ["olympiadbench/test/0", "olympiadbench/test/1"]


def test_omni_math_yaml_is_eval_only_with_raw_latex_answers(tmp_path):
    task = build(
        "omni_math",
        tmp_path,
        data_files={"test": write_jsonl(tmp_path / "o.jsonl", OMNI_MATH_TEST)},
    )
    assert quad(task.test_problems()) == [
        (
            OMNI_MATH_TEST[0]["problem"],
            "2",
            OMNI_MATH_TEST[0]["problem"] + SUFFIX,
            "By AM-GM, $a^2+b^2 \\ge 2ab$, so the answer is $2$. \\boxed{2}",
        ),
        (
            OMNI_MATH_TEST[1]["problem"],
            "\\{0, 1\\}",
            OMNI_MATH_TEST[1]["problem"] + SUFFIX,
            OMNI_MATH_TEST[1]["solution"] + " \\boxed{\\{0, 1\\}}",
        ),
    ]
    assert getattr(task, "answer_check", None) is None  # checked by Math-Verify
    assert task.test_problems()[1].columns["domain"] == OMNI_MATH_TEST[1]["domain"]
    with pytest.raises(ConfigError, match="no train split"):
        task.train_problem(0)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_composes_with_train_yaml_and_local_files(name, tmp_path):
    test_file = write_jsonl(tmp_path / "test.jsonl", [{"q": "What is 2+2?", "a": "4"}])
    overrides = [
        f"task={name}",
        f"task.data_files.test={test_file}",
        "task.question_field=q",
        "task.answer_field=a",
        "task.solution_field=null",
        "task.answer_format=raw",
        f"task.cache_dir={tmp_path / 'hf-cache'}",
    ]
    if name in ("gsm8k", "math"):
        overrides.append(f"task.data_files.train={test_file}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    task = build_part("task", cfg.task)
    assert isinstance(task, BenchmarkTask) and task.name == cfg.task.name == name
    assert quad(task.test_problems()) == [
        ("What is 2+2?", "4", "What is 2+2?" + SUFFIX, "\\boxed{4}")
    ]
    if name in ("gsm8k", "math"):
        assert task.train_problem(3).answer == "4"


# ------------------------------------------------------------------ sources


def test_data_dir_files_are_used_before_the_hub(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_jsonl(data / "gsm8k" / "train.jsonl", GSM8K_TRAIN)
    write_parquet(data / "gsm8k" / "test.parquet", GSM8K_TEST)
    monkeypatch.setenv("TEMPO_DATA_DIR", str(data))
    cfg = load_yaml("gsm8k")
    assert cfg.data_dir == str(data)  # ${oc.env:TEMPO_DATA_DIR,null}
    task = hydra.utils.instantiate(cfg, cache_dir=str(tmp_path / "hf-cache"))
    assert [p.answer for p in task.test_problems()] == ["35", "7"]
    assert task.train_size == 2
    assert str(data / "gsm8k" / "test.parquet") in task.source


def test_data_dir_is_null_without_the_environment_variable():
    assert load_yaml("math500").data_dir is None


def test_data_dir_without_files_and_without_a_hub_id_names_the_folder(tmp_path):
    with pytest.raises(ConfigError, match="test.jsonl") as err:
        BenchmarkTask(name="mine", data_dir=str(tmp_path))
    assert err.value.key == "data_dir"


def test_offline_missing_hub_dataset_fails_fast_with_one_config_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    if not datasets.config.HF_HUB_OFFLINE:
        pytest.skip("datasets was imported before offline mode was set")
    empty_data_dir = tmp_path / "nothing-here"
    empty_data_dir.mkdir()
    started = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        build("gsm8k", tmp_path, data_dir=str(empty_data_dir))  # falls through to the hub
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, f"offline failure took {elapsed:.1f}s"
    assert err.value.key == "task.path" and err.value.value == "openai/gsm8k"
    message = str(err.value)
    assert "\n" not in message
    assert "offline mode (HF_DATASETS_OFFLINE=1) and not cached" in message
    assert message.startswith("task.path='openai/gsm8k' is invalid: allowed a hub dataset")


# ------------------------------------------------------------------ training stream


def _train_task(tmp_path: Path, seed: int, rows: int = 12) -> BenchmarkTask:
    train = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(rows)]
    files = {
        "train": write_jsonl(tmp_path / "many.jsonl", train),
        "test": write_jsonl(tmp_path / "test.jsonl", GSM8K_TEST),
    }
    return build("gsm8k", tmp_path, data_files=files, seed=seed)


def test_train_problem_wraps_with_a_seeded_permutation_per_pass(tmp_path):
    task = _train_task(tmp_path, seed=0)
    n = task.train_size
    assert n == 12
    first, second = (
        [task.train_problem(i).question for i in range(start, start + n)] for start in (0, n)
    )
    everything = sorted(f"q{i}" for i in range(n))
    assert sorted(first) == sorted(second) == everything  # every pass covers each row once
    assert first != everything  # shuffled
    far = 3 * 10**9 + 5  # the datamodule's seed offsets are this large
    assert task.train_problem(far).question in everything


def test_train_order_is_deterministic_per_seed_and_differs_between_seeds(tmp_path):
    def order(task: BenchmarkTask) -> list[str]:
        return [task.train_problem(i).question for i in range(30)]

    a, b = _train_task(tmp_path, seed=0), _train_task(tmp_path, seed=0)
    c = _train_task(tmp_path, seed=1)
    assert order(a) == order(b)
    assert order(a) != order(c)
    assert order(a) == order(pickle.loads(pickle.dumps(a)))
    assert repr(a) == repr(b) and repr(a) != repr(c)  # warm-start caches key on repr


def test_benchmark_without_a_train_file_is_eval_only(tmp_path):
    task = build(
        "gsm8k", tmp_path, data_files={"test": write_jsonl(tmp_path / "t.jsonl", GSM8K_TEST)}
    )
    assert task.train_size == 0
    with pytest.raises(ConfigError) as err:
        task.train_problem(0)
    assert err.value.key == "data_files.train"


def test_train_file_on_an_eval_only_benchmark_is_rejected(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", MATH500_TEST)
    with pytest.raises(ConfigError, match="eval-only") as err:
        build("math500", tmp_path, data_files={"train": path, "test": path})
    assert err.value.key == "task.data_files.train"


def test_num_test_keeps_the_first_rows(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", GSM8K_TEST)
    task = build("gsm8k", tmp_path, data_files={"test": path}, num_test=1)
    assert [p.answer for p in task.test_problems()] == ["35"]


def test_filters_keep_matching_rows(tmp_path):
    path = write_parquet(tmp_path / "m.parquet", MATH_TEST)
    task = build(
        "math",
        tmp_path,
        data_files={"test": path},
        filters={"type": ["Algebra", "Geometry"]},
    )
    assert [p.answer for p in task.test_problems()] == ["\\{-1, 1\\}"]


# ------------------------------------------------------------------ errors


def test_missing_file_names_the_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        build("aime24", tmp_path, data_files={"test": str(tmp_path / "absent.jsonl")})
    assert err.value.key == "task.data_files.test"
    assert str(err.value).startswith("task.data_files.test=")


def test_unknown_extension_and_unknown_role_are_rejected(tmp_path):
    txt = tmp_path / "t.txt"
    txt.write_text("x")
    with pytest.raises(ConfigError, match=".jsonl") as err:
        build("aime24", tmp_path, data_files={"test": str(txt)})
    assert err.value.key == "task.data_files.test"
    with pytest.raises(ConfigError) as err:
        build("aime24", tmp_path, data_files={"validation": str(txt)})
    assert err.value.key == "task.data_files"


def test_missing_field_lists_the_columns_found(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", MINERVA_TEST)
    with pytest.raises(ConfigError) as err:
        build("minerva", tmp_path, data_files={"test": path}, question_field="problem")
    assert err.value.key == "task.question_field"
    assert "found ['question', 'answer']" in str(err.value)


def test_unknown_answer_format_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="raw") as err:
        build("minerva", tmp_path, answer_format="latex")
    assert err.value.key == "task.answer_format"


def test_prompt_template_needs_the_question(tmp_path):
    with pytest.raises(ConfigError) as err:
        build("minerva", tmp_path, prompt_template="Solve: \\boxed{}")
    assert err.value.key == "task.prompt_template"


def test_empty_file_and_unextractable_answers_are_config_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ConfigError, match="non-empty") as err:
        build("minerva", tmp_path, data_files={"test": str(empty)})
    assert err.value.key == "task.data_files.test"
    no_box = write_jsonl(tmp_path / "nobox.jsonl", [MATH_TRAIN[2]])
    with pytest.raises(ConfigError, match="none of the 1 test rows") as err:
        build("math", tmp_path, data_files={"test": no_box})
    assert err.value.key == "task.answer_field"


def test_no_source_at_all_is_rejected():
    with pytest.raises(ConfigError) as err:
        BenchmarkTask(name="x")
    assert err.value.key == "path"


# ------------------------------------------------------------------ answer formats


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        ("work\n#### 1,234", "gsm8k", "1234"),
        ("a #### 1 then #### -2,000,000", "gsm8k", "-2000000"),
        ("no marker", "gsm8k", None),
        ("so $\\boxed{\\frac{1}{\\sqrt{2}}}$.", "boxed", "\\frac{1}{\\sqrt{2}}"),
        ("\\boxed{1} then \\boxed{\\{a, b\\}}", "boxed", "\\{a, b\\}"),
        ("the answer is $\\boxed 5$.", "boxed", "5"),
        ("\\fbox{7}", "boxed", "7"),
        ("unclosed \\boxed{3", "boxed", None),
        (["$$x = 2$$", "$3$"], "list_first", "x = 2"),
        ([], "list_first", None),
        ("  42 ", "raw", "42"),
        (27.0, "raw", "27"),
        (7, "raw", "7"),
        (None, "raw", None),
    ],
)
def test_extract_answer(value, fmt, expected):
    assert extract_answer(value, fmt) == expected


def test_build_solution_always_ends_in_the_boxed_answer():
    assert build_solution(None, "3", "raw") == "\\boxed{3}"
    assert build_solution("", "3", "raw") == "\\boxed{3}"
    assert build_solution(["First way: $\\boxed{3}$.", "Second"], "3", "list_first") == (
        "First way: $3$. \\boxed{3}"
    )
    assert build_solution("x = <<1+2=3>>3\n#### 3", "3", "gsm8k") == "x = 3 \\boxed{3}"


def test_default_prompt_matches_the_yamls():
    for name in BENCHMARKS:
        assert load_yaml(name).prompt_template == DEFAULT_PROMPT


# ------------------------------------------------------------------ open-s1: hub holdout


def held_out(rows: list[dict], field: str, n: int, seed: int) -> list[str]:
    """The documented rule, recomputed: the n questions whose blake2b(seed|question) is lowest,
    in row order."""
    ranked = sorted(
        range(len(rows)),
        key=lambda i: hashlib.blake2b(f"{seed}|{rows[i][field]}".encode(), digest_size=16).digest(),
    )
    return [rows[i][field] for i in sorted(ranked[:n])]


def hub_folder(root: Path, splits: dict[str, list[dict]]) -> str:
    """A dataset repository laid out as on the hub (data/<split>-00000-of-00001.parquet), which
    `datasets.load_dataset(path)` reads through the same hub code path, offline."""
    for split, rows in splits.items():
        write_parquet(root / "data" / f"{split}-00000-of-00001.parquet", rows)
    return str(root)


def test_open_s1_yaml_holds_out_rows_of_the_hub_train_split(tmp_path):
    repo = hub_folder(tmp_path / "open-s1", {"train": OPEN_S1_TRAIN})
    task = build("open_s1", tmp_path, path=repo, holdout=4)
    assert task.source == repo and task.test_split is None
    test = task.test_problems()
    assert [p.question for p in test] == held_out(OPEN_S1_TRAIN, "problem", 4, seed=0)
    assert task.train_size == 8
    train = {task.train_problem(i).question for i in range(8)}
    assert train | {p.question for p in test} == {r["problem"] for r in OPEN_S1_TRAIN}
    assert not train & {p.question for p in test}
    rows = {r["problem"]: (i, r) for i, r in enumerate(OPEN_S1_TRAIN)}
    for problem in test:
        index, row = rows[problem.question]
        assert problem.id == f"open_s1/train/{index}"  # ids keep the train split's row numbers
        assert problem.answer == row["answer"]
        assert problem.solution == (
            f"Multiplying, ${index + 1} \\times 3 = {row['answer']}$. \\boxed{{{row['answer']}}}"
        )
    other = build("open_s1", tmp_path, path=repo, holdout=4, holdout_seed=1)
    assert [p.question for p in other.test_problems()] == held_out(
        OPEN_S1_TRAIN, "problem", 4, seed=1
    )
    assert load_yaml("open_s1").holdout == 500  # the shipped value (ours)


def test_open_s1_yaml_with_a_local_train_file_or_data_dir(tmp_path, monkeypatch):
    expected = held_out(OPEN_S1_TRAIN, "problem", 3, seed=0)
    path = write_jsonl(tmp_path / "all.jsonl", OPEN_S1_TRAIN)
    task = build("open_s1", tmp_path, data_files={"train": path}, holdout=3)
    assert [p.question for p in task.test_problems()] == expected
    data = tmp_path / "data"
    write_parquet(data / "open_s1" / "train.parquet", OPEN_S1_TRAIN)
    monkeypatch.setenv("TEMPO_DATA_DIR", str(data))
    from_dir = build("open_s1", tmp_path, holdout=3, data_dir=str(data))
    assert [p.question for p in from_dir.test_problems()] == expected
    assert str(data / "open_s1" / "train.parquet") in from_dir.source
    write_jsonl(data / "open_s1" / "test.jsonl", OPEN_S1_TRAIN[:2])
    with pytest.raises(ConfigError, match="has a test file") as err:
        build("open_s1", tmp_path, holdout=3, data_dir=str(data))
    assert err.value.key == "task.holdout"


def test_open_s1_composes_with_train_yaml(tmp_path):
    repo = hub_folder(tmp_path / "open-s1", {"train": OPEN_S1_TRAIN})
    overrides = [
        "task=open_s1",
        f"task.path={repo}",
        "task.holdout=2",
        f"task.cache_dir={tmp_path / 'hf-cache'}",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    task = build_part("task", cfg.task)
    assert task.name == "open_s1" and task.train_size == 10 and len(task.test_problems()) == 2
    assert cfg.task.prompt_template == DEFAULT_PROMPT


@pytest.mark.parametrize(
    ("splits", "values", "key", "text"),
    [
        (  # a real test split is never silently replaced by held-out rows
            ("train", "test"),
            {"holdout": 2, "test_split": "test"},
            "task.holdout",
            "has the test split 'test'",
        ),
        (("train",), {"holdout": None}, "task.test_split", "or holdout: N"),
        (("train",), {"holdout": None, "test_split": "test"}, "task.test_split", "or holdout: N"),
        (("train",), {"holdout": 2, "train_split": None}, "task.holdout", "eval-only"),
        (("train",), {"holdout": 2, "train_split": "dev"}, "task.train_split", "['train']"),
        (("train",), {"holdout": 12}, "task.holdout", "fewer than the 12 usable rows"),
    ],
)
def test_bad_hub_holdout_settings_fail_in_one_line(tmp_path, splits, values, key, text):
    repo = hub_folder(tmp_path / "repo", {split: OPEN_S1_TRAIN for split in splits})
    with pytest.raises(ConfigError) as err:
        build("open_s1", tmp_path, path=repo, **values)
    assert err.value.key == key and text in str(err.value), str(err.value)
    assert "\n" not in str(err.value)
