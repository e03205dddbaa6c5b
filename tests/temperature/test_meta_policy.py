"""TAMPO (`meta_policy`): sparsemax, the temperature-advantage update, the nucleus draw, state.

Every expected value is computed independently here: sparsemax by bisection on the threshold
and by brute force over supports, log-likelihoods with math.log/exp loops.
"""

import io
import itertools
import math
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from tempo.config_error import ConfigError
from tempo.temperature.meta_policy import MetaPolicyTemperature, nucleus_support, sparsemax

CONF = Path(__file__).resolve().parents[2] / "conf" / "method" / "meta_policy.yaml"
PAPER_GRID = [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5]


# ---------------------------------------------------------------- independent references
def project_bisection(z: list[float]) -> list[float]:
    """Simplex projection: find tau with sum max(z - tau, 0) = 1 by bisection."""
    lo, hi = max(z) - 1.0, max(z)  # mass >= 1 at lo, 0 at hi
    for _ in range(200):
        mid = (lo + hi) / 2
        if sum(max(v - mid, 0.0) for v in z) > 1:
            lo = mid
        else:
            hi = mid
    tau = (lo + hi) / 2
    return [max(v - tau, 0.0) for v in z]


def project_brute_force(z: list[float]) -> list[float]:
    """Simplex projection by KKT over every support: the one support S whose threshold
    tau = (sum_S z - 1)/|S| keeps S strictly positive and everything else <= 0."""
    n = len(z)
    for size in range(1, n + 1):
        for support in itertools.combinations(range(n), size):
            tau = (sum(z[j] for j in support) - 1) / size
            inside = all(z[j] - tau > 0 for j in support)
            outside = all(z[j] - tau <= 1e-12 for j in range(n) if j not in support)
            if inside and outside:
                return [z[j] - tau if j in support else 0.0 for j in range(n)]
    raise AssertionError("no valid support")


def loglik(row_logits: list[list[float]], row_tokens: list[int], length: int, t: float) -> float:
    """(1/L) sum_t log softmax(z_t / T)[o_t] over the first `length` tokens, in plain Python."""
    total = 0.0
    for pos in range(length):
        z = row_logits[pos]
        total += z[row_tokens[pos]] / t - math.log(sum(math.exp(v / t) for v in z))
    return total / length


def minmax(values: list[float]) -> list[float]:
    lo, hi = min(values), max(values)
    if hi == lo:
        return [1 / len(values)] * len(values)
    scaled = [(v - lo) / (hi - lo) for v in values]
    return [s / sum(scaled) for s in scaled]


def draw_counts(ctl: MetaPolicyTemperature, n: int, step: int = 0) -> list[float]:
    counts = [0] * len(ctl.candidates)
    for _ in range(n):
        ctl.begin_step(step)
        counts[ctl.index] += 1
    return [c / n for c in counts]


# ---------------------------------------------------------------- sparsemax
@pytest.mark.parametrize(
    ("x", "expected"),
    [
        ([1.0, 0.0], [1.0, 0.0]),
        ([0.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]),
        ([5.0, 0.0, -1.0], [1.0, 0.0, 0.0]),
        ([1.0, 0.8, 0.0], [0.6, 0.4, 0.0]),
        ([0.5, 0.5 + 1e-3], [0.5 - 5e-4, 0.5 + 5e-4]),
        ([1000.0, 1000.5], [0.25, 0.75]),
        ([0.3], [1.0]),
    ],
)
def test_sparsemax_hand_cases(x, expected):
    out = sparsemax(torch.tensor(x, dtype=torch.float64))
    assert torch.allclose(out, torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_sparsemax_far_entries_are_exactly_zero():
    out = sparsemax(torch.tensor([2.0, 1.5, -3.0, 0.2]))
    assert out[2] == 0 and out[3] == 0
    assert torch.allclose(out, torch.tensor([0.75, 0.25, 0.0, 0.0]))


@pytest.mark.parametrize("shape", [(7,), (4, 5), (3, 2, 6), (2, 10)])
def test_sparsemax_matches_bisection_on_random_batches(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 1.5
    out = sparsemax(x)
    assert out.shape == x.shape
    for idx in itertools.product(*(range(s) for s in shape[:-1])):
        row = x[idx].tolist()
        assert out[idx].tolist() == pytest.approx(project_bisection(row), abs=1e-9)
    assert torch.allclose(out.sum(-1), torch.ones(shape[:-1], dtype=torch.float64))
    assert bool((out >= 0).all())


@pytest.mark.parametrize("dim", [0, 1, -2])
def test_sparsemax_along_other_dims_matches_brute_force(dim):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, 4, 3, generator=gen, dtype=torch.float64)
    out = sparsemax(x, dim=dim)
    moved_x, moved_out = x.movedim(dim, -1), out.movedim(dim, -1)
    for idx in itertools.product(*(range(s) for s in moved_x.shape[:-1])):
        expected = project_brute_force(moved_x[idx].tolist())
        assert moved_out[idx].tolist() == pytest.approx(expected, abs=1e-12)


def test_sparsemax_is_stable_and_keeps_low_precision_dtype():
    x = torch.tensor([[0.1, 0.9, 0.4]], dtype=torch.float32)
    shifted = sparsemax(x + 1e6)
    assert torch.allclose(shifted, sparsemax(x), atol=1e-2)
    assert torch.isfinite(sparsemax(x * 1e30)).all()
    half = sparsemax(x.bfloat16())
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.float(), torch.tensor([[0.0, 0.75, 0.25]]), atol=1e-2)


