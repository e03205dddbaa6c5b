"""Supervised fine-tuning on worked solutions: the Lightning module and batch collation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tempo.data.problem import Problem


class SolutionCollator:
    """Right-padded `prompt + solution + EOS`, with the loss only on the solution and EOS."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer

    def __call__(self, problems: Sequence[Problem]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        rows, labels = [], []
        for p in problems:
            prompt = tok(p.prompt, add_special_tokens=False)["input_ids"]
            answer = tok(p.solution, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            rows.append(prompt + answer)
            labels.append([-100] * len(prompt) + answer)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        lab = torch.full((len(rows), width), -100, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (r, y) in enumerate(zip(rows, labels, strict=True)):
            ids[i, : len(r)] = torch.tensor(r)
            lab[i, : len(y)] = torch.tensor(y)
            attn[i, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": attn, "labels": lab}


class SFTModule(L.LightningModule):
    """Next-token cross-entropy on solutions, AdamW with linear warm-up and cosine decay."""

    def __init__(
        self,
        model: PreTrainedModel,
        lr: float,
        total_steps: int,
        warmup_steps: int = 50,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.lr, self.total_steps = lr, total_steps
        self.warmup_steps, self.weight_decay = warmup_steps, weight_decay

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log("sft/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)

        def factor(step: int) -> float:
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
