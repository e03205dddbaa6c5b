"""Paper-scale shapes on a small model: one GRPO step at Qwen's vocabulary, tempo vs TRL.

A 2-layer, 64-wide Llama-style model with attention biases (Qwen2's layout) and Qwen's
vocabulary size, V = 151,936, is built locally with random weights and a tokenizer of that
size (one token per character plus filler tokens, so any sampled id decodes). Completions of
256 / 1024 / 4096 new tokens, 4 completions of one prompt per step, beta > 0 so every
completion is trained (a random model earns no reward: the advantages are 0 and the KL term
alone carries the gradient), fp32, 2 steps of which the second is timed.

- tempo: the whole `tempo-train` process (`python -m tempo.train`, task=local on a jsonl
  written here), peak RSS of that process from the kernel (`os.wait4`), s/step from its
  metrics.jsonl (`time/step_s` of the second step; rollout and update separately).
- TRL: `GRPOTrainer` on the same model, prompt and lengths, in its own process: with its
  defaults (one micro-batch of 4) and with the memory options it offers that run on CPU
  (gradient checkpointing and one completion per micro-batch, `--trl-memory`).
- Sampler: tempo's sampler vs `model.generate` tokens/s at 1024 and 4096 new tokens (batch 4,
  EOS off so every row runs to full length), interleaved rounds in one process.

Each child runs under an address-space limit (`--memory-limit-gib`, default 16) so a side that
needs more fails with MemoryError instead of swapping the machine; that is reported as "OOM".
`--tempo-src DIR` runs the tempo side from another checkout (e.g. a `git worktree` of an older
commit) to compare before/after; options that checkout lacks are left out.

    python experiments/bench/scale.py [--lengths 256,1024,4096] [--threads 2] [--skip-trl]
        [--skip-sampler] [--tempo-src DIR] [--chunk 256] [--memory-limit-gib 16]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

for _key, _value in (
    ("HF_HUB_OFFLINE", "1"),
    ("HF_DATASETS_OFFLINE", "1"),
    ("WANDB_MODE", "disabled"),
    ("TOKENIZERS_PARALLELISM", "false"),
):
    os.environ.setdefault(_key, _value)

ROOT = Path(__file__).resolve().parents[2]
VOCAB = 151_936
GROUP = 4
BETA = 0.04
LR = 1e-5
PROMPT = "12+34="


# ---------------------------------------------------------------------------- the model
def build_model_dir(folder: Path, max_len: int) -> Path:
    """A random Llama-style model (q/k/v biases as Qwen2) with V = 151,936 and its tokenizer."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tempo.models.tokenizer import CHARACTERS

    specials = ["<pad>", "<eos>", "<unk>"]
    pieces = [*specials, *CHARACTERS]
    vocab = {tok: i for i, tok in enumerate(pieces)}
    for i in range(len(pieces), VOCAB):
        vocab[f"<{i}>"] = i
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_len,
        attention_bias=True,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_task(folder: Path) -> Path:
    path = folder / "train.jsonl"
    path.write_text(
        "".join(json.dumps({"question": PROMPT, "answer": "46"}) + "\n" for _ in range(8))
    )
    return path


# ---------------------------------------------------------------------------- children
def _limit(gib: float):
    def apply() -> None:
        size = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return apply