# ---------------------------------------------------------------- one full update by hand
LOGITS = [  # [B=6, L=3, V=4]
    [[2.0, 0.5, -1.0, 0.0], [0.3, 1.7, 0.2, -0.5], [1.0, 1.0, 3.0, -2.0]],
    [[0.0, -1.5, 2.5, 0.4], [1.2, 0.0, 0.1, 2.2], [0.0, 0.0, 0.0, 0.0]],
    [[-0.7, 0.9, 0.0, 1.4], [3.0, -3.0, 0.5, 0.5], [2.0, 2.0, 2.0, 2.0]],
    [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
    [[0.5, 0.1, 0.3, 0.9], [0.0, 0.2, 0.4, 0.6], [1.0, -1.0, 1.0, -1.0]],
    [[1.5, -0.5, 0.0, 2.0], [0.4, 0.3, 0.2, 0.1], [-1.0, 2.0, 0.0, 1.0]],
]
TOKENS = [[0, 1, 1], [3, 3, 0], [1, 2, 3], [0, 1, 2], [2, 1, 0], [1, 0, 3]]
LENGTHS = [3, 2, 1, 3, 0, 3]  # row 4 is an empty completion
ADVANTAGES = [1.2, -0.5, 0.8, 0.0, -0.7, 0.0]
CANDS = [0.5, 1.0, 2.0]
INIT = [0.1, -0.2, 0.3]
ALPHA = 0.25


def test_full_update_matches_hand_computation():
    ctl = MetaPolicyTemperature(candidates=CANDS, alpha=ALPHA, init=INIT, seed=1)
    logits = torch.tensor(LOGITS)
    tokens = torch.tensor(TOKENS)
    mask = (torch.arange(3).unsqueeze(0) < torch.tensor(LENGTHS).unsqueeze(1)).float()
    advantages = torch.tensor(ADVANTAGES)

    # What the loop does: row 3 (A = 0) is skipped, the rest go in two micro-batches.
    stats = torch.full((6, 3), float("nan"))
    for rows in ([0, 1, 2], [4, 5]):
        idx = torch.tensor(rows)
        cand = torch.stack(
            [
                torch.log_softmax(logits[idx] / t, -1).gather(-1, tokens[idx, :, None])[..., 0]
                for t in ctl.statistics_temperatures()
            ],
            -1,
        )
        stats[idx] = ctl.token_statistics(cand, mask[idx])
    metrics = ctl.update(None, advantages, stats)

    # --- by hand
    contributing = [0, 1, 2, 5]  # row 3 skipped, row 4 empty
    ll = {i: [loglik(LOGITS[i], TOKENS[i], LENGTHS[i], t) for t in CANDS] for i in contributing}
    for i in range(6):
        if i in contributing:
            assert stats[i].tolist() == pytest.approx(ll[i], abs=1e-5)
        else:
            assert torch.isnan(stats[i]).all()
    w = {i: project_brute_force(ll[i]) for i in contributing}
    a = [sum(w[i][k] * ADVANTAGES[i] for i in contributing) / 6 for k in range(3)]
    ema = [(1 - ALPHA) * INIT[k] + ALPHA * a[k] for k in range(3)]
    pi = minmax(ema)
    support = sum(sum(v > 0 for v in w[i]) for i in contributing) / len(contributing)
    best = {i: max(range(3), key=lambda k, i=i: ll[i][k]) for i in contributing}
    pos, neg = [0, 2], [1]  # A > 0 / A < 0 among rows with statistics

    assert 1 < support < 3  # the case really exercises sparsity
    assert ctl.ema.tolist() == pytest.approx(ema, abs=1e-6)
    assert ctl.probs.tolist() == pytest.approx(pi, abs=1e-6)
    assert metrics["method/support_size"] == pytest.approx(support)
    for k, lab in enumerate(["0.5", "1.0", "2.0"]):
        assert metrics[f"method/temp_adv_T={lab}"] == pytest.approx(a[k], abs=1e-6)
        assert metrics[f"method/ema_T={lab}"] == pytest.approx(ema[k], abs=1e-6)
        share_pos = sum(best[i] == k for i in pos) / len(pos)
        share_neg = sum(best[i] == k for i in neg) / len(neg)
        assert metrics[f"method/argmax_pos_T={lab}"] == pytest.approx(share_pos)
        assert metrics[f"method/argmax_neg_T={lab}"] == pytest.approx(share_neg)

    # The next begin_step reports the new pi and Abar before drawing.
    drawn = ctl.begin_step(1)
    for k, lab in enumerate(["0.5", "1.0", "2.0"]):
        assert drawn[f"method/prob_T={lab}"] == pytest.approx(pi[k], abs=1e-6)
        assert drawn[f"method/ema_T={lab}"] == pytest.approx(ema[k], abs=1e-6)
    assert drawn["method/T"] in CANDS


def test_update_without_statistics_decays_the_ema():
    ctl = MetaPolicyTemperature(candidates=CANDS, alpha=0.1, init=[1.0, 2.0, 4.0])
    metrics = ctl.update(None, torch.zeros(8), None)
    assert ctl.ema.tolist() == pytest.approx([0.9, 1.8, 3.6])
    assert ctl.probs.tolist() == pytest.approx(minmax([0.9, 1.8, 3.6]))
    assert metrics["method/support_size"] == 0.0
    assert all(metrics[f"method/temp_adv_T={lab}"] == 0.0 for lab in ["0.5", "1.0", "2.0"])


def test_update_rejects_statistics_of_the_wrong_shape():
    ctl = MetaPolicyTemperature(candidates=CANDS)
    with pytest.raises(ValueError, match="statistics shape"):
        ctl.update(None, torch.zeros(4), torch.zeros(4, 2))


# ---------------------------------------------------------------- pi and the draw
def test_minmax_normalisation_uniform_when_equal_and_zero_at_min():
    assert MetaPolicyTemperature(init=0.7).probs.tolist() == pytest.approx([0.1] * 10)
    ctl = MetaPolicyTemperature(candidates=[0.8, 1.0, 1.2], init=[1.0, 2.0, 5.0])
    assert ctl.probs.tolist() == pytest.approx([0.0, 0.2, 0.8])
    # After an update the argmin of Abar gets exactly 0.
    ctl.update(None, torch.tensor([1.0, -1.0]), torch.tensor([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]]))
    ema = ctl.ema.tolist()
    assert ctl.probs[ema.index(min(ema))] == 0
    assert ctl.probs.tolist() == pytest.approx(minmax(ema))


