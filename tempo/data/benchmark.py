"""Benchmarks loaded through `datasets`: GSM8K, MATH, MATH-500, AIME, AMC, Minerva, OlympiadBench.

One `BenchmarkTask` class serves every benchmark; its YAML (conf/task/) names the source and the
fields. Data comes, in this order, from

1. ``data_files`` (``{train: path, test: path}``; .jsonl/.json/.parquet/.csv by extension),
2. ``data_dir`` (``<data_dir>/<name>/{train,test}.{jsonl,json,parquet,csv}``, if a test file
   is there; the YAMLs default it to ``$TEMPO_DATA_DIR``),
3. the hub (``path`` with optional ``subset`` and ``revision``; the local cache in offline mode).

Local files use the roles ``train`` and ``test`` as their names, whatever the hub splits are
called (AIME 2024's only hub split is "train"; its local file is ``test.jsonl``). Data with
a train split and no test split also works (a single ``data_files.train`` file, a data_dir
folder with only ``train.<ext>``, or a hub dataset whose only split is the train split, e.g.
open-s1): ``holdout: N`` (ours) then holds out N of its usable rows as the test split, chosen
by a hash of each question under ``holdout_seed`` (the same rows on every run, whatever the row
order, the training seed or the RL seed).

Everything is loaded and checked in ``__init__``, so a bad id, file or field fails before any
model work, with one `ConfigError` line. Rows whose gold answer cannot be extracted are
skipped and counted (``skipped``). Training reads a seeded permutation of the train split,
reshuffled every pass (``train_problem`` wraps around); evaluation reads the first
``num_test`` test rows in file order. Answers are checked by Math-Verify (gold first), so no
``answer_check`` is set. Subclasses (`tempo.data.multiple_choice.MultipleChoiceTask`) reuse the
loading and change how a row becomes a problem through `_row_problem` / `_row_columns` and the
allowed answer formats through `ANSWER_FORMATS`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tempo.config_error import ConfigError
from tempo.data.answer_formats import ANSWER_FORMATS, build_solution, extract_answer
from tempo.data.problem import Problem

ROLES = ("train", "test")
# File extension -> `datasets` packaged builder.
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
DEFAULT_PROMPT = (
    "{question}\nPlease reason step by step, and put your final answer within \\boxed{}.\n"
)
_TRUE = {"1", "ON", "YES", "TRUE"}
_OFFLINE_VARS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
_MAX_DETAIL = 300  # characters of a library error kept in a ConfigError line


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_str(key: str, value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(key, value, "a non-empty string or null")
    return value


def _required_str(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, value, "a non-empty string")
    return value


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    text = text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."
    return f"{type(err).__name__}: {text}"


def _reader_error(err: BaseException) -> BaseException:
    """The reader's own error in an exception chain: `datasets` wraps it (e.g. pyarrow's
    "JSON parse error: Invalid value. in row 1") in a generic DatasetGenerationError."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if not type(current).__module__.startswith("datasets"):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return err


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """`datasets` without its progress bars and log lines (errors are raised, and reported by
    tempo in one line) for the duration; its settings are restored afterwards."""
    from datasets.utils import logging as ds_logging

    verbosity, bars = ds_logging.get_verbosity(), ds_logging.is_progress_bar_enabled()
    ds_logging.set_verbosity(ds_logging.CRITICAL)
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        ds_logging.set_verbosity(verbosity)
        if bars:
            ds_logging.enable_progress_bar()


def hub_offline() -> bool:
    """True when `datasets` / `huggingface_hub` must not touch the network."""
    if any(os.environ.get(var, "").upper() in _TRUE for var in _OFFLINE_VARS):
        return True
    from datasets import config

    return bool(getattr(config, "HF_HUB_OFFLINE", False))