def run_child(cmd: list[str], env: dict[str, str], gib: float, cwd: Path) -> dict[str, Any]:
    """Run `cmd`; return its exit code, peak RSS (bytes) and the tail of its output."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_limit(gib)
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    return {"rc": proc.returncode, "rss": usage.ru_maxrss * 1024, "output": text[-4000:]}


def _oom(text: str) -> bool:
    return any(
        s in text for s in ("MemoryError", "not enough memory", "can't allocate", "OutOfMemory")
    )


def tempo_step(args: argparse.Namespace, model: Path, data: Path, length: int, work: Path) -> dict:
    """Two RL steps of `tempo-train`; the second one's times and the process's peak RSS."""
    run = work / f"tempo-{length}"
    overrides = [
        "model=hub",
        f"model.name_or_path={model}",
        "model.dtype=float32",
        "task=local",
        f"task.data_files.train={data}",
        "task.holdout=2",
        "task.prompt_template='{question}'",
        "rollout.prompts_per_step=1",
        f"rollout.max_new_tokens={length}",
        f"algorithm.group_size={GROUP}",
        f"algorithm.beta={BETA}",
        f"algorithm.lr={LR}",
        "trainer.max_steps=2",
        "eval.every=0",
        "eval.at_start=false",
        "eval.num_problems=1",
        "eval.samples=1",
        "eval.ks=[1]",
        "eval.batch_size=1",
        "samples.every=0",
        "logger=jsonl",
        "trainer.checkpoint_every=1000",
        "trainer.progress_bar=false",
        f"trainer.threads={args.threads}",
        f"hydra.run.dir={run}",
    ]
    if args.tempo_src is None:
        overrides.append(f"algorithm.logprob_chunk_tokens={args.chunk}")
    if args.device == "gpu":
        overrides += ["trainer=gpu", "trainer.precision=32-true"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    src = Path(args.tempo_src).resolve() if args.tempo_src else ROOT
    env["PYTHONPATH"] = str(src)
    result = run_child(
        [sys.executable, "-m", "tempo.train", *overrides], env, args.memory_limit_gib, src
    )
    row: dict[str, Any] = {"side": "tempo" + (" (src)" if args.tempo_src else ""), "length": length}
    row["peak RSS"] = result["rss"]
    metrics = run / "metrics.jsonl"
    steps = [json.loads(line) for line in metrics.open()] if metrics.exists() else []
    steps = [s for s in steps if "time/step_s" in s]
    if result["rc"] != 0 or len(steps) < 2:
        row["status"] = "OOM" if _oom(result["output"]) else f"failed (rc {result['rc']})"
        if row["status"].startswith("failed"):
            print(result["output"][-2000:], file=sys.stderr)
        return row
    last = steps[-1]
    row.update(
        status="ok",
        step_s=last["time/step_s"],
        rollout_s=last["time/rollout_s"],
        mean_len=last["train/response_length"],
    )
    return row


def trl_main(spec: dict[str, Any]) -> None:
    """Child: two optimiser steps of TRL's GRPOTrainer; prints a JSON line with the timings."""
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    torch.set_num_threads(spec["threads"])
    tok = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    lengths: list[float] = []

    def zero_reward(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
        if completion_ids is not None:
            lengths.append(sum(len(c) for c in completion_ids) / len(completion_ids))
        return [0.0] * len(completions)

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_step_begin(self, *a, **k) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    memory = spec["memory"]
    per_device = 1 if memory else GROUP
    args = trl.GRPOConfig(
        output_dir=spec["work"],
        max_steps=2,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=GROUP // per_device,
        steps_per_generation=GROUP // per_device,
        num_generations=GROUP,
        max_completion_length=spec["length"],
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        beta=BETA,
        learning_rate=LR,
        gradient_checkpointing=memory,
        use_cpu=spec["cpu"],
        bf16=False,
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=0,
    )
    timer = Timer()
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=zero_reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": [PROMPT] * 8}),
        processing_class=tok,
        callbacks=[timer],
    )
    torch.set_num_threads(spec["threads"])
    trainer.train()
    print("RESULT " + json.dumps({"seconds": timer.seconds, "lengths": lengths}))


