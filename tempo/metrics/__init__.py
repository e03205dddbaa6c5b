"""Evaluation metrics: pass@k, avg@k, maj@k, answer diversity, masked token statistics."""

from tempo.metrics.exploration import masked_mean, masked_std, unique_answers
from tempo.metrics.sampling_metrics import avg_at_k, maj_at_k, normalize_answer, pass_at_k

__all__ = [
    "avg_at_k",
    "maj_at_k",
    "masked_mean",
    "masked_std",
    "normalize_answer",
    "pass_at_k",
    "unique_answers",
]
