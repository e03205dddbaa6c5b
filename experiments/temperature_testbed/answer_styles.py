"""How often a policy samples the rewarded ending, per sampling temperature.

    tempo-eval -m eval.temperature=0.4,0.7,1.0,1.3,1.6 save_samples=true \
        +task_overrides.arithmetic.unboxed_fraction=0.9 +task_overrides.arithmetic.num_test=1000 \
        hydra.sweep.dir=/tmp/styles
    python experiments/temperature_testbed/answer_styles.py /tmp/styles

Reads the `samples.jsonl` and `eval_results.json` of every tempo-eval run below the folders and
prints, per run: the sampling T, the share of completions that hold a `\\boxed{}` answer, the
accuracy of those, the reward rate (correct completions per completion: avg@n) and the share
of greedy completions that box.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def styles(samples: Path) -> dict[str, float]:
    """Box share, accuracy given a box, reward rate and greedy box share of one samples file."""
    total = boxed = correct = rows = greedy_boxed = 0
    for line in samples.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        rows += 1
        greedy_boxed += "\\boxed{" in (record.get("greedy_completion") or "")
        for text, ok in zip(record["completions"], record["correct"], strict=True):
            total += 1
            boxed += "\\boxed{" in text
            correct += bool(ok)
    return {
        "box_share": boxed / max(total, 1),
        "accuracy_if_boxed": correct / max(boxed, 1),
        "reward_rate": correct / max(total, 1),
        "greedy_box_share": greedy_boxed / max(rows, 1),
    }


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    found = sorted(p for folder in argv for p in Path(folder).rglob("samples.jsonl"))
    if not found:
        print(f"answer_styles: no samples.jsonl below {', '.join(argv)}", file=sys.stderr)
        return 2
    print("| T | box share | accuracy if boxed | reward rate | greedy boxes |")
    print("| --- | --- | --- | --- | --- |")
    for samples in found:
        results = json.loads((samples.parent / "eval_results.json").read_text(encoding="utf-8"))
        s = styles(samples)
        print(
            f"| {results['sampling']['temperature']:g} | {s['box_share']:.3f} | "
            f"{s['accuracy_if_boxed']:.3f} | {s['reward_rate']:.3f} | {s['greedy_box_share']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
