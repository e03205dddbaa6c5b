"""Throughput of tempo's sampler vs `model.generate` on the embedded tiny model, one run.

Both sample 64 new tokens for each of 64 prompts at T = 1 (no top-k/top-p), with EOS
disabled so every row runs to full length. Prints tokens/s of each and the ratio, and the
overhead of the per-token temperature methods (the introspective head, EDT) over a fixed
temperature, as medians over --repeats interleaved runs (the machine is noisy; compare
within one run).

    python experiments/bench/sampler_vs_generate.py [--batch 64] [--new 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from tempo.models.tiny import tiny_config
from tempo.models.tokenizer import build_char_tokenizer
from tempo.sampling.sampler import Sampler
from tempo.temperature.base import TemperatureController
from tempo.temperature.fixed import FixedTemperature

CONF = Path(__file__).resolve().parents[2] / "conf" / "method"


def method_from_config(name: str, **overrides) -> TemperatureController:
    """A controller built from its shipped YAML, as `tempo-train method=<name>` would."""
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    if "seed" in cfg:
        cfg.seed = 0
    cfg.merge_with(overrides)
    return hydra.utils.instantiate(cfg, _convert_="all")


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
    controllers: dict[str, TemperatureController] = {
        "fixed": FixedTemperature(1.0),
        "introspective": method_from_config("introspective"),
        "edt": method_from_config("heuristic", rule="edt"),
    }
    for ctl in controllers.values():
        ctl.setup(model.config.hidden_size, model.config.vocab_size, 1)
    tokens = args.batch * args.new

    def sample(name: str):
        def run() -> None:
            sampler.rollout(
                model, ids, mask, controllers[name], generator=torch.Generator().manual_seed(0)
            )

        return run

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

    runs = {name: sample(name) for name in controllers} | {"generate": generate}
    for fn in runs.values():  # warm-up
        fn()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            rates[name].append(tokens / (time.perf_counter() - start))
    median = {name: statistics.median(r) for name, r in rates.items()}
    t, g = median["fixed"], median["generate"]
    params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {params / 1e6:.2f}M params, batch {args.batch} x {args.new} new tokens, "
        f"threads {torch.get_num_threads()}, median of {args.repeats}"
    )
    print(f"tempo sampler    : {t:9.0f} tokens/s (fixed T)")
    print(f"model.generate   : {g:9.0f} tokens/s")
    print(f"ratio tempo/generate: {t / g:.2f}x")
    for name in controllers:
        if name != "fixed":
            overhead = t / median[name] - 1  # extra time per token relative to fixed T
            print(f"{name:<13}: {median[name]:9.0f} tokens/s, overhead over fixed {overhead:+.1%}")


if __name__ == "__main__":
    main()
