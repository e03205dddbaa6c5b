"""Where per-token temperatures go: mean T by position in the completion and by token class.

Per-token methods (introspective, EDT, EAD, two-level) are judged by *where* they raise or
lower T. Classes: `digit_op` (tokens made only of digits and arithmetic symbols), `answer`
(tokens inside the final `\\boxed{...}`, which wins over the other classes) and `other`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tempo.rewards.boxed import boxed_span

DIGIT_OP_CHARS = frozenset("0123456789+-*/=^().,")
CLASSES = ("digit_op", "answer", "other")
DIGIT_OP, ANSWER, OTHER = range(3)


def token_pieces(tokenizer) -> list[str]:
    """The text each vocabulary id decodes to on its own (computed once per tokenizer)."""
    return [tokenizer.decode([i]) for i in range(len(tokenizer))]


def token_classes(tokens: torch.Tensor, mask: torch.Tensor, pieces: Sequence[str]) -> torch.Tensor:
    """Class id (DIGIT_OP, ANSWER, OTHER) of every completion token; [B, L] long on CPU."""
    out = torch.full(tokens.shape, OTHER, dtype=torch.long)
    lengths = mask.sum(-1).long().tolist()
    for row, (ids, n) in enumerate(zip(tokens.tolist(), lengths, strict=True)):
        texts = [pieces[i] if 0 <= i < len(pieces) else "" for i in ids[:n]]
        starts, offset = [], 0
        for piece in texts:
            starts.append(offset)
            offset += len(piece)
        span = boxed_span("".join(texts))
        if span is not None and span[1] is None:  # unclosed box: the answer runs to the end
            span = (span[0], offset)
        for t, piece in enumerate(texts):
            stripped = piece.strip()
            end = starts[t] + len(piece)
            if span is not None and starts[t] < span[1] and end > span[0]:
                out[row, t] = ANSWER
            elif stripped and set(stripped) <= DIGIT_OP_CHARS:
                out[row, t] = DIGIT_OP
    return out


def temperature_by_class(
    temperatures: torch.Tensor, classes: torch.Tensor, mask: torch.Tensor, prefix: str = "method/"
) -> dict[str, float]:
    """Mean T of the valid tokens of each class (classes without tokens are left out)."""
    temps, valid = temperatures.detach().cpu().double(), mask.detach().cpu().bool()
    out = {}
    for cid, name in enumerate(CLASSES):
        sel = valid & (classes == cid)
        if bool(sel.any()):
            out[f"{prefix}T_class={name}"] = float(temps[sel].mean())
    return out


def temperature_by_position(
    temperatures: torch.Tensor,
    mask: torch.Tensor,
    max_length: int,
    buckets: int = 8,
    prefix: str = "method/",
) -> dict[str, float]:
    """Mean T of valid tokens in `buckets` equal-width position ranges of [0, max_length)."""
    temps, valid = temperatures.detach().cpu().double(), mask.detach().cpu().bool()
    width = max(1, -(-max_length // buckets))
    out = {}
    for lo in range(0, min(max_length, temps.shape[1]), width):
        hi = min(lo + width, max_length)
        sel = valid[:, lo:hi]
        if bool(sel.any()):
            out[f"{prefix}T_pos={lo}-{hi - 1}"] = float(temps[:, lo:hi][sel].mean())
    return out
