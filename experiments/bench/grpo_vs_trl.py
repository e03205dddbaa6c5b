"""One full GRPO step (rollout + reward + update) of tempo vs TRL's GRPOTrainer, in one run.

Both sides start from identical weights (saved once, loaded by each), see the same arithmetic
prompts in the same order, score completions with the same callable (tempo's RewardScorer;
TRL gets it as a reward function with the gold answers in a dataset column) and run the same
GRPO recipe: G completions per prompt, at most --new new tokens, T = 1 without top-k/top-p,
one optimisation pass (mu = num_iterations = 1), beta = 0 (no reference model), AdamW at a
constant lr 3e-5, gradient clipping at 1, the "grpo" (sequence-mean-token-mean) loss, one
forward/backward over the whole batch, fp32, no eval, logging or checkpoints.

tempo runs `RLVRModule.training_step` under a `lightning.Trainer` exactly as `tempo-train` does
(fixed temperature controller); TRL runs `GRPOTrainer` with generation batch = train batch =
prompts x G completions, so one optimiser step is one generation batch + reward + update.
Each side runs in its own spawned child process (memory is its own); the two children run
side by side but take turns one step at a time (`Baton`), so the noise of a shared machine
hits both alike. The first step of every run is a warm-up and is dropped, and the reward's
verifier worker is started before timing on both sides. --repeats runs more pairs. Seconds
per step, tokens/s and FLOPs/s are medians over all timed steps of all repeats; memory is the
median over runs of the peak RSS growth of the child (common.peak_memory).

What cannot be matched exactly (printed in the header too):
- tempo skips completions whose advantage is 0 (groups whose rewards are all equal) in the
  update; TRL runs the forward/backward over every completion. A random-init model earns no
  reward, so with --init random tempo's step is rollout + reward only; --init warm (the 1m
  model warm-started as tempo-train does, from tempo's cache) gives mixed rewards.
- TRL also computes per-token entropies in the loss pass and shuffles rows of the batch;
  tempo's sampler records entropies at T = 1 and at T for every token.
- Group-std epsilon: TRL 1e-4, tempo 1e-6 (no effect on the work done).
- Sampling RNGs differ, so completion lengths differ: mean lengths are reported per side.

Achieved FLOPs/s count matmul FLOPs (common.forward_flops_per_token): generation forward over
prompt and completion tokens plus 3 x forward over the prompt + completion of the rows each
side trains on, using mean lengths, against a square fp32 matmul measured in this run (before
and after the runs; the higher is kept).

    python experiments/bench/grpo_vs_trl.py [--model 1m|10m] [--init random|warm] [--steps 6]
        [--prompts 8] [--group 8] [--new 64] [--threads 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

for _key, _value in (
    ("HF_HUB_OFFLINE", "1"),
    ("HF_DATASETS_OFFLINE", "1"),
    ("WANDB_MODE", "disabled"),
    ("TOKENIZERS_PARALLELISM", "false"),
):
    os.environ.setdefault(_key, _value)

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
import lightning as L  # noqa: E402
import torch  # noqa: E402
from common import (  # noqa: E402
    MODELS,
    format_bytes,
    matmul_flops_per_second,
    median,
    peak_memory,
    print_table,
    sequence_forward_flops,
)
from lightning.pytorch.loggers import Logger  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from transformers import AutoModelForCausalLM, PrinterCallback, TrainerCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from tempo.data.datamodule import SEED_STRIDE, PromptDataModule  # noqa: E402
from tempo.models.tiny import tiny_config  # noqa: E402
from tempo.models.tokenizer import build_char_tokenizer  # noqa: E402
from tempo.rl.grpo import GRPOConfig  # noqa: E402
from tempo.rl.module import RLVRModule  # noqa: E402
from tempo.rl.settings import EvalConfig, RewardConfig, RolloutConfig  # noqa: E402
from tempo.temperature.fixed import FixedTemperature  # noqa: E402

try:
    import trl
except ImportError:  # reported by main(); the module stays importable for the children
    trl = None

CONF = Path(__file__).resolve().parents[2] / "conf"
SEED = 0
LR = 3e-5
TEMPERATURE = 1.0
MISMATCHES = (
    "tempo skips zero-advantage completions in the update, TRL trains on all (see 'rows')",
    "TRL computes token entropies in the loss pass; tempo's sampler records entropy@1 and @T",
    "group-std eps: TRL 1e-4, tempo 1e-6; sampling RNGs differ (lengths differ, see 'len')",
)


# ---------------------------------------------------------------------------- shared set-up
def quiet() -> None:
    """Silence progress bars, tips and warnings of the libraries; only the table is output."""
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def load_task() -> Any:
    """The embedded arithmetic task, built from its shipped YAML as `tempo-train` builds it."""
    return hydra.utils.instantiate(OmegaConf.load(CONF / "task" / "arithmetic.yaml"))


def step_problems(task: Any, steps: int, prompts: int) -> list[tuple[str, str]]:
    """(prompt, gold) of every training step in order: the problems tempo's data module serves
    for seed SEED (batch s = indices s * prompts ... s * prompts + prompts - 1)."""
    first = SEED * SEED_STRIDE
    return [
        (p.prompt, p.answer)
        for p in (task.train_problem(first + i) for i in range(steps * prompts))
    ]


def build_model(size: str, init: str, task: Any, max_len: int) -> torch.nn.Module:
    """Random-init model of `size`, or the 1m model warm-started as `tempo-train` does."""
    if init == "warm":
        spec = hydra.utils.instantiate(OmegaConf.load(CONF / "model" / "tiny.yaml"))
        model, _ = spec.build(task, "cpu")
        return model
    tok = build_char_tokenizer()
    positions = max(256, -(-max_len // 64) * 64)
    config = tiny_config(tok, max_position_embeddings=positions, **MODELS[size])
    torch.manual_seed(SEED)
    return AutoModelForCausalLM.from_config(config)


class _Recorder:
    """Wraps the scorer: the same callable for both sides, recording what each step produced."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer
        self.rewards: list[list[float]] = []
        self.lengths: list[list[int]] = []

    def __call__(self, completions: list[str], golds: list[str]) -> Any:
        scored = self.scorer(completions, golds)
        self.rewards.append(list(scored.rewards))
        return scored

    def __getattr__(self, name: str) -> Any:  # stats(), close(), ... of the real scorer
        return getattr(self.scorer, name)