def trl_step(args: argparse.Namespace, model: Path, length: int, memory: bool, work: Path) -> dict:
    spec = {"model": str(model), "length": length, "memory": memory, "threads": args.threads}
    spec["cpu"] = args.device == "cpu"
    spec["work"] = str(work / f"trl-{length}-{int(memory)}")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, __file__, "--trl-child", json.dumps(spec)]
    result = run_child(cmd, env, args.memory_limit_gib, ROOT)
    row: dict[str, Any] = {"side": "TRL" + (" +memory opts" if memory else ""), "length": length}
    row["peak RSS"] = result["rss"]
    lines = [ln for ln in result["output"].splitlines() if ln.startswith("RESULT ")]
    if result["rc"] != 0 or not lines:
        row["status"] = "OOM" if _oom(result["output"]) else f"failed (rc {result['rc']})"
        if row["status"].startswith("failed"):
            print(result["output"][-2000:], file=sys.stderr)
        return row
    data = json.loads(lines[-1][len("RESULT ") :])
    row.update(status="ok", step_s=data["seconds"][-1], mean_len=data["lengths"][-1])
    return row


def primitive_main(spec: dict[str, Any]) -> None:
    """Child: forward + backward of `hidden_token_stats` alone at one chunk size."""
    import torch
    from torch import nn

    from tempo.ops.chunked_logprobs import hidden_token_stats

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    n, chunk = spec["tokens"], spec["chunk"]
    head = nn.Linear(64, VOCAB, bias=False)
    hidden = torch.randn(1, n, 64, requires_grad=True)
    tokens = torch.randint(0, VOCAB, (1, n))
    temps = torch.rand(1, n) + 0.5
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(3):
        start = time.perf_counter()
        out = hidden_token_stats(hidden, head, tokens, temps, chunk_tokens=chunk)
        out.logprobs.sum().backward()
        times.append(time.perf_counter() - start)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    print("RESULT " + json.dumps({"seconds": sorted(times)[1], "grown": grown}))


def chunk_rows(args: argparse.Namespace, chunks: list[int], tokens: int = 4096) -> list[dict]:
    """The primitive alone at each chunk size, each in a fresh process."""
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT))
    for chunk in chunks:
        spec = {"tokens": tokens, "chunk": chunk, "threads": args.threads}
        cmd = [sys.executable, __file__, "--primitive-child", json.dumps(spec)]
        result = run_child(cmd, env, args.memory_limit_gib, ROOT)
        lines = [ln for ln in result["output"].splitlines() if ln.startswith("RESULT ")]
        data = json.loads(lines[-1][len("RESULT ") :]) if lines else {}
        rows.append({"chunk": chunk, **data})
    return rows


