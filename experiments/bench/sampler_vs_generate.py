"""Throughput of tempo's sampler vs `model.generate` on the embedded tiny model, one run.

Both sample 64 new tokens for each of 64 prompts at T = 1 (no top-k/top-p), with EOS
disabled so every row runs to full length. Prints tokens/s of each and the ratio, as the
median over --repeats alternating runs (the machine is noisy; compare within one run).

    python experiments/bench/sampler_vs_generate.py [--batch 64] [--new 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

from tempo.models.tiny import tiny_config
from tempo.models.tokenizer import build_char_tokenizer
from tempo.sampling.sampler import Sampler
from tempo.temperature.fixed import FixedTemperature


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    tok = build_char_tokenizer()
    model = AutoModelForCausalLM.from_config(tiny_config(tok)).eval()
    ids = torch.randint(4, len(tok), (args.batch, args.prompt))
    mask = torch.ones_like(ids)
    sampler = Sampler(args.new, eos_token_id=-1, pad_token_id=tok.pad_token_id)
    controller = FixedTemperature(1.0)
    tokens = args.batch * args.new

    def ours() -> None:
        sampler.rollout(model, ids, mask, controller, generator=torch.Generator().manual_seed(0))

    def generate() -> None:
        model.generate(
            ids,
            attention_mask=mask,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=args.new,
            min_new_tokens=args.new,
            pad_token_id=tok.pad_token_id,
        )

    ours(), generate()  # warm-up
    rates: dict[str, list[float]] = {"tempo": [], "generate": []}
    for _ in range(args.repeats):
        for name, fn in (("tempo", ours), ("generate", generate)):
            start = time.perf_counter()
            fn()
            rates[name].append(tokens / (time.perf_counter() - start))
    t, g = statistics.median(rates["tempo"]), statistics.median(rates["generate"])
    params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {params / 1e6:.2f}M params, batch {args.batch} x {args.new} new tokens, "
        f"threads {torch.get_num_threads()}, median of {args.repeats}"
    )
    print(f"tempo sampler    : {t:9.0f} tokens/s")
    print(f"model.generate   : {g:9.0f} tokens/s")
    print(f"ratio tempo/generate: {t / g:.2f}x")


if __name__ == "__main__":
    main()