def warm_scorer(scorer: Any) -> None:
    """Start the scorer's verifier worker before timing. It starts lazily, at the first answer
    that is not a plain integer or exact match (seconds: a process plus Math-Verify's imports),
    which would otherwise land in whichever timed step first produces such an answer."""
    scorer(["\\boxed{\\frac{1}{2}}"], ["0.5"])


def _zero_std_rows(rewards: list[float], group: int) -> int:
    """Completions in groups whose rewards are all equal (their advantage is exactly 0)."""
    rows = 0
    for i in range(0, len(rewards), group):
        chunk = rewards[i : i + group]
        rows += len(chunk) if max(chunk) == min(chunk) else 0
    return rows


class Baton:
    """Makes the two sides' child processes take turns one training step at a time.

    Both children run at once but only the side holding the baton computes: a step starts
    with `take` and ends with `give`, so the machine's slow and fast phases hit tempo's and
    TRL's steps alike, and each child still measures its own memory. Set-up overlaps the
    other side's first step only, which is dropped as the warm-up; `finish` (after the last
    step) holds a side's tear-down until the other side's last step is done. A failing side
    sets `abort`, so the other stops waiting.
    """

    def __init__(self, ctx: Any, first: str, timeout: float) -> None:
        self.turn = {side: ctx.Event() for side in ("tempo", "trl")}
        self.abort = ctx.Event()
        self.timeout = timeout
        self.turn[first].set()

    def take(self, side: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.turn[side].wait(0.2):
            if self.abort.is_set():
                raise RuntimeError("the other side failed; see its error")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{side} waited {self.timeout:.0f} s for its turn")
        self.turn[side].clear()

    def give(self, side: str) -> None:
        self.turn["trl" if side == "tempo" else "tempo"].set()

    def finish(self, side: str) -> None:
        self.take(side)
        self.give(side)


# ---------------------------------------------------------------------------- tempo side
class _StepTimer(L.Callback):
    """Wall seconds of every `training_step` (one RL step: rollout, reward, update)."""

    def __init__(self, baton: Baton) -> None:
        self.baton = baton
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.baton.take("tempo")
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        self.baton.give("tempo")


class _MetricsSink(Logger):
    """In-memory logger: keeps the per-step metrics tempo emits (tempo-train's JSONL stand-in)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "bench"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if "train/response_length" in metrics:
            self.rows.append(dict(metrics))


def run_tempo(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec["steps"]` RL steps of tempo's RLVRModule under a lightning.Trainer."""
    torch.set_num_threads(spec["threads"])
    quiet()
    task = load_task()
    tok = build_char_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], local_files_only=True)
    model.train()
    L.seed_everything(SEED, workers=True, verbose=False)
    prompts, group, steps = spec["prompts"], spec["group"], spec["steps"]
    controller = FixedTemperature(TEMPERATURE)
    controller.setup(model.config.hidden_size, model.config.vocab_size, steps)
    grpo = GRPOConfig(
        group_size=group,
        lr=LR,
        beta=0.0,
        mu=1,
        aggregation="grpo",
        micro_batch_size=prompts * group,
    )
    scorer = RewardConfig().scorer(check=getattr(task, "answer_check", None))
    warm_scorer(scorer)
    recorder = _Recorder(scorer)
    module = RLVRModule(
        model,
        tok,
        controller,
        grpo,
        RolloutConfig(prompts_per_step=prompts, max_new_tokens=spec["new"]),
        EvalConfig(every=0, num_problems=1, samples=1, ks=(1,), batch_size=1, at_start=False),
        recorder,
        task_name=task.name,
        seed=SEED,
        samples=None,
    )
    data = PromptDataModule(task, prompts, steps, num_eval=1, eval_batch_size=1, seed=SEED)
    timer, sink = _StepTimer(spec["baton"]), _MetricsSink()
    trainer = L.Trainer(
        max_steps=steps,
        max_epochs=-1,
        accelerator="cpu",
        devices=1,
        precision="32-true",
        logger=[sink],
        callbacks=[timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        default_root_dir=spec["work_dir"],
    )
    try:
        trainer.fit(module, datamodule=data)
        spec["baton"].finish("tempo")
    finally:
        scorer.close()
    rows = prompts * group
    return {
        "seconds": timer.seconds,
        "length": [m["train/response_length"] for m in sink.rows],
        "trained_rows": [rows - _zero_std_rows(r, group) for r in recorder.rewards],
        "reward": [sum(r) / len(r) for r in recorder.rewards],
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------- TRL side
class _TrlStepTimer(TrainerCallback):
    """Wall seconds of every optimiser step (one generation batch, its rewards and update)."""

    def __init__(self, baton: Baton) -> None:
        self.baton = baton
        self.seconds: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        self.baton.take("trl")
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        self.baton.give("trl")


def run_trl(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec["steps"]` optimiser steps of TRL's GRPOTrainer on the same model and prompts."""
    from datasets import Dataset

    torch.set_num_threads(spec["threads"])
    quiet()
    task = load_task()
    tok = build_char_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], local_files_only=True)
    prompts, group, steps = spec["prompts"], spec["group"], spec["steps"]
    problems = step_problems(task, steps, prompts)
    dataset = Dataset.from_dict(
        {"prompt": [p for p, _ in problems], "answer": [a for _, a in problems]}
    )
    scorer = RewardConfig().scorer(check=getattr(task, "answer_check", None))
    warm_scorer(scorer)
    recorder = _Recorder(scorer)

    def tempo_reward(prompts, completions, answer, completion_ids=None, **kwargs) -> list[float]:
        """tempo's scorer as a TRL reward function; gold answers come from the `answer` column."""
        if completion_ids is not None:
            recorder.lengths.append([len(ids) for ids in completion_ids])
        return recorder(list(completions), list(answer)).rewards

    args = trl.GRPOConfig(
        output_dir=spec["work_dir"],
        max_steps=steps,
        per_device_train_batch_size=prompts * group,
        gradient_accumulation_steps=1,
        generation_batch_size=prompts * group,  # one generation batch per optimiser step
        num_generations=group,
        max_completion_length=spec["new"],
        temperature=TEMPERATURE,
        top_k=0,
        top_p=1.0,
        beta=0.0,
        num_iterations=1,
        epsilon=0.2,
        loss_type="grpo",
        scale_rewards="group",
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        shuffle_dataset=False,
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        log_completions=False,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=SEED,
    )
    timer = _TrlStepTimer(spec["baton"])
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=tempo_reward,
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        callbacks=[timer],
    )
    trainer.remove_callback(PrinterCallback)  # it prints the end-of-training summary
    torch.set_num_threads(spec["threads"])  # in case set-up changed it
    try:
        trainer.train()
        spec["baton"].finish("trl")
    finally:
        scorer.close()
    return {
        "seconds": timer.seconds,
        "length": [sum(n) / len(n) for n in recorder.lengths],
        "trained_rows": [len(r) for r in recorder.rewards],  # TRL's loss covers every row
        "reward": [sum(r) / len(r) for r in recorder.rewards],
        "threads": torch.get_num_threads(),
    }


SIDES = {"tempo": run_tempo, "trl": run_trl}


def run_side(side: str, spec: dict[str, Any], baton: Baton) -> dict[str, Any]:
    """Child-process entry point: one run of `side` in its own temporary work directory."""
    try:
        with tempfile.TemporaryDirectory(prefix=f"bench-{side}-") as work:
            return SIDES[side]({**spec, "work_dir": work, "baton": baton})
    except BaseException:
        baton.abort.set()
        raise


def run_pair(spec: dict[str, Any], first: str, timeout: float) -> dict[str, tuple[dict, int]]:
    """One run of each side, both children alive at once and taking turns step by step."""
    baton = Baton(mp.get_context("spawn"), first, timeout)
    with ThreadPoolExecutor(max_workers=len(SIDES)) as pool:
        futures = {
            side: pool.submit(peak_memory, run_side, side, spec, baton, timeout=timeout)
            for side in SIDES
        }
        errors = []
        for side, future in futures.items():
            try:
                future.result()
            except Exception as err:  # collect both, so the root cause is not hidden
                errors.append(f"{side}: {err}")
        if errors:
            raise RuntimeError("\n".join(errors))
        return {side: future.result() for side, future in futures.items()}


# ---------------------------------------------------------------------------- report
def summarise(
    runs: list[tuple[dict[str, Any], int]], config: Any, prompt_len: float, spec: dict
) -> dict[str, Any]:
    """Median s/step over the timed steps of all runs, throughput, FLOPs/s and memory."""
    seconds, lengths, trained, rewards = [], [], [], []
    for result, _ in runs:
        if len(result["seconds"]) < 2:
            raise RuntimeError(f"a run recorded {len(result['seconds'])} step(s); need >= 2")
        seconds += result["seconds"][1:]
        lengths += result["length"][1:]
        trained += result["trained_rows"][1:]
        rewards += result["reward"][1:]
    rows = spec["prompts"] * spec["group"]
    flops = [
        rows
        * (
            sequence_forward_flops(config, prompt_len)
            + sequence_forward_flops(config, length, prompt_len)
        )
        + 3 * n * sequence_forward_flops(config, prompt_len + length)
        for length, n in zip(lengths, trained, strict=True)
    ]
    return {
        "s/step": median(seconds),
        "len": median(lengths),
        "rows": median(trained),
        "reward": median(rewards),
        "gen tok/s": median([rows * n / t for n, t in zip(lengths, seconds, strict=True)]),
        "flops/s": median([f / t for f, t in zip(flops, seconds, strict=True)]),
        "memory": median([m for _, m in runs]),
        "threads": runs[0][0]["threads"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="1m")
    parser.add_argument(
        "--init",
        choices=("random", "warm"),
        default=None,
        help="random weights, or the 1m model warm-started by tempo (cached; trains if missing); "
        "default: warm for 1m (mixed rewards, so both sides run a full update), random for 10m",
    )
    parser.add_argument("--steps", type=int, default=6, help="steps per run; the first is dropped")
    parser.add_argument("--prompts", type=int, default=8, help="distinct prompts per step")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--new", type=int, default=64, help="max new tokens per completion")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per side")
    parser.add_argument("--repeats", type=int, default=1, help="independent runs per side")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per child run")
    args = parser.parse_args()
    if trl is None:
        print('trl is not installed: pip install -e ".[bench]"')
        sys.exit(2)
    if args.steps < 2 or args.repeats < 1 or args.group < 2 or args.prompts < 1 or args.new < 1:
        parser.error("need --steps >= 2, --repeats >= 1, --group >= 2, --prompts >= 1, --new >= 1")
    if args.init is None:
        args.init = "warm" if args.model == "1m" else "random"
    if args.init == "warm" and args.model != "1m":
        parser.error("--init warm exists only for --model 1m (tempo's cached warm-start)")
    torch.set_num_threads(args.threads)
    quiet()

    task = load_task()
    problems = step_problems(task, args.steps, args.prompts)
    prompt_len = sum(len(p) for p, _ in problems) / len(problems)  # one token per character
    max_prompt = max(len(p) for p, _ in problems)
    model = build_model(args.model, args.init, task, max_prompt + args.new)
    params = sum(p.numel() for p in model.parameters())
    peak = matmul_flops_per_second(1024, repeats=5)  # measured again after the runs

    spec = {
        "threads": args.threads,
        "prompts": args.prompts,
        "group": args.group,
        "new": args.new,
        "steps": args.steps,
    }
    results: dict[str, list[tuple[dict[str, Any], int]]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="bench-model-") as model_dir:
        model.save_pretrained(model_dir)
        spec["model_dir"] = model_dir
        config = model.config
        del model
        for repeat in range(args.repeats):
            started = time.perf_counter()
            first = list(SIDES)[repeat % 2]  # who takes the first turn alternates
            for side, result in run_pair(spec, first, args.timeout).items():
                results[side].append(result)
            print(
                f"[bench] repeat {repeat + 1}/{args.repeats}: "
                f"{time.perf_counter() - started:.0f} s wall",
                file=sys.stderr,
                flush=True,
            )

    # The higher of the two measurements: a busy spell of the shared machine only lowers it.
    peak = max(peak, matmul_flops_per_second(1024, repeats=5))
    summary = {side: summarise(runs, config, prompt_len, spec) for side, runs in results.items()}
    rows = args.prompts * args.group
    print(
        f"GRPO step, tempo vs TRL {trl.__version__}: {args.model} model ({params / 1e6:.2f}M "
        f"params, {args.init} init), {args.prompts} prompts x G={args.group} = {rows} "
        f"completions/step, <= {args.new} new tokens, T={TEMPERATURE}, mu=1, beta=0, "
        f"lr {LR}, fp32, {args.threads} threads"
    )
    print(
        f"{args.steps} steps per run (first dropped) x {args.repeats} run(s) per side, each in "
        f"its own process; mean prompt {prompt_len:.1f} tokens; matmul peak "
        f"{peak / 1e9:.1f} GFLOP/s (fp32 1024^2, best of before/after)"
    )
    for note in MISMATCHES:
        print(f"  differs: {note}")
    table = []
    for side, s in summary.items():
        table.append(
            {
                "side": side,
                "s/step": s["s/step"],
                "len": s["len"],
                "rows": s["rows"],
                "reward": s["reward"],
                "gen tok/s": s["gen tok/s"],
                "GFLOP/s": s["flops/s"] / 1e9,
                "% peak": 100 * s["flops/s"] / peak,
                "peak mem": format_bytes(s["memory"]),
            }
        )
    print()
    print_table(table, list(table[0]))
    ratio = summary["tempo"]["s/step"] / summary["trl"]["s/step"]
    print()
    print(f"ratio tempo/TRL (median s/step): {ratio:.2f}  (target <= 0.5)")
    if summary["tempo"]["rows"] == 0:
        print(
            "note: no reward signal (all groups zero-std), so tempo skipped its update and "
            "TRL did not; use --init warm to compare full steps"
        )
    if any(s["threads"] != args.threads for s in summary.values()):
        print(f"note: torch threads at the end: { {k: s['threads'] for k, s in summary.items()} }")


if __name__ == "__main__":
    main()
