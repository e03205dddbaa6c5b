"""Rollout throughput: tempo's sampler vs `model.generate`, and per-token method overheads.

For each model size, in one run on the same model, prompts and lengths: every row samples
`--new` tokens at T = 1 (no top-k/top-p) with EOS disabled, so all rows run to full length.
Cases: tempo's sampler with a fixed temperature, `model.generate` with the same settings,
tempo at a fixed T = 0.7 (which, unlike T = 1, rescales the logits: the fair baseline of the
per-token methods), and tempo's sampler under the per-token methods (introspective head, EDT).
Timings are
medians over `--repeats` interleaved rounds (this machine is noisy; compare within one run).
Also printed: peak memory growth of one rollout of each case (each in a fresh process) and
the model FLOPs/s achieved against a measured matmul's.

    python experiments/bench/sampler_vs_generate.py [--models 1m,10m] [--repeats 7]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import hydra
import torch
from common import (
    MODELS,
    format_bytes,
    matmul_flops_per_second,
    median,
    median_times,
    peak_memory,
    peak_rss_during,
    print_table,
    sequence_forward_flops,
)
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, PreTrainedModel

from tempo.models.tiny import tiny_config
from tempo.models.tokenizer import build_char_tokenizer
from tempo.sampling.sampler import Sampler
from tempo.temperature.base import TemperatureController
from tempo.temperature.fixed import FixedTemperature

CONF = Path(__file__).resolve().parents[2] / "conf" / "method"
CASES = ("tempo", "generate", "tempo T=0.7", "introspective", "edt")


def method_from_config(name: str, **overrides) -> TemperatureController:
    """A controller built from its shipped YAML, as `tempo-train method=<name>` would."""
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    if "seed" in cfg:
        cfg.seed = 0
    cfg.merge_with(overrides)
    return hydra.utils.instantiate(cfg, _convert_="all")


def build(size: str, batch: int, prompt: int, threads: int | None):
    """The model (random weights, seed 0), prompts, and one callable per case."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    tok = build_char_tokenizer()
    model = AutoModelForCausalLM.from_config(tiny_config(tok, **MODELS[size])).eval()
    ids = torch.randint(4, len(tok), (batch, prompt))
    mask = torch.ones_like(ids)
    return model, tok, ids, mask


def cases(model: PreTrainedModel, tok, ids, mask, new: int) -> dict[str, callable]:
    sampler = Sampler(new, eos_token_id=-1, pad_token_id=tok.pad_token_id)
    controllers: dict[str, TemperatureController] = {
        "tempo": FixedTemperature(1.0),
        "tempo T=0.7": FixedTemperature(0.7),
        "introspective": method_from_config("introspective"),
        "edt": method_from_config("heuristic", rule="edt"),
    }
    for ctl in controllers.values():
        ctl.setup(model.config.hidden_size, model.config.vocab_size, 1)

    def sample(ctl: TemperatureController):
        gen = torch.Generator().manual_seed(0)
        return lambda: sampler.rollout(model, ids, mask, ctl, generator=gen)

    def generate() -> None:
        model.generate(
            ids,
            attention_mask=mask,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=new,
            min_new_tokens=new,
            pad_token_id=tok.pad_token_id,
        )

    runs = {name: sample(ctl) for name, ctl in controllers.items()} | {"generate": generate}
    return {name: runs[name] for name in CASES}


def one_rollout(size: str, case: str, batch: int, prompt: int, new: int, threads: int) -> int:
    """Peak memory growth (bytes) of one rollout of `case`, set-up excluded; run in a fresh
    process by `peak_memory`."""
    fns = cases(*build(size, batch, prompt, threads), new)
    return peak_rss_during(fns[case])[1]


def bench(size: str, args: argparse.Namespace, matmul: float) -> list[dict]:
    model, tok, ids, mask = build(size, args.batch, args.prompt, args.threads)
    fns = cases(model, tok, ids, mask, args.new)
    times = median_times(fns, repeats=args.repeats, warmup=1)
    seconds = {name: median(ts) for name, ts in times.items()}
    tokens = args.batch * args.new
    flops = args.batch * (
        sequence_forward_flops(model.config, args.prompt)
        + sequence_forward_flops(model.config, args.new - 1, start=args.prompt)
    )
    params = sum(p.numel() for p in model.parameters())
    rows = []
    for name in CASES:
        memory = float("nan")
        if not args.no_memory:
            call = (size, name, args.batch, args.prompt, args.new, args.threads)
            memory, _ = peak_memory(one_rollout, *call)
        rows.append(
            {
                "model": f"{size} ({params / 1e6:.1f}M)",
                "case": name,
                "tokens/s": f"{tokens / seconds[name]:.0f}",
                "vs generate": f"{seconds['generate'] / seconds[name]:.2f}x",
                "time vs fixed T=1": f"{seconds[name] / seconds['tempo'] - 1:+.1%}",
                "vs fixed T=0.7": f"{seconds[name] / seconds['tempo T=0.7'] - 1:+.1%}",
                "peak memory": format_bytes(memory),
                "model FLOPs/s": f"{flops / seconds[name] / 1e9:.1f} G",
                "of matmul": f"{flops / seconds[name] / matmul:.1%}",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="1m,10m", help="comma list of: " + ", ".join(MODELS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-memory", action="store_true", help="skip the memory children")
    args = parser.parse_args()
    sizes = [s.strip() for s in args.models.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in MODELS]
    if unknown:
        parser.error(f"unknown model size {unknown[0]!r}; choose from {', '.join(MODELS)}")
    torch.set_num_threads(args.threads)
    matmul = matmul_flops_per_second()
    print(
        f"batch {args.batch} x {args.new} new tokens, prompt {args.prompt}, threads "
        f"{args.threads}, median of {args.repeats} interleaved rounds; matmul reference "
        f"{matmul / 1e9:.1f} GFLOP/s (1024^2 float32)"
    )
    rows = [row for size in sizes for row in bench(size, args, matmul)]
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
