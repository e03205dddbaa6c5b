"""Controller statistics under DDP: a real 2-process gloo group on CPU.

Each rank feeds its own (unequal) share of a batch to the controllers; the state they reach
must be the single-process state on the whole batch, computed here independently (plain
Python sparsemax by bisection, EMA and min-max; pooled token means; a sort-based quantile),
and identical on both ranks. One spawn runs every scenario (a cold start costs seconds), and
the tests below read its results.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import traceback
from pathlib import Path

import pytest
import torch

from tempo.distributed import global_cat, global_sum, global_sum_count, world_size
from tempo.sampling.rollout import Rollout
from tempo.temperature.heuristic.entropy_target import EntropyTargetController
from tempo.temperature.heuristic.two_level import TwoLevelTemperature
from tempo.temperature.meta_policy import MetaPolicyTemperature
from tests.temperature.test_meta_policy import project_bisection as sparsemax_ref

WORLD = 2
JOIN_TIMEOUT_S = 90
K = 10
#: Rows of the full TAMPO batch each rank holds: unequal shares (7 and 3 of 10).
SPLIT = (range(0, 7), range(7, 10))
STEPS = 4
V = 50


# ---------------------------------------------------------------- shared inputs
def tampo_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages [10] and statistics [10, K] of step `step`, with some NaN (skipped) rows;
    at step 2 every row of rank 1 is NaN (its whole share skipped)."""
    gen = torch.Generator().manual_seed(100 + step)
    adv = torch.randn(10, generator=gen, dtype=torch.float64)
    stats = torch.randn(10, K, generator=gen, dtype=torch.float64) * (0.2 + step)
    stats[3] = float("nan")
    if step == 2:
        stats[7:] = float("nan")
    return adv, stats


def rollout(entropy: list[list[float]], mask: list[list[float]]) -> Rollout:
    """A Rollout whose entropies (at T = 1 and at T) and mask are the given [B, L] lists."""
    ent = torch.tensor(entropy, dtype=torch.float32)
    batch, length = ent.shape
    return Rollout(
        prompt_ids=torch.zeros(batch, 1, dtype=torch.long),
        prompt_mask=torch.ones(batch, 1, dtype=torch.long),
        tokens=torch.zeros(batch, length, dtype=torch.long),
        mask=torch.tensor(mask, dtype=torch.float32),
        temperatures=torch.ones(batch, length),
        logprobs=torch.zeros(batch, length),
        entropy=ent,
        entropy_at_T=ent.clone(),
        finished=torch.ones(batch, dtype=torch.bool),
    )


#: E3 rollouts per step and rank (L = 4). Step 0 forms the target: rank 0 holds tokens 1, 2
#: (mean 1.5), rank 1 four tokens of 3 (mean 3): pooled 15/6 = 2.5, not the mean of means
#: 2.25. Step 1: rank 0 generated nothing. Step 2: unequal counts again.
E3_ROLLOUTS = {
    0: (([[1.0, 2.0, 9.0, 9.0]], [[1, 1, 0, 0]]), ([[3.0] * 4], [[1, 1, 1, 1]])),
    1: (([[5.0] * 4], [[0, 0, 0, 0]]), ([[2.0, 2.0, 9.0, 9.0]], [[1, 1, 0, 0]])),
    2: (([[1.0, 1.0, 1.0, 0.0]], [[1, 1, 1, 0]]), ([[4.0, 9.0, 9.0, 9.0]], [[1, 0, 0, 0]])),
}
#: Two-level entropies per rank: 5 generated tokens on rank 0, 2 on rank 1.
TWO_LEVEL = (
    ([[0.1, 0.7, 2.0, 9.0], [1.1, 0.4, 9.0, 9.0]], [[1, 1, 1, 0], [1, 1, 0, 0]]),
    ([[3.0, 0.2, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]], [[1, 1, 0, 0], [0, 0, 0, 0]]),
)


def e3_controller() -> EntropyTargetController:
    ctl = EntropyTargetController(t_init=1.0, t_min=0.5, t_max=1.5, target_steps=1)
    ctl.setup(hidden_size=8, vocab_size=V, total_steps=10)
    return ctl


