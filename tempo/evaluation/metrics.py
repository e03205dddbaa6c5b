"""Held-out metrics from per-problem records: greedy accuracy, avg@n, pass@k, maj@k.

Shared by the evaluations during training (`RLVRModule`) and by `tempo-eval`, so both report
the same keys computed the same way: `<prefix>/accuracy`, `<prefix>/avg@n`, `<prefix>/pass@k`
and `<prefix>/maj@k` for every requested k, `<prefix>/maj@n`, and
`<prefix>/temperature_mean` (the token-mean sampling temperature of the n samples).
"""

from __future__ import annotations

from collections.abc import Sequence

from tempo.metrics import avg_at_k, maj_at_k, pass_at_k


def all_ks(samples: int) -> tuple[int, ...]:
    """Every k from 1 to n: the default of `tempo-eval`."""
    return tuple(range(1, samples + 1))


def evaluation_metrics(
    records: Sequence[dict],
    ks: Sequence[int],
    samples: int,
    greedy: bool,
    prefix: str,
) -> dict[str, float]:
    """Aggregate `score_problems` records (one per problem) into mean metrics over problems.

    - accuracy (only if `greedy`): share of problems whose greedy completion is correct;
    - avg@n: mean share of correct samples per problem;
    - pass@k: unbiased 1 - C(n-c, k) / C(n, k) from the n samples, c of them correct;
    - maj@k: majority vote over the answers of each problem's *first* k samples (ties to the
      answer seen first, no-answer samples never vote); maj@n is always reported;
    - temperature_mean: mean per-token temperature over all sampled completion tokens (only
      if the records carry `temperatures` and `lengths`).
    """
    count = len(records)
    if count == 0:
        raise ValueError("evaluation_metrics needs at least one record")
    n = samples
    for record in records:
        if len(record["correct"]) != n or len(record["answers"]) != n:
            raise ValueError(f"every record needs {n} samples, got {len(record['correct'])}")
    metrics: dict[str, float] = {}
    if greedy:
        metrics[f"{prefix}/accuracy"] = sum(bool(r["greedy"]) for r in records) / count
    metrics[f"{prefix}/avg@{n}"] = sum(avg_at_k(r["correct"]) for r in records) / count
    for k in ks:
        total = sum(pass_at_k(n, sum(map(bool, r["correct"])), k) for r in records)
        metrics[f"{prefix}/pass@{k}"] = total / count
    for k in sorted({*ks, n}):
        votes = sum(maj_at_k(r["answers"][:k], r["correct"][:k]) for r in records)
        metrics[f"{prefix}/maj@{k}"] = votes / count
    if all("temperatures" in r and "lengths" in r for r in records):
        tokens = sum(sum(r["lengths"]) for r in records)
        weighted = sum(
            t * length
            for r in records
            for t, length in zip(r["temperatures"], r["lengths"], strict=True)
        )
        if tokens > 0:
            metrics[f"{prefix}/temperature_mean"] = weighted / tokens
    return metrics