# ---------------------------------------------------------------------------- sampler
def sampler_rows(args: argparse.Namespace, model_dir: Path, lengths: list[int]) -> list[dict]:
    """tempo's sampler vs `model.generate`, batch 4, EOS off, interleaved rounds."""
    import torch
    from transformers import AutoModelForCausalLM

    from tempo.sampling.sampler import Sampler
    from tempo.temperature.fixed import FixedTemperature

    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.randint(3, 60, (GROUP, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    rows = []
    for new in lengths:
        sampler = Sampler(new, eos_token_id=-1, pad_token_id=0)
        ctl = FixedTemperature(1.0)
        ctl.setup(64, VOCAB, 1)

        def tempo(sampler=sampler, ctl=ctl) -> None:
            sampler.rollout(model, ids, mask, ctl, generator=torch.Generator().manual_seed(0))

        def generate(new=new) -> None:
            with torch.no_grad():
                model.generate(
                    ids,
                    attention_mask=mask,
                    do_sample=True,
                    temperature=1.0,
                    top_k=0,
                    top_p=1.0,
                    max_new_tokens=new,
                    min_new_tokens=new,
                    pad_token_id=0,
                )

        times: dict[str, list[float]] = {"tempo": [], "generate": []}
        for _ in range(args.sampler_rounds):
            for name, fn in (("tempo", tempo), ("generate", generate)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        best = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        rows.append(
            {
                "new tokens": new,
                "tempo tok/s": GROUP * new / best["tempo"],
                "generate tok/s": GROUP * new / best["generate"],
                "ratio": best["generate"] / best["tempo"],
            }
        )
    return rows


# ---------------------------------------------------------------------------- main
def gib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--trl-child":
        trl_main(json.loads(sys.argv[2]))
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--primitive-child":
        primitive_main(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="256,1024,4096")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--device", default="cpu", choices=("cpu", "gpu"), help="gpu: trainer=gpu and TRL on CUDA"
    )
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--memory-limit-gib", type=float, default=16.0)
    parser.add_argument("--tempo-src", default=None)
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--skip-sampler", action="store_true")
    parser.add_argument("--trl-memory", action="store_true", help="also TRL with memory options")
    parser.add_argument("--sampler-lengths", default="1024,4096")
    parser.add_argument("--sampler-rounds", type=int, default=3)
    parser.add_argument(
        "--chunk-sweep", default="", help="e.g. 128,256,512,1024,2048: the primitive alone"
    )
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",") if x]
    if args.chunk_sweep:
        sweep = chunk_rows(args, [int(x) for x in args.chunk_sweep.split(",")])
        print(
            "\n## hidden_token_stats alone: 4096 tokens, V = 151,936, d = 64, forward + backward\n"
        )
        print("| chunk | s | tokens/s | peak growth |")
        print("| --- | --- | --- | --- |")
        for r in sweep:
            rate = 4096 / r["seconds"]
            print(f"| {r['chunk']} | {r['seconds']:.2f} | {rate:.0f} | {gib(r['grown'])} |")
    if not lengths:
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_model_dir(work / "model", max_len=max(lengths) + 64)
        data = write_task(work)
        rows = []
        for length in lengths:
            rows.append(tempo_step(args, model, data, length, work))
            print(json.dumps(rows[-1], default=str), flush=True)
            if not args.skip_trl:
                for memory in (False, True) if args.trl_memory else (False,):
                    rows.append(trl_step(args, model, length, memory, work))
                    print(json.dumps(rows[-1], default=str), flush=True)
        print(
            "\n## One GRPO step, V = 151,936, 4 completions, beta > 0, fp32, "
            f"{args.threads} threads\n"
        )
        print(
            "| side | completion tokens | status | peak RSS (process) | s/step | ms/token "
            "| rollout s | mean length | tempo memory / this | tempo time / this |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        by_length = {r["length"]: r for r in rows if r["side"].startswith("tempo")}
        for r in rows:
            ours = by_length[r["length"]]
            step = r.get("step_s")
            per_token = None if step is None else 1000 * step / (GROUP * r["length"])
            mem_ratio = time_ratio = "-"
            if r is not ours and r.get("peak RSS") and ours.get("peak RSS"):
                mem_ratio = f"{ours['peak RSS'] / r['peak RSS']:.2f}"
                if r["status"] == "OOM":
                    mem_ratio = f"< {mem_ratio}"
            if r is not ours and step and ours.get("step_s"):
                time_ratio = f"{ours['step_s'] / step:.2f}"
            cells = [
                r["side"],
                r["length"],
                r["status"],
                gib(r.get("peak RSS")),
                "-" if step is None else f"{step:.1f}",
                "-" if per_token is None else f"{per_token:.2f}",
                "-" if r.get("rollout_s") is None else f"{r['rollout_s']:.1f}",
                "-" if r.get("mean_len") is None else f"{r['mean_len']:.0f}",
                mem_ratio,
                time_ratio,
            ]
            print("| " + " | ".join(str(c) for c in cells) + " |")
        if not args.skip_sampler:
            sampler = sampler_rows(args, model, [int(x) for x in args.sampler_lengths.split(",")])
            print("\n## Sampler, batch 4, EOS off, V = 151,936\n")
            print("| new tokens | tempo tok/s | generate tok/s | tempo speed-up |")
            print("| --- | --- | --- | --- |")
            for r in sampler:
                print(
                    f"| {r['new tokens']} | {r['tempo tok/s']:.0f} | "
                    f"{r['generate tok/s']:.0f} | {r['ratio']:.2f}x |"
                )


if __name__ == "__main__":
    main()
