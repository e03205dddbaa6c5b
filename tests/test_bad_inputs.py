# ruff: noqa: E501  (one bad input and the fragments of its expected line per row)
"""The bad-input suite: every kind of bad config value, override, data file, model directory and
checkpoint makes `tempo-train` exit with code 2 and one line on stderr that names the full key
and what is allowed, before any heavy work.

Each case runs the real entry point (`tempo.train.main`: the override check, Hydra's job, every
group's validation and the runner's up-front checks) in this process, because 60 interpreter
start-ups would cost minutes; three cases also run as real subprocesses, which see every line
(warnings, logging, progress bars) a user would. "No heavy work" is checked three ways: the
model directory holds a config and tokenizer but no weights (anything that loads them fails
otherwise), `tempo.runner.build_policy` (weights load / warm-start) is replaced by a tripwire,
and neither the warm-start cache nor a checkpoint folder appears.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

import tempo.runner
import tempo.train
from tests.models.chat_fixtures import save_chat_model
from tests.test_train_cli import SMALL, run_train

NOT_MODEL = [o for o in SMALL if not o.startswith("model.")]
TINY = [o for o in SMALL if o.startswith("model.")]
ROWS = [{"question": f"{i}+1", "answer": str(i + 1)} for i in range(30)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Model directories (none with weights), data files and checkpoint-like files."""
    root = tmp_path_factory.mktemp("inputs")
    model = save_chat_model(root / "model", weights=False)
    config_only = root / "config_only"
    config_only.mkdir()
    shutil.copy(model / "config.json", config_only / "config.json")
    broken = shutil.copytree(model, root / "broken_config")
    (broken / "config.json").write_text("{not json")
    gelu = shutil.copytree(model, root / "gelu")  # an activation the fused decoder lacks
    config = json.loads((gelu / "config.json").read_text())
    (gelu / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu"}))
    (root / "empty_dir").mkdir()
    data = root / "data"
    data.mkdir()
    (data / "good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (data / "empty.jsonl").write_text("")
    (data / "garbage.jsonl").write_text(json.dumps(ROWS[0]) + "\nnot json at all\n")
    (data / "other_fields.jsonl").write_text(
        "".join(json.dumps({"q": r["question"], "answer": r["answer"]}) + "\n" for r in ROWS)
    )
    (data / "plain.json").write_text("hello")
    (data / "rows.txt").write_text("1+1 2\n")
    (root / "not_a_checkpoint.ckpt").write_text("these are not the weights you are looking for")
    torch.save({"something": 1}, root / "foreign.pt")  # a torch file, not a Lightning one
    return {
        "model": model,
        "config_only": config_only,
        "broken": broken,
        "gelu": gelu,
        "empty_dir": root / "empty_dir",
        "data": data,
        "root": root,
    }


def hub(name: str = "model") -> list[str]:
    return [*NOT_MODEL, "model=hub", f"model.name_or_path={{{name}}}"]


def local(file: str, *more: str) -> list[str]:
    return ["task=local", f"task.data_files.train={{data}}/{file}", *more]


# (id, overrides, full key, fragment of what is allowed); {model}, {data}, {root} ... are the
# fixture's paths; a case on the embedded tiny model starts with TINY instead of hub().
CASES = [
    # ---- algorithm.*
    ("lr-nan", [*hub(), "algorithm.lr=nan"], "algorithm.lr", "> 0"),
    ("lr-negative", [*hub(), "algorithm.lr=-1"], "algorithm.lr", "> 0"),
    ("clip_low-type", [*hub(), "algorithm.clip_low=abc"], "algorithm.clip_low", "0 < clip_low < 1"),
    ("clip_high-negative", [*hub(), "algorithm.clip_high=-1"], "algorithm.clip_high", "> 0"),
    ("beta-negative", [*hub(), "algorithm.beta=-0.1"], "algorithm.beta", ">= 0"),
    ("mu-zero", [*hub(), "algorithm.mu=0"], "algorithm.mu", ">= 1"),
    ("group_size-nan", [*hub(), "algorithm.group_size=nan"], "algorithm.group_size", ">= 2"),
    ("max_grad_norm-nan", [*hub(), "algorithm.max_grad_norm=nan"], "algorithm.max_grad_norm", "> 0"),
    ("weight_decay-negative", [*hub(), "algorithm.weight_decay=-1"], "algorithm.weight_decay", ">= 0"),
    ("warmup_steps-negative", [*hub(), "algorithm.warmup_steps=-1"], "algorithm.warmup_steps", "integer >= 0"),
    ("min_lr_ratio-above-1", [*hub(), "algorithm.min_lr_ratio=2"], "algorithm.min_lr_ratio", "[0, 1]"),
    ("micro_batch_size-zero", [*hub(), "algorithm.micro_batch_size=0"], "algorithm.micro_batch_size", ">= 1"),
    ("scale_by_std-type", [*hub(), "algorithm.scale_by_std=maybe"], "algorithm.scale_by_std", "true or false"),
    ("unbiased_std-type", [*hub(), "algorithm.unbiased_std=3"], "algorithm.unbiased_std", "true or false"),
    ("eps-inf", [*hub(), "algorithm.eps=inf"], "algorithm.eps", "finite number >= 0"),
    ("micro_batch_tokens-zero", [*hub(), "algorithm.micro_batch_tokens=0"], "algorithm.micro_batch_tokens", "int >= 1"),
    ("logprob_chunk_tokens-zero", [*hub(), "algorithm.logprob_chunk_tokens=0"], "algorithm.logprob_chunk_tokens", ">= 1"),
    ("aggregation-unknown", [*hub(), "algorithm.aggregation=mean"], "algorithm.aggregation", "grpo, dapo, dr_grpo"),
    ("lr_schedule-unknown", [*hub(), "algorithm.lr_schedule=step"], "algorithm.lr_schedule", "constant, linear, cosine"),
    # ---- rollout.*
    ("max_new_tokens-zero", [*hub(), "rollout.max_new_tokens=0"], "rollout.max_new_tokens", "integer >= 1"),
    ("prompts_per_step-zero", [*hub(), "rollout.prompts_per_step=0"], "rollout.prompts_per_step", "integer >= 1"),
    ("decoder-unknown", [*hub(), "rollout.decoder=vllm"], "rollout.decoder", "auto, fast, hf"),
    ("decoder-fast-unsupported", [*hub("gelu"), "rollout.decoder=fast"], "rollout.decoder", "auto or hf for this model (hidden_act 'gelu')"),
    ("stop_tokens-unknown", [*hub(), "rollout.stop_tokens=[nosuchtoken]"], "rollout.stop_tokens[0]", "a single token"),
    # ---- eval.*
    ("eval-temperature-zero", [*hub(), "eval.temperature=0"], "eval.temperature", "a finite number > 0"),
    ("eval-temperature-inf", [*hub(), "eval.temperature=inf"], "eval.temperature", "a finite number > 0"),
    ("eval-temperature-nan", [*hub(), "eval.temperature=nan"], "eval.temperature", "a finite number > 0"),
    ("eval-samples-zero", [*hub(), "eval.samples=0"], "eval.samples", "integer >= 1"),
    ("eval-ks-beyond-samples", [*hub(), "eval.ks=[1,4]"], "eval.ks", "integers in [1, 2]"),
    ("eval-greedy-type", [*hub(), "eval.greedy=maybe"], "eval.greedy", "true or false"),
    ("eval-task-unavailable", [*hub(), "eval.tasks=[math500]"], "eval.tasks", "+eval.task_overrides.math500.path="),
    # ---- method.* of each method
    ("fixed-temperature-nan", [*hub(), "method.temperature=nan"], "method.temperature", "a finite number > 0"),
    ("meta-candidates-empty", [*hub(), "method=meta_policy", "method.candidates=[]"], "method.candidates", "non-empty list of distinct"),
    ("meta-candidates-negative", [*hub(), "method=meta_policy", "method.candidates=[-1,1]"], "method.candidates", "temperatures > 0"),
    ("meta-candidates-duplicate", [*hub(), "method=meta_policy", "method.candidates=[0.7,0.7]"], "method.candidates", "distinct"),
    ("meta-alpha-above-1", [*hub(), "method=meta_policy", "method.alpha=2"], "method.alpha", "(0, 1]"),
    ("meta-top_p-zero", [*hub(), "method=meta_policy", "method.top_p=0"], "method.top_p", "(0, 1]"),
    ("intro-hidden_ratio-zero", [*hub(), "method=introspective", "method.hidden_ratio=0"], "method.hidden_ratio", "> 0"),
    ("intro-t_init-outside", [*hub(), "method=introspective", "method.t_init=5"], "method.t_init", "[t_min, t_max]"),
    ("intro-optimizer-unknown", [*hub(), "method=introspective", "method.optimizer=lion"], "method.optimizer", "adamw, adam, sgd"),
    ("heuristic-unknown-knob", [*hub(), "method=heuristic", "+method.ead.tmax=2"], "method.ead.tmax", "one of c, t_max, t_min"),
    ("heuristic-unread-knob", [*hub(), "method=heuristic", "method.edt.theta=0.2"], "method.edt.theta", "the selected rule is linear"),
    ("heuristic-ead-c-negative", [*hub(), "method=heuristic", "method.rule=ead", "method.ead.c=-1"], "method.ead.c", "integer >= 0"),
    ("heuristic-quantile-1.5", [*hub(), "method=heuristic", "method.rule=two_level", "method.two_level.quantile=1.5"], "method.two_level.quantile", "(0, 1)"),
    # ---- reward.*
    ("reward-unknown-function", [*hub(), "reward.functions=[{_target_:no.such.fn}]"], "reward.functions[0]._target_", "an importable function"),
    ("reward-weight-nan", [*hub(), "reward.functions=[{_target_:tempo.rewards.builtin.accuracy,weight:nan}]"], "reward.functions[0].weight", "a finite number"),
    ("reward-extraction-unknown", [*hub(), "reward.extraction=regex"], "reward.extraction", "boxed, math_verify"),
    # ---- model.*
    ("model-missing-dir", [*NOT_MODEL, "model=hub", "model.name_or_path={root}/nowhere"], "model.name_or_path", "a directory holding config.json"),
    ("model-dir-without-config", [*hub("empty_dir")], "model.name_or_path", "a directory holding config.json"),
    ("model-dir-without-tokenizer", [*hub("config_only")], "model.name_or_path", "a loadable model"),
    ("model-config-not-json", [*hub("broken")], "model.name_or_path", "a loadable model"),
    ("model-dtype", [*hub(), "model.dtype=float8"], "model.dtype", "auto, float32, bfloat16, float16"),
    ("model-trust_remote_code-not-bool", [*hub(), "model.trust_remote_code=abc"], "model.trust_remote_code", "true or false"),
    ("model-attn_implementation", [*hub(), "model.attn_implementation=flash"], "model.attn_implementation", "eager, sdpa, flash_attention_2, flash_attention_3"),
    ("model-pad_token-unknown", [*hub(), "model.pad_token=nosuchtoken"], "model.pad_token", "a token in the tokenizer's vocabulary"),
    ("tiny-attn_implementation", [*TINY, *NOT_MODEL, "model.attn_implementation=flash"], "model.attn_implementation", "eager, sdpa"),
    ("tiny-warmstart-steps", [*TINY, *NOT_MODEL, "model.warmstart.steps=-1"], "model.warmstart.steps", "integer >= 0"),
    # ---- task and data files
    ("task-unknown", [*hub(), "task=nosuch"], "task", "one of aime24, amc23, arithmetic"),
    ("local-file-missing", [*hub(), *local("missing.jsonl")], "task.data_files.train", "an existing .jsonl/.json/.parquet/.csv file"),
    ("local-file-empty", [*hub(), *local("empty.jsonl", "task.holdout=2")], "task.data_files.train", "a non-empty data file"),
    ("local-file-garbage-line", [*hub(), *local("garbage.jsonl", "task.holdout=1")], "task.data_files.train", "JSON parse error: Invalid value. in row 1"),
    ("local-file-not-json", [*hub(), *local("plain.json", "task.holdout=1")], "task.data_files.train", "a readable data file"),
    ("local-file-extension", [*hub(), *local("rows.txt", "task.holdout=1")], "task.data_files.train", "a file ending in one of .jsonl, .json"),
    ("local-field-missing", [*hub(), *local("other_fields.jsonl", "task.holdout=2")], "task.question_field", "a column of the train data: found ['q', 'answer']"),
    ("local-answer-format-unknown", [*hub(), *local("good.jsonl", "task.holdout=2", "task.answer_format=latex")], "task.answer_format", "raw, gsm8k, boxed, list_first"),
    ("local-answer-format-no-answers", [*hub(), *local("good.jsonl", "task.holdout=2", "task.answer_format=gsm8k")], "task.answer_field", "extractable answers"),
    ("local-no-test-split", [*hub(), *local("good.jsonl")], "task.data_files.test", "holdout: N"),
    ("local-holdout-too-big", [*hub(), *local("good.jsonl", "task.holdout=50")], "task.holdout", "fewer than the 30 usable rows"),
    # ---- top level, trainer, logger, checkpoint
    ("seed-negative", [*hub(), "seed=-1"], "seed", "an integer in [0, 4294967295]"),
    ("seed-text", [*hub(), "seed=abc"], "seed", "an integer in [0, 4294967295]"),
    ("seed-float", [*hub(), "seed=1.5"], "seed", "an integer in [0, 4294967295]"),
    ("max_steps-zero", [*hub(), "trainer.max_steps=0"], "trainer.max_steps", "integer >= 1"),
    ("max_steps-negative", [*hub(), "trainer.max_steps=-3"], "trainer.max_steps", "integer >= 1"),
    ("accelerator-gpu-without-gpu", [*hub(), "trainer.accelerator=gpu"], "trainer.accelerator", "no CUDA GPU is visible"),
    ("trainer-preset-gpu-without-gpu", [*hub(), "trainer=gpu"], "trainer.accelerator", "no CUDA GPU is visible"),
    ("precision-unknown", [*hub(), "trainer.precision=fp8"], "trainer.precision", "32-true"),
    ("progress_bar-type", [*hub(), "trainer.progress_bar=maybe"], "trainer.progress_bar", "true or false"),
    ("logger-unknown", [*hub(), "logger=nosuch"], "logger", "one of jsonl, wandb"),
    ("logger-mode-unknown", [*hub(), "logger=wandb", "logger.mode=loud"], "logger.mode", "auto, online, offline, disabled"),
    ("ckpt-missing", [*hub(), "ckpt_path={root}/none.ckpt"], "ckpt_path", "an existing checkpoint file"),
    ("ckpt-not-a-checkpoint", [*hub(), "ckpt_path={root}/not_a_checkpoint.ckpt"], "ckpt_path", "a Lightning checkpoint file"),
    ("ckpt-foreign-torch-file", [*hub(), "ckpt_path={root}/foreign.pt"], "ckpt_path", "not a Lightning checkpoint (no state_dict, global_step)"),
    ("ckpt-last-without-one", [*hub(), "ckpt_path=last"], "ckpt_path", "'last' only when"),
    ("override-unknown-key", [*hub(), "trainer.foo=1"], "trainer.foo", "the keys already in trainer"),
]  # fmt: skip


def _argv(overrides: list[str], inputs: dict[str, Path], run_dir: Path) -> list[str]:
    """The overrides with each `{name}` of `inputs` replaced by its path (other braces stay)."""
    argv = []
    for override in overrides:
        for name, path in inputs.items():
            override = override.replace(f"{{{name}}}", str(path))
        argv.append(override)
    return [*argv, f"hydra.run.dir={run_dir}"]


class HeavyWork(AssertionError):
    """Raised by the tripwire that replaces the weights load / warm-start."""


def _no_heavy_work(*args, **kwargs):
    raise HeavyWork("the model was about to load (or warm-start) before the error")


def tempo_train(argv: list[str], capfd) -> tuple[int | str | None, list[str]]:
    """`tempo-train <argv>` in this process: its exit code and its non-empty stderr lines."""
    GlobalHydra.instance().clear()
    saved = sys.argv
    sys.argv = ["tempo-train", *argv]
    # Hydra configures logging for the job (a FileHandler on <run dir>/train.log, console
    # handlers); a job in this process must not leave them behind for later tests.
    loggers = [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]
    handlers = {log: list(log.handlers) for log in loggers}
    capfd.readouterr()  # drop anything printed before
    try:
        tempo.train.main()
        code: int | str | None = 0
    except SystemExit as stop:
        code = stop.code
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()
        for log in [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]:
            for handler in log.handlers[:]:
                if handler not in handlers.get(log, []):
                    log.removeHandler(handler)
                    handler.close()
    return code, [line for line in capfd.readouterr().err.splitlines() if line.strip()]


def _case(case) -> object:
    """A CASES row as a pytest parameter (its id first; a pytest.param keeps its marks)."""
    if not hasattr(case, "marks"):
        return pytest.param(*case[1:], id=case[0])
    return pytest.param(*case.values[1:], id=case.values[0], marks=case.marks)


def _values(case) -> tuple:
    return case.values if hasattr(case, "marks") else case


@pytest.mark.parametrize(("overrides", "key", "allowed"), [_case(c) for c in CASES])
def test_bad_input_fails_in_one_line_before_heavy_work(
    overrides, key, allowed, inputs, tmp_path, monkeypatch, capfd
):
    monkeypatch.setattr(tempo.runner, "build_policy", _no_heavy_work)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a GPU machine
    cache = tmp_path / "cache"
    monkeypatch.setenv("TEMPO_CACHE_DIR", str(cache))
    run_dir = tmp_path / "run"

    code, lines = tempo_train(_argv(overrides, inputs, run_dir), capfd)

    assert code == 2, lines
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith(("tempo-train: invalid config: ", "tempo-train: invalid override: ")), (
        line
    )
    assert re.search(rf": '?{re.escape(key)}(=| does not exist)", line), line  # the full key
    assert "is invalid: allowed" in line or "does not exist: allowed" in line, line
    assert allowed in line, line
    assert not cache.exists()  # no warm-start, no cached model
    assert not (run_dir / "checkpoints").exists()


def test_the_suite_covers_at_least_forty_kinds_and_every_area():
    passing = [c for c in CASES if not hasattr(c, "marks")]
    assert len(passing) >= 40 and len({c[0] for c in map(_values, CASES)}) == len(CASES)
    keys = {c[2].split(".")[0].split("[")[0] for c in passing}
    for area in ("algorithm", "rollout", "eval", "method", "reward", "model", "task", "seed"):
        assert area in keys, area
    assert {"trainer", "logger", "ckpt_path"} <= keys


def test_the_good_inputs_of_the_suite_pass_the_same_checks(inputs, tmp_path, monkeypatch, capfd):
    """The cases' base settings are themselves valid: the run reaches the weights load (the
    tripwire) with the no-weights model and the good data file, so each case's exit code 2
    comes from its own bad value."""
    monkeypatch.setattr(tempo.runner, "build_policy", _no_heavy_work)
    for overrides in (hub(), [*hub(), *local("good.jsonl", "task.holdout=5")]):
        code, lines = tempo_train(_argv(overrides, inputs, tmp_path / "run"), capfd)
        assert code == 1 and any("HeavyWork" in line for line in lines), lines
        shutil.rmtree(tmp_path / "run")


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        (["seed=abc"], "seed", "an integer in [0, 4294967295]"),
        (
            ["method=heuristic", "method.edt.theta=0.2"],
            "method.edt.theta",
            "the selected rule is linear",
        ),
        (local("garbage.jsonl", "task.holdout=1"), "task.data_files.train", "JSON parse error"),
    ],
    ids=["seed", "heuristic-unread-knob", "garbage-data-file"],
)
def test_as_a_subprocess_stderr_holds_only_the_error_line(
    inputs, tmp_path, overrides, key, allowed
):
    """A real process shows every line a user would see (warnings, logs, progress bars)."""
    run_dir = tmp_path / "run"
    proc = run_train(
        *_argv([*hub(), *overrides], inputs, run_dir), cache=tmp_path / "cache", timeout=120
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and f"{key}=" in lines[0] and allowed in lines[0], lines
    assert not (tmp_path / "cache").exists() and not (run_dir / "checkpoints").exists()