class BenchmarkTask:
    """A fixed benchmark read through `datasets`; see the module docstring for the sources.

    `answer_format` says how the gold answer comes out of `answer_field` (raw | gsm8k | boxed |
    list_first, see `tempo.data.answer_formats`); `solution_field` (optional) gives the worked
    solution used for supervised warm-start. `prompt_template` has ``{question}`` replaced
    literally (other braces, e.g. ``\\boxed{}``, stay as written). `filters` keeps only rows
    whose column equals the given value (or one of a list of values).

    After loading: `source` says where the data came from, `train_size` counts training
    problems (0 when eval-only), `skipped` / `skipped_by_role` count rows without an
    extractable gold answer.

    `holdout` (ours) turns train-only data (a single ``data_files.train`` file, a data_dir
    folder with only a train file, or a hub dataset's `train_split` when `test_split` is null or
    not a split of it) into train and test splits: the `holdout` usable rows whose
    ``blake2b(holdout_seed|question)`` sorts lowest are held out (in file order), the rest are
    trained on; their ids keep the train split's row numbers.
    """

    ANSWER_FORMATS: tuple[str, ...] = ANSWER_FORMATS  # allowed `answer_format` values

    def __init__(
        self,
        *,
        name: str,
        path: str | None = None,
        subset: str | None = None,
        revision: str | None = None,
        data_files: Mapping[str, str | None] | None = None,
        data_dir: str | None = None,
        cache_dir: str | None = None,
        train_split: str | None = "train",
        test_split: str | None = "test",
        question_field: str = "problem",
        answer_field: str = "answer",
        solution_field: str | None = None,
        answer_format: str = "raw",
        prompt_template: str = DEFAULT_PROMPT,
        num_test: int | None = None,
        seed: int = 0,
        filters: Mapping[str, Any] | None = None,
        holdout: int | None = None,
        holdout_seed: int = 0,
    ) -> None:
        self.name = _required_str("name", name)
        self.path = _optional_str("path", path)
        self.subset = _optional_str("subset", subset)
        self.revision = _optional_str("revision", revision)
        self.data_dir = _optional_str("data_dir", data_dir)
        self.cache_dir = _optional_str("cache_dir", cache_dir)
        self.train_split = _optional_str("train_split", train_split)
        self.test_split = _optional_str("test_split", test_split)
        self.question_field = _required_str("question_field", question_field)
        self.answer_field = _required_str("answer_field", answer_field)
        self.solution_field = _optional_str("solution_field", solution_field)
        if answer_format not in self.ANSWER_FORMATS:
            raise ConfigError(
                "answer_format", answer_format, f"one of {', '.join(self.ANSWER_FORMATS)}"
            )
        self.answer_format = answer_format
        if not isinstance(prompt_template, str) or "{question}" not in prompt_template:
            raise ConfigError("prompt_template", prompt_template, "a string containing {question}")
        self.prompt_template = prompt_template
        if num_test is not None and (not _is_int(num_test) or num_test < 1):
            raise ConfigError("num_test", num_test, "an integer >= 1, or null for the whole split")
        self.num_test = num_test
        if not _is_int(seed):
            raise ConfigError("seed", seed, "an integer")
        self.seed = seed
        if holdout is not None and (not _is_int(holdout) or holdout < 1):
            raise ConfigError(
                "holdout", holdout, "an integer >= 1 (rows of the train split to test on), or null"
            )
        self.holdout = holdout
        if not _is_int(holdout_seed):
            raise ConfigError("holdout_seed", holdout_seed, "an integer")
        self.holdout_seed = holdout_seed
        self.filters = self._check_filters(filters)
        self.data_files = self._check_data_files(data_files)
        self._check_holdout_source()

        self.skipped = 0  # rows dropped because their gold answer could not be extracted
        self.skipped_by_role: dict[str, int] = {}
        self.source = ""
        self._origin: dict[str, str] = {}  # role -> the config key that supplied its data
        tables = self._load()
        if self.holdout is None:
            self._test = self._problems("test", tables["test"])
            self._train = self._problems("train", tables["train"]) if "train" in tables else None
        else:
            self._train, self._test = self._hold_out(self._problems("train", tables["train"]))
        self._fingerprint = self._digest()
        self._epoch: tuple[int, list[int]] | None = None

    # ----------------------------------------------------------------- public interface

    @property
    def train_size(self) -> int:
        """Number of usable training problems (0 for an eval-only benchmark)."""
        return len(self._train) if self._train else 0

    def train_problem(self, index: int) -> Problem:
        """The index-th training problem: pass ``index // n`` over a seeded permutation."""
        if self._train is None:
            if self.train_split is None:
                raise ConfigError(
                    "train_split",
                    None,
                    f"a split to train on: benchmark {self.name!r} has no train split "
                    "(eval-only; evaluate it with tempo-eval or train on another task)",
                )
            raise ConfigError(
                "data_files.train",
                None,
                f"a train file: benchmark {self.name!r} was loaded from {self.source} "
                "without one (eval-only as configured)",
            )
        if not _is_int(index) or index < 0:
            raise IndexError(f"problem index must be a non-negative integer, got {index!r}")
        epoch, position = divmod(index, len(self._train))
        if self._epoch is None or self._epoch[0] != epoch:
            order = list(range(len(self._train)))
            key = f"{self.name}|{self.seed}|{epoch}".encode()
            seed = int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "big")
            random.Random(seed).shuffle(order)
            self._epoch = (epoch, order)
        return self._train[self._epoch[1][position]]

    def test_problems(self) -> list[Problem]:
        """The held-out problems: the first `num_test` usable test rows (all if null)."""
        return list(self._test[: self.num_test] if self.num_test else self._test)

    def __repr__(self) -> str:
        return (
            f"BenchmarkTask(name={self.name!r}"
            f", fields={self.question_field}/{self.answer_field}/{self.solution_field}"
            f", answer_format={self.answer_format}, prompt_template={self.prompt_template!r}"
            f", filters={self.filters}, num_test={self.num_test}, seed={self.seed}"
            f", data={self._fingerprint})"
        )

    # ----------------------------------------------------------------- validation

    @staticmethod
    def _check_filters(filters: object) -> dict[str, list[Any]]:
        if filters is None:
            return {}
        if not isinstance(filters, Mapping) or not all(isinstance(k, str) for k in filters):
            raise ConfigError("filters", filters, "a mapping column -> value (or list of values)")
        return {
            key: list(value)
            if isinstance(value, Sequence) and not isinstance(value, str)
            else [value]
            for key, value in filters.items()
        }

    def _check_data_files(self, data_files: object) -> dict[str, Path]:
        if data_files is None:
            return {}
        if not isinstance(data_files, Mapping) or any(k not in ROLES for k in data_files):
            raise ConfigError("data_files", data_files, "a mapping with keys train and/or test")
        found: dict[str, Path] = {}
        for role in ROLES:
            value = data_files.get(role)
            if value is None:
                continue
            found[role] = self._check_file(f"data_files.{role}", value)
        if found and "test" not in found and self.holdout is None:
            raise ConfigError(
                "data_files.test",
                None,
                "a file with the held-out problems (or holdout: N to test on N rows of the train"
                " file)",
            )
        if "train" in found and self.train_split is None:
            raise ConfigError(
                "data_files.train",
                str(found["train"]),
                "null for an eval-only benchmark (train_split is null); "
                "set train_split: train to train on this file",
            )
        return found

    def _check_holdout_source(self) -> None:
        """`holdout` needs train-only data; `test_split` null needs `holdout`."""
        if self.holdout is None:
            if self.test_split is None and not self.data_files:
                raise ConfigError(
                    "test_split",
                    None,
                    "a split to evaluate on, or holdout: N to hold out N rows of the train split",
                )
            return
        if self.data_files and set(self.data_files) != {"train"}:
            raise ConfigError(
                "holdout",
                self.holdout,
                "null unless data_files gives only a train file (it holds out rows of that file;"
                " data_files.test is the held-out split here)",
            )
        if not self.data_files and self.path is None and self.data_dir is None:
            raise ConfigError(
                "holdout",
                self.holdout,
                "null unless data_files gives only a train file, or a data_dir / hub dataset"
                " (path) gives a train split without a test split",
            )
        if self.train_split is None:
            raise ConfigError(
                "holdout",
                self.holdout,
                "null for an eval-only benchmark (train_split is null): it holds out rows of the"
                " train split",
            )

    @staticmethod
    def _check_file(key: str, value: object) -> Path:
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            raise ConfigError(key, value, "a path to a .jsonl/.json/.parquet/.csv file")
        file = Path(value).expanduser()
        if file.suffix.lower() not in BUILDERS:
            raise ConfigError(key, str(value), f"a file ending in one of {', '.join(BUILDERS)}")
        if not file.is_file():
            raise ConfigError(key, str(value), "an existing .jsonl/.json/.parquet/.csv file")
        return file

    # ----------------------------------------------------------------- loading

    def _local_files(self) -> tuple[dict[str, Path], str]:
        """Local files by role and the config key that named them; empty if none apply."""
        if self.data_files:
            return self.data_files, "data_files"
        if self.data_dir is None:
            return {}, ""
        folder = Path(self.data_dir).expanduser() / self.name
        found: dict[str, Path] = {}
        for role in ROLES:
            for suffix in BUILDERS:
                if (folder / f"{role}{suffix}").is_file():
                    found[role] = folder / f"{role}{suffix}"
                    break
        needed = "test" if self.holdout is None else "train"
        if needed not in found:
            if self.path is None:
                raise ConfigError(
                    "data_dir",
                    self.data_dir,
                    f"a folder holding {self.name}/{needed}.jsonl (or .json/.parquet/.csv)",
                )
            return {}, ""
        if self.holdout is not None and "test" in found:
            raise ConfigError(
                "holdout",
                self.holdout,
                f"null when data_dir has a test file ({found['test']}; holdout is for data"
                " without a test split): set holdout: null to test on that file",
            )
        return found, "data_dir"

    def _load(self) -> dict[str, Any]:
        """Datasets by role: ``test`` always, ``train`` unless the benchmark is eval-only."""
        files, key = self._local_files()
        if files:
            self.source = ", ".join(f"{role}={file}" for role, file in files.items())
            tables = {}
            for role, file in files.items():
                if role == "test" or self.train_split is not None:
                    self._origin[role] = f"{key}.{role}" if key == "data_files" else key
                    tables[role] = self._load_file(self._origin[role], file, role)
            return tables
        if self.path is None:
            raise ConfigError(
                "path", None, "a hub dataset id, or local files (data_files / data_dir)"
            )
        self.source = self.path + (f" ({self.subset})" if self.subset else "")
        splits = self._load_hub()
        if self.holdout is not None:
            if self.test_split is not None and self.test_split in splits:
                raise ConfigError(
                    "holdout",
                    self.holdout,
                    f"null when {self.source} has the test split {self.test_split!r} (set"
                    " test_split: null to hold out rows of the train split instead)",
                )
            wanted = {"train": self.train_split}
        else:
            wanted = {"test": self.test_split}
            if self.train_split is not None:
                wanted["train"] = self.train_split
        tables = {}
        for role, split in wanted.items():
            if split not in splits:
                hint = " (or holdout: N to test on N rows of the train split)" * (role == "test")
                raise ConfigError(
                    f"{role}_split", split, f"a split of {self.source}: {sorted(splits)}{hint}"
                )
            self._origin[role] = f"{role}_split"
            tables[role] = splits[split]
        return tables

    def _load_file(self, key: str, file: Path, role: str) -> Any:
        import datasets

        if file.stat().st_size == 0:
            raise ConfigError(key, str(file), "a non-empty data file (this one has no rows)")
        try:
            with _quiet_datasets():  # a bad file is reported in one line, not a log and bars
                return datasets.load_dataset(
                    BUILDERS[file.suffix.lower()],
                    data_files={role: str(file)},
                    split=role,
                    cache_dir=self.cache_dir,
                )
        except Exception as err:  # noqa: BLE001 - any reader failure is a bad file
            raise ConfigError(
                key, str(file), f"a readable data file ({_one_line(_reader_error(err))})"
            ) from err

    def _load_hub(self) -> Any:
        import datasets

        offline = hub_offline()
        try:
            return datasets.load_dataset(
                self.path, self.subset, revision=self.revision, cache_dir=self.cache_dir
            )
        except Exception as err:  # noqa: BLE001 - report every hub failure as one config line
            if offline:
                raise ConfigError(
                    "path",
                    self.path,
                    "a hub dataset in the local cache or local files (data_files / data_dir)"
                    " — offline mode (HF_DATASETS_OFFLINE=1) and not cached",
                ) from None
            raise ConfigError(
                "path",
                self.path,
                f"a loadable hub dataset (subset={self.subset!r}, revision={self.revision!r};"
                f" {_one_line(err)})",
            ) from err

    # ----------------------------------------------------------------- rows -> problems

    def _row_columns(self) -> list[tuple[str, str | None]]:
        """(config key, column) pairs every row must have; None = the key is unset."""
        return [
            ("question_field", self.question_field),
            ("answer_field", self.answer_field),
            ("solution_field", self.solution_field),
        ]

    def _row_problem(self, problem_id: str, row: dict[str, Any]) -> Problem | None:
        """One row as a problem, or None when its question or gold answer is unusable."""
        answer = extract_answer(row[self.answer_field], self.answer_format)
        question = row[self.question_field]
        if answer is None or not isinstance(question, str) or not question.strip():
            return None
        question = question.strip()
        solution_value = row[self.solution_field] if self.solution_field else None
        return Problem(
            id=problem_id,
            question=question,
            prompt=self.prompt_template.replace("{question}", question),
            answer=answer,
            solution=build_solution(solution_value, answer, self.answer_format),
            columns=row,
        )

    def _problems(self, role: str, table: Any) -> list[Problem]:
        if len(table) == 0:
            raise ConfigError(self._origin[role], self._where(role), "a non-empty split")
        columns = list(table.column_names)
        fields = [
            *self._row_columns(),
            *((f"filters.{column}", column) for column in self.filters),
        ]
        for key, column in fields:
            if column is not None and column not in columns:
                raise ConfigError(key, column, f"a column of the {role} data: found {columns}")
        problems: list[Problem] = []
        skipped = 0
        for index, row in enumerate(table.to_list()):
            if any(row[column] not in allowed for column, allowed in self.filters.items()):
                continue
            problem = self._row_problem(f"{self.name}/{role}/{index}", row)
            if problem is None:
                skipped += 1
                continue
            problems.append(problem)
        self.skipped += skipped
        self.skipped_by_role[role] = skipped
        if not problems:
            raise ConfigError(
                "answer_field",
                self.answer_field,
                f"a field with extractable answers (answer_format={self.answer_format}): none of"
                f" the {len(table)} {role} rows of {self.source} gave one"
                + (f" after filters {self.filters}" if self.filters else ""),
            )
        return problems

    def _hold_out(self, pool: list[Problem]) -> tuple[list[Problem], list[Problem]]:
        """(train, test): the `holdout` problems of `pool` that hash lowest go to test."""
        if self.holdout >= len(pool):
            raise ConfigError(
                "holdout",
                self.holdout,
                f"fewer than the {len(pool)} usable rows of {self._origin['train']}"
                " (the others train)",
            )

        def rank(position: int) -> tuple[bytes, int]:
            key = f"{self.holdout_seed}|{pool[position].question}".encode()
            return hashlib.blake2b(key, digest_size=16).digest(), position

        held = set(sorted(range(len(pool)), key=rank)[: self.holdout])
        train = [p for i, p in enumerate(pool) if i not in held]
        return train, [p for i, p in enumerate(pool) if i in held]

    def _where(self, role: str) -> str:
        """The value behind `_origin[role]`: the split name or the file path."""
        if self._origin[role].endswith("_split"):
            return str(self.test_split if role == "test" else self.train_split)
        if self._origin[role] == "data_dir":
            return str(self.data_dir)
        return str(self.data_files[role])

    def _digest(self) -> str:
        """Stable hash of the loaded problems, so caches keyed by repr() follow the data."""
        h = hashlib.blake2b(digest_size=8)
        for role, problems in (("train", self._train or []), ("test", self._test)):
            for p in problems:
                h.update(json.dumps([role, p.id, p.question, p.answer, p.solution]).encode())
        return h.hexdigest()
