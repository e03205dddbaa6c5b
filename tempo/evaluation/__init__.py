"""Held-out evaluation shared by training and `tempo-eval`: scoring, metrics, loading."""

from tempo.evaluation.metrics import all_ks, evaluation_metrics
from tempo.evaluation.scoring import Samples, rollout_samples, score_problems

__all__ = ["Samples", "all_ks", "evaluation_metrics", "rollout_samples", "score_problems"]