# ---------------------------------------------------------------- the scenarios
def run_scenarios(rank: int) -> dict:
    """What each controller does with this rank's share (also runs in one process)."""
    out: dict = {"world": world_size()}
    # Helpers: rank-dependent sums and a gather of unequal lengths (rank 1: 0 then 3 values).
    out["sum"] = global_sum(torch.tensor([1.0 + rank, 10.0 * rank]))
    out["sum_count"] = global_sum_count(2.5 * (rank + 1), 1.0 + rank)
    out["cat_empty"] = global_cat(torch.arange(3.0) if rank == 0 else torch.zeros(0))
    out["cat"] = global_cat(torch.arange(2.0) + 10 * rank if rank == 0 else torch.ones(1, 3))
    out["cat_none"] = global_cat(torch.zeros(0))  # empty on every rank

    tampo = MetaPolicyTemperature(seed=7, alpha=0.3)
    rows = SPLIT[rank] if world_size() > 1 else range(10)
    draws, emas, supports = [], [], []
    for step in range(STEPS):
        tampo.begin_step(step)
        draws.append(tampo.index)
        adv, stats = tampo_batch(step)
        mine = torch.tensor(list(rows))
        local = stats[mine]
        if step == 2 and rank == 1:
            local = None  # the loop skipped every row of this rank: no statistics at all
        metrics = tampo.update(None, adv[mine], local)
        emas.append(tampo.ema.clone())
        supports.append(metrics["method/support_size"])
    out["tampo"] = {"draws": draws, "emas": emas, "probs": tampo.probs.clone(), "sup": supports}

    e3 = e3_controller()
    temps, targets = [], []
    for step in range(3):
        pair = E3_ROLLOUTS[step]
        if world_size() > 1:
            entropy, mask = pair[rank]
        else:  # the whole batch: both ranks' rows
            entropy, mask = pair[0][0] + pair[1][0], pair[0][1] + pair[1][1]
        e3.update(rollout(entropy, mask), torch.zeros(len(entropy)))
        temps.append(e3.current)
        targets.append(e3.target)
    out["e3"] = {"temps": temps, "targets": targets}

    two = TwoLevelTemperature(mode="quantile", quantile=0.8)
    if world_size() > 1:
        entropy, mask = TWO_LEVEL[rank]
    else:
        entropy, mask = TWO_LEVEL[0][0] + TWO_LEVEL[1][0], TWO_LEVEL[0][1] + TWO_LEVEL[1][1]
    two.update(rollout(entropy, mask), torch.zeros(len(entropy)))
    out["threshold"] = two.threshold
    return out


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    """One rank: join the gloo group, run the scenarios, save what it saw (or the error)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD
        )
        result = run_scenarios(rank)
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:
        result = {"error": traceback.format_exc()}
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Results of both ranks of a real 2-process gloo run; fails (never hangs) on a crash."""
    tmp = tmp_path_factory.mktemp("gloo")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, str(tmp / "init"), str(tmp))) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_TIMEOUT_S)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
    assert [p.exitcode for p in procs] == [0, 0], "a rank hung or crashed"
    results = [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for r, res in enumerate(results):
        assert "error" not in res, f"rank {r} failed:\n{res['error']}"
    return results


# ---------------------------------------------------------------- independent references
def tampo_reference(alpha: float = 0.3) -> list[list[float]]:
    """Abar after each step on the whole batch: a_k = (1/B) sum_i w_k(i) A_i, B = 10."""
    ema, out = [0.0] * K, []
    for step in range(STEPS):
        adv, stats = tampo_batch(step)
        a = [0.0] * K
        for i in range(10):
            row = stats[i].tolist()
            if all(math.isfinite(v) for v in row):
                w = sparsemax_ref(row)
                a = [a[k] + w[k] * float(adv[i]) for k in range(K)]
        ema = [(1 - alpha) * e + alpha * v / 10 for e, v in zip(ema, a, strict=True)]
        out.append(ema)
    return out


def quantile_ref(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# ---------------------------------------------------------------- tests
def test_helpers_reduce_and_gather_over_both_ranks(ranks):
    for res in ranks:
        assert res["world"] == 2
        assert res["sum"].tolist() == [3.0, 10.0]
        assert res["sum_count"] == (2.5 + 5.0, 3.0)
        assert res["cat_empty"].tolist() == [0.0, 1.0, 2.0]
        assert res["cat"].tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
        assert res["cat_none"].tolist() == []


def test_helpers_are_the_identity_in_one_process():
    x = torch.tensor([1.5, -2.0])
    assert world_size() == 1
    assert global_sum(x) is x
    assert global_sum_count(3.0, 2.0) == (3.0, 2.0)
    assert global_cat(torch.ones(2, 2)).tolist() == [1.0] * 4


def test_tampo_ema_is_the_full_batch_ema_and_both_ranks_agree(ranks):
    expected = tampo_reference()
    for res in ranks:
        for got, want in zip(res["tampo"]["emas"], expected, strict=True):
            assert got.tolist() == pytest.approx(want, abs=1e-12)
    zero, one = ranks[0]["tampo"], ranks[1]["tampo"]
    assert all(torch.equal(a, b) for a, b in zip(zero["emas"], one["emas"], strict=True))
    assert torch.equal(zero["probs"], one["probs"])
    # Dividing each rank's sum by its own share (7 and 3 rows) and averaging would differ.
    adv, stats = tampo_batch(0)
    means = []
    for share in SPLIT:
        rows = [i for i in share if math.isfinite(float(stats[i, 0]))]
        total = [
            sum(sparsemax_ref(stats[i].tolist())[k] * float(adv[i]) for i in rows) for k in range(K)
        ]
        means.append([0.3 * v / len(share) for v in total])
    mean_of_means = [(a + b) / 2 for a, b in zip(*means, strict=True)]
    assert max(abs(a - b) for a, b in zip(mean_of_means, expected[0], strict=True)) > 1e-4


def test_tampo_draws_the_same_temperature_on_every_rank_as_one_process(ranks):
    single = run_scenarios(0)["tampo"]  # no process group: the whole batch in one process
    assert ranks[0]["tampo"]["draws"] == ranks[1]["tampo"]["draws"] == single["draws"]
    assert len(set(single["draws"])) > 1  # the draws do move (so agreement is not trivial)
    # Logged support size: the mean over the global batch's contributing rows.
    assert ranks[0]["tampo"]["sup"] == pytest.approx(single["sup"], abs=1e-12)
    assert ranks[1]["tampo"]["sup"] == pytest.approx(single["sup"], abs=1e-12)


def test_e3_uses_pooled_token_means_over_both_ranks(ranks):
    d = math.log(V) + math.log(math.log(V))
    target = 15.0 / 6.0  # rank 0: 1 + 2, rank 1: 4 x 3
    t1 = 1.0 * (1 + 1.0 * math.log(target / 2.0) / d)  # step 1: only rank 1's 2, 2
    measured2 = (1 + 1 + 1 + 4) / 4
    t2 = t1 * (1 + t1 * math.log(target / measured2) / d)
    expected = [1.0, min(max(t1, 0.5), 1.5), min(max(t2, 0.5), 1.5)]
    for res in ranks:
        assert res["e3"]["targets"] == pytest.approx([target] * 3, rel=1e-12)
        assert res["e3"]["temps"] == pytest.approx(expected, rel=1e-12)
    assert ranks[0]["e3"] == ranks[1]["e3"]


def test_two_level_threshold_is_the_quantile_of_every_rank_tokens(ranks):
    tokens = [0.1, 0.7, 2.0, 1.1, 0.4, 3.0, 0.2]  # rank 0's five, rank 1's two
    want = quantile_ref(tokens, 0.8)
    assert ranks[0]["threshold"] == ranks[1]["threshold"] == pytest.approx(want, rel=1e-6)
    assert want != pytest.approx(quantile_ref(tokens[:5], 0.8))  # rank 0 alone would differ
