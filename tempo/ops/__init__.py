"""Shared numerical primitives below both `tempo.rl` and `tempo.temperature`: per-token
log-probs, entropies and candidate likelihoods of temperature-scaled policies, from full
logits (`logprobs`) or chunk by chunk from hidden states (`chunked_logprobs`)."""
