"""Warm-start the embedded model with a short supervised run, cached by its full recipe.

RL from a random 1M-parameter model would see no reward at all; a few minutes of SFT on the
task's worked solutions gives a partly competent policy. The result is keyed by everything
that determines it (model config, tokenizer, the SFT data, SFT recipe), so the second run and
every job of a sweep reuse it; a file lock makes concurrent jobs build it once.

The task enters the key through the data it feeds the SFT, not its name or class: a
fingerprint (`task_fingerprint`) hashes the prompt, worked solution and answer of the first
`FINGERPRINT_PROBLEMS` training problems the recipe draws. Renaming a task (or writing the same
generator settings in another config file) reuses the cache; a change of difficulty, prompt
template or seed changes those problems and so the key. With ``steps: 0`` no problem is used
and the key does not depend on the task at all. Entries written under the previous key
(`CACHE_FORMAT` 1, keyed by the task's ``repr``, which includes its name) are still found and
loaded when no entry exists under the new key.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from filelock import FileLock
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from tempo.config_error import ConfigError
from tempo.data.indexed import IndexedProblems
from tempo.logging.progress import StepProgressBar
from tempo.models.sft import SFTModule, SolutionCollator

CACHE_FORMAT = 2  # bump when the warm-start code changes what a key produces
_LEGACY_FORMAT = 1  # keyed by repr(task); still read (see the module docstring)
#: Training problems hashed into a task's fingerprint: far more than two different generator
#: settings ever share, and cheap to draw (milliseconds).
FINGERPRINT_PROBLEMS = 256
_SEED_OFFSET = 10_000_000  # the SFT data of recipe seed s starts at problem s * this


@dataclass
class WarmStartConfig:
    """The SFT recipe; every field is part of the cache key."""

    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError("warmstart.steps", self.steps, "an integer >= 0 (0 = no warm-start)")
        if self.batch_size < 1:
            raise ConfigError("warmstart.batch_size", self.batch_size, "an integer >= 1")
        if not self.lr > 0:
            raise ConfigError("warmstart.lr", self.lr, "a number > 0")


def task_fingerprint(task: Any, recipe: WarmStartConfig) -> str:
    """Hash of the SFT data `recipe` draws from `task`: (prompt, solution, answer) of its first
    `FINGERPRINT_PROBLEMS` training problems (fewer if the recipe uses fewer; none with
    ``steps: 0``). Problem ids are left out: they carry the task's name."""
    used = min(FINGERPRINT_PROBLEMS, recipe.steps * recipe.batch_size)
    digest = hashlib.sha256(f"problems:{used}".encode())
    offset = recipe.seed * _SEED_OFFSET
    for index in range(used):
        problem = task.train_problem(offset + index)
        fields = [problem.prompt, problem.solution, problem.answer]
        digest.update(json.dumps(fields, ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


def cache_key(
    model_config: dict[str, Any],
    vocab: dict[str, int],
    task: str,
    recipe: dict,
    cache_format: int = CACHE_FORMAT,
) -> str:
    """Stable hash of everything that determines the warm-started weights; ``task`` is the
    task's `task_fingerprint` (its ``repr`` for the legacy ``cache_format`` 1)."""
    blob = json.dumps(
        {
            "format": cache_format,
            "model": model_config,
            "vocab": vocab,
            "task": task,
            "sft": recipe,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def warm_started(
    model_config,
    tokenizer: PreTrainedTokenizerFast,
    task,
    recipe: WarmStartConfig,
    cache_dir: str | os.PathLike,
    accelerator: str = "cpu",
) -> tuple[PreTrainedModel, Path]:
    """Load the warm-started model for this recipe, training and caching it first if needed."""
    config_dict = model_config.to_dict()
    config_dict.pop("transformers_version", None)
    vocab, sft = tokenizer.get_vocab(), asdict(recipe)
    key = cache_key(config_dict, vocab, task_fingerprint(task, recipe), sft)
    root = Path(cache_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"warmstart-{key}"
    legacy = root / f"warmstart-{cache_key(config_dict, vocab, repr(task), sft, _LEGACY_FORMAT)}"
    if not (target / "meta.json").exists() and (legacy / "meta.json").exists():
        target = legacy  # built by an older tempo for this very task and recipe
    with FileLock(str(target) + ".lock"):
        if not (target / "meta.json").exists():
            _train_and_save(model_config, tokenizer, task, recipe, target, accelerator)
    model = AutoModelForCausalLM.from_pretrained(target, local_files_only=True)
    return model, target


def _train_and_save(model_config, tokenizer, task, recipe, target: Path, accelerator: str) -> None:
    torch.manual_seed(recipe.seed)
    # A copy: saving fills in the model's config (dtype, architectures), which would change
    # the caller's config and so the key of its next lookup in this process.
    model = AutoModelForCausalLM.from_config(copy.deepcopy(model_config))
    started = time.time()
    if recipe.steps > 0:
        print(f"[tempo] warm-start: {recipe.steps} SFT steps -> {target}", flush=True)
        module = SFTModule(model, recipe.lr, recipe.steps, recipe.warmup_steps, recipe.weight_decay)
        data = DataLoader(
            IndexedProblems(
                task.train_problem,
                recipe.steps * recipe.batch_size,
                offset=recipe.seed * _SEED_OFFSET,
            ),
            batch_size=recipe.batch_size,
            collate_fn=SolutionCollator(tokenizer),
        )
        trainer = L.Trainer(
            max_steps=recipe.steps,
            max_epochs=1,
            accelerator=accelerator,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            callbacks=[StepProgressBar("warm-start step")],
        )
        trainer.fit(module, data)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    meta = {
        "recipe": asdict(recipe),
        "task": repr(task),
        "task_fingerprint": task_fingerprint(task, recipe),
        "seconds": time.time() - started,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
