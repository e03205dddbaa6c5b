"""`tempo-train` on locally built hub-style models: chat template, several EOS ids, short
context, a tokenizer without special tokens; each up-front error in one line, before loading."""

from __future__ import annotations

import json

import pytest

from tests.models.chat_fixtures import char_tokenizer, save_chat_model
from tests.test_train_cli import SMALL, run_module, run_train

NOT_MODEL = [o for o in SMALL if not o.startswith("model.")]


def test_chat_model_trains_with_its_template_stop_ids_schedule_and_two_eval_tasks(tmp_path):
    folder = save_chat_model(tmp_path / "model")
    run = tmp_path / "run"
    proc = run_train(
        *NOT_MODEL,
        "model=hub",
        f"model.name_or_path={folder}",
        "prompt.system_prompt=Be brief.",
        "eval.tasks=[countdown]",
        "eval.num_problems=3",
        "algorithm.lr_schedule=linear",
        "algorithm.warmup_steps=1",
        "algorithm.min_lr_ratio=0.5",
        "algorithm.lr=1e-3",
        "samples.every=1",
        f"hydra.run.dir={run}",
        cache=tmp_path / "cache",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "samples" / "step000000.jsonl").open()]
    problems = {row["gold"] for row in rows}
    assert problems and all(
        row["prompt"].startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
        and row["prompt"].endswith("=<|im_end|>\n<|im_start|>assistant\n")
        for row in rows
    )
    lines = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    lrs = [line["train/lr"] for line in lines if "train/lr" in line]
    # 3 steps: warm-up 1/1 at step 0, then linear from 1 to 0.5 over the 2 steps after it.
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3 * (1 - 0.5 * 1 / 2)])
    final = json.loads((run / "summary.json").read_text())["final"]
    assert {"eval/arithmetic/accuracy", "eval/countdown/accuracy", "eval/countdown/pass@2"} <= set(
        final
    )
    config = json.loads((run / "run_config.json").read_text())
    assert config["prompt"]["system_prompt"] == "Be brief."


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        (["rollout.max_new_tokens=250"], "rollout.max_new_tokens", "context is 64 tokens"),
        (["rollout.stop_tokens=[ab]"], "rollout.stop_tokens[0]", "single token"),
        (["prompt.chat_template=true", "+tok=plain"], "prompt.chat_template", "no chat template"),
        (["+tok=bare"], "model.eos_token", "model.eos_token=<token>"),
        (["eval.tasks=[nosuchtask]"], "eval.tasks", "one of"),
    ],
)
def test_up_front_errors_are_one_line_and_come_before_any_weights(
    tmp_path, overrides, key, fragment
):
    kind = next((o.split("=")[1] for o in overrides if o.startswith("+tok=")), "chat")
    tokenizer = {
        "chat": char_tokenizer(chat_template=True),
        "plain": char_tokenizer(),
        "bare": char_tokenizer(pad=False, eos=False),
    }[kind]
    # No weights in the folder: an error raised after loading them could not say this.
    folder = save_chat_model(
        tmp_path / "model", tokenizer=tokenizer, context=64, weights=False, eos_ids=[]
    )
    proc = run_train(
        *NOT_MODEL,
        "model=hub",
        f"model.name_or_path={folder}",
        *[o for o in overrides if not o.startswith("+tok=")],
        f"hydra.run.dir={tmp_path / 'run'}",
        cache=tmp_path / "cache",
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tempo-train:")]
    assert len(errors) == 1 and f"{key}=" in errors[0] and fragment in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_tempo_eval_prompts_and_stops_the_same_way(tmp_path):
    folder = save_chat_model(tmp_path / "model")
    run = tmp_path / "eval"
    proc = run_module(
        "tempo.evaluate",
        "model=hub",
        f"model.name_or_path={folder}",
        "tasks=[arithmetic]",
        "eval.num_problems=2",
        "eval.samples=2",
        "eval.max_new_tokens=8",
        "eval.stop_tokens=['<think>']",
        "prompt.system_prompt=Sys.",
        "save_samples=true",
        "trainer.progress_bar=false",
        f"hydra.run.dir={run}",
        cache=tmp_path / "cache",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run / "eval_results.json").read_text())
    tok = char_tokenizer(chat_template=True)
    ids = [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
    assert results["sampling"]["chat_template"] is True
    assert results["sampling"]["stop_token_ids"] == [*ids, tok.convert_tokens_to_ids("<think>")]
    records = [json.loads(line) for line in (run / "samples.jsonl").open()]
    assert len(records) == 2
    for record in records:
        assert record["model_input"] == (
            f"<|im_start|>system\nSys.<|im_end|>\n<|im_start|>user\n{record['prompt']}"
            "<|im_end|>\n<|im_start|>assistant\n"
        )
