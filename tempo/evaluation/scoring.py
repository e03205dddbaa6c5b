"""Score held-out problems: one greedy completion and n samples per problem, checked.

`score_problems` is the per-batch work of every evaluation (during training and in
`tempo-eval`). It knows nothing about models: `sample_fn(prompts, greedy)` returns the
completions (see `rollout_samples` for turning a sampler `Rollout` into them), and `scorer`
is a `RewardScorer`: evaluation only needs correctness and the extracted answers, so its
`check` is used (no reward function runs); anything without `check` is called instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from tempo.data.problem import Problem
from tempo.sampling.rollout import Rollout


@dataclass
class Samples:
    """Completions for a list of prompts, row by row."""

    completions: list[str]
    temperatures: list[float]  # mean sampling temperature over each completion's tokens
    lengths: list[int]  # completion tokens (EOS included)
    inputs: list[str] | None = None  # the prompt text the model received (chat template etc.)


#: (prompts, greedy) -> one completion per prompt.
SampleFn = Callable[[list[str], bool], Samples]


def rollout_samples(rollout: Rollout, tokenizer, inputs: list[str] | None = None) -> Samples:
    """Decoded completions of a rollout with each row's token count and mean temperature;
    `inputs` are the rows' prompt texts as the model received them (kept for the records)."""
    texts = tokenizer.batch_decode(rollout.tokens.tolist(), skip_special_tokens=True)
    mask = rollout.mask.float()
    lengths = mask.sum(-1)
    temp_sum = (rollout.temperatures.float() * mask).sum(-1)
    means = torch.where(lengths > 0, temp_sum / lengths.clamp(min=1), torch.zeros_like(lengths))
    return Samples(texts, means.tolist(), [int(x) for x in lengths.tolist()], inputs)


def score_problems(
    sample_fn: SampleFn,
    scorer,
    problems: Sequence[Problem],
    samples: int,
    greedy: bool,
) -> list[dict]:
    """One record per problem (in order).

    The greedy completions of the whole batch are decoded first (no randomness), then
    `samples` completions per problem in one call, problem-major (p0 s0, p0 s1, ..., p1 s0).
    Record keys: `id`, `prompt` (the task's), `model_input` (the text the model received:
    chat template, system prompt and special tokens included), `gold`; `greedy` (correct,
    False when not decoded), `greedy_completion` and `greedy_answer` (None when not decoded);
    per sample, in order, `correct`, `answers` (extracted, None = no answer), `completions`,
    `temperatures` (mean T of the completion) and `lengths` (tokens).
    """
    problems = list(problems)
    golds = [p.answer for p in problems]
    check = getattr(scorer, "check", None) or scorer
    greedy_texts: list[str | None] = [None] * len(problems)
    greedy_answers: list[str | None] = [None] * len(problems)
    greedy_correct = [False] * len(problems)
    if greedy:
        decoded = sample_fn([p.prompt for p in problems], True)
        scored = check(decoded.completions, golds)
        greedy_texts = list(decoded.completions)
        greedy_answers, greedy_correct = list(scored.answers), list(scored.correct)
    n = samples
    drawn = sample_fn([p.prompt for p in problems for _ in range(n)], False)
    scored = check(drawn.completions, [g for g in golds for _ in range(n)])
    records = []
    for i, problem in enumerate(problems):
        rows = slice(i * n, (i + 1) * n)
        records.append(
            {
                "id": problem.id,
                "prompt": problem.prompt,
                "model_input": drawn.inputs[i * n] if drawn.inputs else problem.prompt,
                "gold": problem.answer,
                "greedy": bool(greedy_correct[i]),
                "greedy_completion": greedy_texts[i],
                "greedy_answer": greedy_answers[i],
                "correct": [bool(c) for c in scored.correct[rows]],
                "answers": list(scored.answers[rows]),
                "completions": list(drawn.completions[rows]),
                "temperatures": list(drawn.temperatures[rows]),
                "lengths": list(drawn.lengths[rows]),
            }
        )
    return records
