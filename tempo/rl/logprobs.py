"""Kept for existing imports: the log-prob math lives in `tempo.ops.logprobs`."""

from tempo.ops.logprobs import candidate_logprobs, token_entropy, token_logprobs

__all__ = ["candidate_logprobs", "token_entropy", "token_logprobs"]