def test_nucleus_draws_follow_the_renormalised_nucleus():
    # pi = minmax([0, 3, 1, 2]) = [0, 1/2, 1/6, 1/3]; top_p 0.7 keeps {1, 3} -> [0.6, 0.4].
    ctl = MetaPolicyTemperature(candidates=[0.6, 0.9, 1.2, 1.5], init=[0, 3, 1, 2], seed=5)
    assert ctl.probs.tolist() == pytest.approx([0, 1 / 2, 1 / 6, 1 / 3])
    freq = draw_counts(ctl, 20000)
    assert freq[0] == 0 and freq[2] == 0  # outside the nucleus: never drawn
    assert freq[1] == pytest.approx(0.6, abs=0.015)
    assert freq[3] == pytest.approx(0.4, abs=0.015)


def test_top_p_one_covers_every_candidate_with_mass():
    ctl = MetaPolicyTemperature(candidates=[0.6, 0.9, 1.2, 1.5], top_p=1.0, init=[0, 3, 1, 2])
    freq = draw_counts(ctl, 20000)
    assert freq[0] == 0  # pi = 0 for the minimum of Abar
    assert freq[1:] == pytest.approx([1 / 2, 1 / 6, 1 / 3], abs=0.015)
    uniform = MetaPolicyTemperature(top_p=1.0, seed=2)
    assert draw_counts(uniform, 20000) == pytest.approx([0.1] * 10, abs=0.015)


