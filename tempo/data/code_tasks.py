"""Code benchmarks: HumanEval (Chen et al. 2021), scored by running the tests in a sandbox.

`HumanEvalTask` reuses `BenchmarkTask`'s loading (hub, ``data_files``, ``data_dir``; see
tempo/data/benchmark.py) and changes how a row becomes a problem: the prompt (signature +
docstring) is kept verbatim, unstripped, because the completion continues it; the gold answer
(`Problem.answer`) is a `tempo.rewards.code.code_gold` JSON string with the prompt, the tests,
the entry point and the sandbox limits; the supervised solution is ``canonical_solution`` (the
function body that continues the prompt). The scorer extracts code with `extract_answer`
(`extract_code`, not a ``\\boxed{}``) and checks it with `answer_check` (`check_code`: the
sandboxed program in a verifier worker). Scored pass@1 (and pass@k from n samples) by the
evaluation as every other task.
"""

from __future__ import annotations

from typing import Any

from tempo.config_error import ConfigError
from tempo.data.benchmark import BenchmarkTask, _required_str
from tempo.data.problem import Problem
from tempo.rewards.code import (
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT,
    MAX_CODE_CHARS,
    check_code,
    code_gold,
    extract_code,
)


class HumanEvalTask(BenchmarkTask):
    """HumanEval-style benchmark: rows with a prompt, tests defining ``check(candidate)``, an
    entry point and (optionally) a canonical solution. Takes every `BenchmarkTask` argument
    plus ``entry_point_field``, ``id_field`` (kept in the columns), and the sandbox's
    ``timeout`` (wall-clock seconds per program; keep ``reward.timeout`` above it) and
    ``memory_mb``. ``answer_format`` is ``code`` (the only one)."""

    ANSWER_FORMATS = ("code",)
    answer_check = staticmethod(check_code)  # the scorer's check: run the tests in the sandbox
    extract_answer = staticmethod(extract_code)  # the scorer's extraction: the code, not a box

    def __init__(
        self,
        *,
        name: str = "humaneval",
        question_field: str = "prompt",
        answer_field: str = "test",
        solution_field: str | None = "canonical_solution",
        entry_point_field: str = "entry_point",
        id_field: str | None = "task_id",
        answer_format: str = "code",
        prompt_template: str = "{question}",
        train_split: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        memory_mb: int = DEFAULT_MEMORY_MB,
        **kwargs: Any,
    ) -> None:
        self.entry_point_field = _required_str("entry_point_field", entry_point_field)
        if id_field is not None:
            _required_str("id_field", id_field)
        self.id_field = id_field
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError("timeout", timeout, "a number of seconds > 0")
        self.timeout = float(timeout)
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < 64:
            raise ConfigError("memory_mb", memory_mb, "an integer >= 64 (MiB)")
        self.memory_mb = memory_mb
        super().__init__(
            name=name,
            question_field=question_field,
            answer_field=answer_field,
            solution_field=solution_field,
            answer_format=answer_format,
            prompt_template=prompt_template,
            train_split=train_split,
            **kwargs,
        )

    def _row_columns(self) -> list[tuple[str, str | None]]:
        return [
            *super()._row_columns(),
            ("entry_point_field", self.entry_point_field),
            ("id_field", self.id_field),
        ]

    def _row_problem(self, problem_id: str, row: dict[str, Any]) -> Problem | None:
        """One row as a problem, or None when its prompt, tests or entry point are unusable."""
        prompt, tests = row[self.question_field], row[self.answer_field]
        entry = row[self.entry_point_field]
        if not (isinstance(prompt, str) and prompt.strip() and isinstance(tests, str)):
            return None
        if "def check" not in tests or len(prompt) > MAX_CODE_CHARS:
            return None
        if not isinstance(entry, str) or not entry.strip().isidentifier():
            return None
        solution = row[self.solution_field] if self.solution_field else None
        return Problem(
            id=problem_id,
            question=prompt,
            prompt=self.prompt_template.replace("{question}", prompt),
            answer=code_gold(
                prompt, tests, entry.strip(), timeout=self.timeout, memory_mb=self.memory_mb
            ),
            solution=solution if isinstance(solution, str) else "",
            columns=row,
        )

    def __repr__(self) -> str:
        return (
            super().__repr__()[:-1] + f", timeout={self.timeout}, memory_mb={self.memory_mb})"
        ).replace("BenchmarkTask(", "HumanEvalTask(", 1)
