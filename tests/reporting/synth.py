"""Synthetic run directories (hand-written metrics.jsonl, summary.json, .hydra/) for tests."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

TASK = "arithmetic"
ACC = f"eval/{TASK}/accuracy"

HYDRA_RUN_NAME = (
    "${method_label:${hydra:runtime.choices.method},${oc.select:method.rule,null}}-s${seed}"
)


def make_run(
    root: Path,
    method: str,
    seed: int,
    final_acc: float = 0.5,
    *,
    rule: str | None = None,
    status: str = "finished",
    steps: int = 4,
    interpolated: bool = False,
    prob_temps: tuple[float, ...] = (),
) -> Path:
    """Write one run directory; status is finished | failed | unfinished.

    Accuracy rises linearly from 0.1 at step 0 to `final_acc` at the last step, so `best` and
    `final` are both `final_acc`. `interpolated` saves run_name as Hydra does (unresolved) with
    the method choice in `.hydra/hydra.yaml`.
    """
    label = f"{method}-{rule}" if rule else method
    run_dir = root / f"{label}-s{seed}_20260101-000000"
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True)
    node: dict = {"_target_": f"tempo.temperature.{method}.Controller"}
    if rule:
        node["rule"] = rule
    config = {
        "seed": seed,
        "experiment_name": "synthetic",
        "run_name": HYDRA_RUN_NAME if interpolated else f"{label}-s{seed}",
        "method": node,
    }
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump(config))
    if interpolated:
        hydra_cfg = {"hydra": {"runtime": {"choices": {"method": method}}}}
        (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump(hydra_cfg))
    (run_dir / "train.log").write_text("")
    rows = []
    for step in range(steps + 1):
        acc = 0.1 + (final_acc - 0.1) * step / steps
        row = {
            "step": step,
            "train/reward_mean": 0.2 + 0.05 * step,
            "explore/entropy": 1.0 - 0.1 * step,
            "explore/temperature_mean": 1.0,
            ACC: acc,
            f"eval/{TASK}/pass@1": acc,
            f"eval/{TASK}/pass@4": min(1.0, acc + 0.2),
            f"eval/{TASK}/avg@4": acc,
            f"eval/{TASK}/maj@4": acc,
        }
        if step == 1:
            row["loss/kl"] = "nan"  # how the JSONL sink writes non-finite values
        for i, temp in enumerate(prob_temps):
            row[f"method/prob_T={temp}"] = (i + 1 + step) / sum(
                j + 1 + step for j in range(len(prob_temps))
            )
        rows.append(row)
    if status != "finished":
        rows = rows[: max(1, steps // 2)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if status == "finished":
        final = dict(rows[-1])
        final.pop("step")
        evals = [k for k in final if k.startswith(f"eval/{TASK}/")]
        summary = {
            "status": "finished",
            "method": method,
            "task": TASK,
            "steps": steps,
            "wall_time_s": 10.0 + seed,
            "final": final,
            "initial": {k: rows[0][k] for k in evals},
            "best": {k: max(r[k] for r in rows) for k in evals},
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    elif status == "failed":
        (run_dir / "train.log").write_text(
            "[2026-01-01][HYDRA] Error executing job with overrides: []\n"
            "Traceback (most recent call last):\n"
            '  File "tempo/train.py", line 1, in main\n'
            "RuntimeError: CUDA out of memory\n"
        )
    return run_dir