def test_nucleus_keeps_every_candidate_tied_at_its_edge():
    # Uniform pi over 10 candidates, top_p 0.7: 7 reach the mass, the 3 tied with them stay in.
    freq = draw_counts(MetaPolicyTemperature(seed=4), 20000)
    assert freq == pytest.approx([1 / 10] * 10, abs=0.015)
    # pi = [0.4, 0.2, 0.2, 0.2]: 0.4 + 0.2 reaches 0.6, both other 0.2s are tied with the edge.
    assert nucleus_support([0.4, 0.2, 0.2, 0.2], 0.6) == [0, 1, 2, 3]
    assert nucleus_support([0.4, 0.3, 0.2, 0.1], 0.6) == [0, 1]
    assert nucleus_support([0.1, 0.5, 0.4], 0.3) == [1]


def test_full_sampling_ignores_top_p_and_greedy_takes_the_mode():
    full = MetaPolicyTemperature(
        candidates=[0.6, 0.9, 1.2, 1.5], top_p=0.1, sampling="full", init=[0, 3, 1, 2]
    )
    assert draw_counts(full, 20000)[1:] == pytest.approx([1 / 2, 1 / 6, 1 / 3], abs=0.015)
    greedy = MetaPolicyTemperature(candidates=[0.6, 0.9, 1.2], sampling="greedy", init=[0, 3, 3])
    assert draw_counts(greedy, 50) == [0.0, 1.0, 0.0]  # tie between 0.9 and 1.2: lower index


def test_warmup_draws_uniformly_then_from_pi():
    ctl = MetaPolicyTemperature(candidates=[0.6, 0.9, 1.2, 1.5], init=[0, 0, 0, 9], warmup_steps=2)
    assert draw_counts(ctl, 20000, step=1) == pytest.approx([0.25] * 4, abs=0.015)
    assert draw_counts(ctl, 200, step=2) == [0.0, 0.0, 0.0, 1.0]


def test_temperature_is_the_drawn_value_for_every_row():
    ctl = MetaPolicyTemperature(seed=7)
    with pytest.raises(RuntimeError, match="begin_step"):
        ctl.temperature(torch.zeros(3, 5), torch.zeros(3, 4), torch.ones(3), 0)
    metrics = ctl.begin_step(0)
    prev = ctl.initial_temperature(3, torch.device("cpu"))
    decision = ctl.temperature(torch.zeros(3, 5, dtype=torch.bfloat16), None, prev, 0)
    assert decision.temperature.dtype == torch.float32
    assert decision.temperature.tolist() == pytest.approx([metrics["method/T"]] * 3)
    assert prev.tolist() == pytest.approx([metrics["method/T"]] * 3)
    assert decision.records == {}
    assert ctl.name == "meta_policy" and not ctl.per_token and not ctl.has_loss()
    assert ctl.statistics_source == "rollout"
    assert MetaPolicyTemperature(likelihood_logits="post_update").statistics_source == (
        "post_update"
    )


def test_metric_keys_use_short_candidate_labels():
    keys = MetaPolicyTemperature().begin_step(0)
    labels = ["0.6", "0.7", "0.8", "0.9", "1.0", "1.1", "1.2", "1.3", "1.4", "1.5"]
    expected = {"method/T"} | {f"method/{m}_T={lab}" for m in ("prob", "ema") for lab in labels}
    assert set(keys) == expected


# ---------------------------------------------------------------- state
def _random_update(ctl: MetaPolicyTemperature, gen: torch.Generator) -> dict[str, float]:
    adv = torch.randn(8, generator=gen)
    adv[:2] = 0
    stats = torch.randn(8, len(ctl.candidates), generator=gen) * 2
    stats[:2] = float("nan")
    return ctl.update(None, adv, stats)


