"""The record of one batch of sampled completions."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch


@dataclass
class Rollout:
    """Everything later stages need about a sampled batch, per token where it matters.

    Shapes: B rows, P prompt positions (left-padded), L generated positions. Every log-prob
    here is under the behaviour policy softmax(z / T[b, t]) with the stored per-token T.
    """

    prompt_ids: torch.Tensor  # [B, P] long, left-padded
    prompt_mask: torch.Tensor  # [B, P] long, 1 = real prompt token
    tokens: torch.Tensor  # [B, L] long, pad after the end of each completion
    mask: torch.Tensor  # [B, L] float, 1 = generated token (EOS included)
    temperatures: torch.Tensor  # [B, L] temperature each token was sampled at
    logprobs: torch.Tensor  # [B, L] log softmax(z / T)[token]
    entropy: torch.Tensor  # [B, L] next-token entropy at T = 1
    entropy_at_T: torch.Tensor  # [B, L] next-token entropy at the sampled T
    finished: torch.Tensor  # [B] bool: ended with EOS (False = truncated at max length)
    controller_data: dict[str, torch.Tensor] = field(default_factory=dict)  # [B, L] each

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(-1)

    def input_ids(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt and completion joined: ids [B, P+L] and attention mask [B, P+L]."""
        ids = torch.cat([self.prompt_ids, self.tokens], dim=1)
        attn = torch.cat([self.prompt_mask, self.mask.long()], dim=1)
        return ids, attn

    def select(self, rows: slice | torch.Tensor) -> Rollout:
        """A sub-batch (e.g. a micro-batch) sharing storage where possible."""
        kwargs = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                kwargs[f.name] = {k: v[rows] for k, v in value.items()}
            else:
                kwargs[f.name] = value[rows]
        return Rollout(**kwargs)

    def trimmed(self) -> Rollout:
        """The same rows without padding columns that no row uses: leading prompt columns
        that are padding in every row, and completion columns past the longest completion.

        A micro-batch of short rows then costs its own length, not the batch's longest.
        Positions are counted from each row's first real token, so nothing else changes.
        """
        if self.tokens.shape[0] == 0:
            return self
        real = self.prompt_mask.bool().any(0)
        first = int(real.long().argmax()) if bool(real.any()) else self.prompt_mask.shape[1]
        longest = int(self.mask.sum(-1).max())
        if first == 0 and longest == self.tokens.shape[1]:
            return self
        kwargs = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("prompt_ids", "prompt_mask"):
                kwargs[f.name] = value[:, first:]
            elif f.name == "finished":
                kwargs[f.name] = value
            elif isinstance(value, dict):
                kwargs[f.name] = {k: v[:, :longest] for k, v in value.items()}
            else:
                kwargs[f.name] = value[:, :longest]
        return Rollout(**kwargs)
