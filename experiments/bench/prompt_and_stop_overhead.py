"""What the real-model input and output paths cost: the prompt path (chat template, BOS) and
the up-front length check, and stopping on several EOS ids instead of one.

    .venv/bin/python experiments/bench/prompt_and_stop_overhead.py [--rounds 5]

Prints, in one run: milliseconds to render and tokenize 512 training + 200 held-out prompts
(the preflight check) and to encode a batch of 64, without and with a chat template; and the
sampler's tokens/s with one and with two EOS ids, interleaved round by round, as a ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tempo.data.arithmetic import ArithmeticTask  # noqa: E402
from tempo.models.prompting import PromptBuilder, PromptConfig  # noqa: E402
from tempo.models.tiny import tiny_config  # noqa: E402
from tempo.models.tokenizer import build_char_tokenizer  # noqa: E402
from tempo.sampling.sampler import Sampler  # noqa: E402
from tempo.temperature.fixed import FixedTemperature  # noqa: E402
from tests.models.chat_fixtures import char_tokenizer  # noqa: E402


def prompt_costs() -> None:
    task = ArithmeticTask(num_test=200)
    problems = [task.train_problem(i) for i in range(512)] + task.test_problems()
    for chat in (False, True):
        builder = PromptBuilder(
            char_tokenizer(chat_template=chat),
            PromptConfig(system_prompt="Be brief." if chat else None),
        )
        started = time.perf_counter()
        tokens = sum(len(builder.token_ids(p.prompt)) for p in problems)
        check = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(0, 256, 64):
            builder.encode([p.prompt for p in problems[i : i + 64]])
        encode = (time.perf_counter() - started) / 4
        print(
            f"chat template {chat!s:5}: preflight of {len(problems)} prompts "
            f"{check * 1000:.0f} ms ({tokens} tokens); encode 64 prompts {encode * 1000:.2f} ms"
        )


def stop_costs(rounds: int) -> None:
    tok = build_char_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(tok)).eval()
    ids = torch.randint(4, 90, (64, 12))
    mask = torch.ones_like(ids)
    rates: dict[int, list[float]] = {1: [], 2: []}
    unused = len(tok) + 10  # an id the model never samples: every row runs to full length
    for index in range(rounds):
        for count in (1, 2):
            stops = [tok.unk_token_id] if count == 1 else [tok.unk_token_id, unused]
            sampler = Sampler(64, stops, tok.pad_token_id)
            generator = torch.Generator().manual_seed(index)
            started = time.perf_counter()
            out = sampler.rollout(model, ids, mask, FixedTemperature(0.7), generator=generator)
            rates[count].append(float(out.mask.sum()) / (time.perf_counter() - started))
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(
        f"sampler, 1m model, 64 x 64: one EOS id {one:.0f} tokens/s, "
        f"two {two:.0f} ({two / one:.3f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    prompt_costs()
    stop_costs(args.rounds)


if __name__ == "__main__":
    main()