def test_checkpoint_round_trip_reproduces_draws_and_updates():
    ctl = MetaPolicyTemperature(alpha=0.3, seed=11)
    gen = torch.Generator().manual_seed(0)
    for step in range(5):
        ctl.begin_step(step)
        _random_update(ctl, gen)
    buffer = io.BytesIO()
    torch.save(ctl.state_dict(), buffer)
    buffer.seek(0)
    restored = MetaPolicyTemperature(alpha=0.3, seed=999)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.current_temperature == ctl.current_temperature
    assert restored.step == ctl.step == 4
    assert torch.equal(restored.ema, ctl.ema) and torch.equal(restored.probs, ctl.probs)

    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for step in range(5, 15):
        assert restored.begin_step(step) == ctl.begin_step(step)
        assert _random_update(restored, gen_b) == _random_update(ctl, gen_a)
    assert torch.equal(restored.ema, ctl.ema)


def test_state_dict_keys_and_candidate_mismatch():
    ctl = MetaPolicyTemperature(candidates=CANDS)
    assert set(ctl.state_dict()) == {"ema", "probs", "_extra_state"}
    other = MetaPolicyTemperature(candidates=[0.5, 1.0, 2.5])
    with pytest.raises(ValueError, match="candidates"):
        other.load_state_dict(ctl.state_dict())


def test_dtype_casts_keep_the_state_in_float64():
    ctl = MetaPolicyTemperature(candidates=CANDS, init=[0.123456789, 0.2, 0.3])
    ctl.to(torch.bfloat16)
    assert ctl.ema.dtype == torch.float64 and ctl.probs.dtype == torch.float64
    assert ctl.ema[0].item() == 0.123456789


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"candidates": []}, "candidates"),
        ({"candidates": [0.6, 0.0]}, "candidates"),
        ({"candidates": [0.6, -1.0]}, "candidates"),
        ({"candidates": [0.6, 0.6]}, "candidates"),
        ({"candidates": [0.6, 0.6000000001]}, "candidates"),  # would share a metric key
        ({"candidates": [0.6, math.nan]}, "candidates"),
        ({"candidates": [0.6, math.inf]}, "candidates"),
        ({"candidates": [0.6, "hot"]}, "candidates"),
        ({"candidates": [True, 0.6]}, "candidates"),
        ({"candidates": 1.0}, "candidates"),
        ({"candidates": "0.6"}, "candidates"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": -0.1}, "top_p"),
        ({"top_p": math.nan}, "top_p"),
        ({"top_p": "high"}, "top_p"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": 1.01}, "alpha"),
        ({"alpha": None}, "alpha"),
        ({"sampling": "beam"}, "sampling"),
        ({"sampling": None}, "sampling"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"warmup_steps": 1.5}, "warmup_steps"),
        ({"init": [0.0, 1.0]}, "init"),
        ({"init": math.nan}, "init"),
        ({"init": "zero"}, "init"),
        ({"init": True}, "init"),
        ({"likelihood_logits": "current"}, "likelihood_logits"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": None}, "seed"),
    ],
)
def test_invalid_settings_name_their_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        MetaPolicyTemperature(**kwargs)
    assert err.value.key == key


def test_yaml_instantiates_a_working_controller():
    root = OmegaConf.create({"seed": 3, "method": OmegaConf.load(CONF)})
    for convert in ("none", "all"):
        ctl = hydra.utils.instantiate(root.method, _convert_=convert)
        assert isinstance(ctl, MetaPolicyTemperature)
        assert ctl.candidates == pytest.approx(PAPER_GRID)
        assert (ctl.top_p, ctl.alpha, ctl.sampling, ctl.seed) == (0.7, 0.05, "nucleus", 3)
        assert (ctl.warmup_steps, ctl.statistics_source) == (0, "rollout")
        assert ctl.probs.tolist() == pytest.approx([0.1] * 10)
    same_seed = MetaPolicyTemperature(seed=3)
    draws = [ctl.begin_step(s)["method/T"] for s in range(20)]
    assert draws == [same_seed.begin_step(s)["method/T"] for s in range(20)]
