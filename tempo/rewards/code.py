"""Code rewards: does the completion's function pass the benchmark's tests? (HumanEval style)

Program assembly (`build_solution`):

1. the code is the completion's last fenced block tagged ``python`` / ``py`` / ``python3`` or
   untagged (a closed one), else the whole completion (`extract_code`);
2. if the code defines ``entry_point`` at top level (parsed with `ast`), the solution is
   ``prompt + "\\n" + code``: the prompt's imports and helpers come first and the completion's
   own definition replaces the prompt's stub; otherwise the code is the continuation of the
   prompt (HumanEval's prompt is the signature + docstring) and the solution is
   ``prompt + code``.

How the prompt reaches the check: it travels in the gold answer (`code_gold`: a JSON string
with ``prompt``, ``test``, ``entry_point`` and the sandbox's ``timeout`` / ``memory_mb``),
because a scorer's check only receives ``(answer, gold)``. In the sandbox the solution runs in
its own namespace; the tests (``test`` defines ``check(candidate)``) run in a fresh one where
the prompt is executed again first (its helpers, e.g. HumanEval/38's ``encode_cyclic``, come
from the benchmark, not from the completion), then ``check(<the solution's entry_point>)`` is
called. `assemble_program` renders the equivalent single file (the human-eval harness's
``prompt + completion + test + check(entry_point)``) for reading and debugging.

`code_reward` scores one completion directly; `check_code` is the picklable task check the
verifier workers run (`HumanEvalTask.answer_check`), with `extract_code` as the task's answer
extraction. See `tempo.rewards.sandbox` for what the sandbox guarantees and what it does not.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from typing import Any

from tempo.rewards.sandbox import SandboxResult, run_sandboxed

#: Longest code (characters) that is run; longer extractions score 0 unrun. Ours: 20,000,
#: about 5k tokens, far above any HumanEval solution.
MAX_CODE_CHARS = 20_000
DEFAULT_TIMEOUT = 3.0  # sandbox wall-clock seconds per program (ours)
DEFAULT_MEMORY_MB = 512  # sandbox address-space limit (ours; HumanEval needs < 100 MB)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = ("", "python", "py", "python3")


def extract_code(completion: str) -> str | None:
    """The code of a completion: its last closed ```python (or untagged ```) block, else the
    whole completion; None if empty or longer than `MAX_CODE_CHARS` (bounded, linear)."""
    if not isinstance(completion, str) or len(completion) > 4 * MAX_CODE_CHARS:
        return None
    blocks = [body for tag, body in _FENCE.findall(completion) if tag.lower() in _PYTHON_TAGS]
    code = blocks[-1] if blocks else completion
    if not code.strip() or len(code) > MAX_CODE_CHARS:
        return None
    return code


# The scorer's cap on this extraction's answers (code is longer than any final answer).
extract_code.max_answer_chars = MAX_CODE_CHARS  # type: ignore[attr-defined]


def defines(code: str, name: str) -> bool:
    """Whether ``code`` parses and defines ``name`` at top level (def, async def, class, or a
    plain assignment)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return True
        elif isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                return True
    return False


def build_solution(code: str, entry_point: str, prompt: str = "") -> str:
    """The solution source for ``code`` (see the module docstring, step 2)."""
    if defines(code, entry_point):
        return f"{prompt}\n{code}" if prompt else code
    return prompt + code


def assemble_program(code: str, tests: str, entry_point: str, prompt: str = "") -> str:
    """One-file rendering: solution, tests, then ``check(<entry_point>)`` (for humans; the
    sandbox runs the same parts in separate namespaces)."""
    solution = build_solution(code, entry_point, prompt)
    return f"{solution}\n\n{tests}\n\ncheck({entry_point})\n"


def run_code(
    completion: str,
    tests: str,
    entry_point: str,
    *,
    prompt: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
    extract: bool = True,
) -> SandboxResult | None:
    """The sandbox's full result for a completion (None: no code to run)."""
    code = extract_code(completion) if extract else completion
    if code is None or not isinstance(entry_point, str) or not entry_point.isidentifier():
        return None
    solution = build_solution(code, entry_point, prompt)
    return run_sandboxed(
        solution, tests, entry_point, prompt=prompt, timeout=timeout, memory_mb=memory_mb
    )


def code_reward(
    completion: str,
    tests: str,
    entry_point: str,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    prompt: str = "",
    memory_mb: int = DEFAULT_MEMORY_MB,
) -> float:
    """1.0 if the completion's ``entry_point`` passes ``tests`` (which define
    ``check(candidate)``) in the sandbox within ``timeout`` seconds, else 0.0."""
    result = run_code(
        completion, tests, entry_point, prompt=prompt, timeout=timeout, memory_mb=memory_mb
    )
    return 1.0 if result is not None and result.passed else 0.0


def code_gold(
    prompt: str,
    test: str,
    entry_point: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
) -> str:
    """The gold answer a code problem carries: what `check_code` needs, as JSON."""
    fields = {
        "prompt": prompt,
        "test": test,
        "entry_point": entry_point,
        "timeout": float(timeout),
        "memory_mb": int(memory_mb),
    }
    return json.dumps(fields, sort_keys=True)


def parse_gold(gold: str) -> Mapping[str, Any]:
    """The fields of a `code_gold` string; raises ValueError if it is not one."""
    try:
        fields = json.loads(gold)
    except (TypeError, ValueError) as err:
        raise ValueError(f"not a code gold answer: {str(gold)[:80]!r}") from err
    if not isinstance(fields, dict) or not {"test", "entry_point"} <= set(fields):
        raise ValueError(f"not a code gold answer: {str(gold)[:80]!r}")
    return fields


def check_code(answer: str, gold: str) -> bool:
    """Task check (run in a verifier worker): does the extracted code ``answer`` pass the
    tests of ``gold`` (a `code_gold` string)? ``answer`` is already extracted code."""
    fields = parse_gold(gold)
    if not isinstance(answer, str) or not answer.strip() or len(answer) > MAX_CODE_CHARS:
        return False
    result = run_code(
        answer,
        str(fields["test"]),
        str(fields["entry_point"]),
        prompt=str(fields.get("prompt") or ""),
        timeout=float(fields.get("timeout", DEFAULT_TIMEOUT)),
        memory_mb=int(fields.get("memory_mb", DEFAULT_MEMORY_MB)),
        extract=False,
    )
    return result is not None and result.passed
