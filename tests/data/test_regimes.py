"""Regimes on a two-response world whose probabilities can be worked out by hand."""

import math

import pytest
import torch

from didray.config.schema import OffPolicy, PolicyGradientPairs, PowerLaw
from didray.core.did import tilt_entropy
from didray.data.regimes import Sources, build_pairs, resample, warnings
from didray.errors import BadInput

SCORES = {"a": 1.0, "b": 0.0}
SCORE_TABLE = torch.tensor([[1.0, 0.0]], dtype=torch.float64)


def uniform(prompts: list[str], n: int, seed: int) -> list[list[str]]:
    g = torch.Generator().manual_seed(seed)
    return [[("a", "b")[i] for i in torch.randint(2, (n,), generator=g).tolist()]
            for _ in prompts]


def given(per_prompt: int, seed: int) -> list[tuple[int, str, str]]:
    return [(0, "b", "a")] * per_prompt  # as given, even against the score


SOURCES = Sources(prompts=["p"], families=["open"],
                  score=lambda ps, rs: [SCORES[r] for r in rs],
                  sample_ref=uniform, given_pairs=given,
                  given_chosen=lambda per_prompt, seed: [["a"] * per_prompt],
                  tilt_entropy=lambda tau: float(tilt_entropy(SCORE_TABLE, tau).mean()),
                  entropy_method="exact", log_n=math.log(2), top_entropy=0.0)


def test_resample_weights_hand_derived():
    # weights ∝ exp(-log 3 * score): [1, 1/3] -> [3/4, 1/4]; ESS = 1 / (9/16 + 1/16) = 1.6
    g = torch.Generator().manual_seed(0)
    picks = [resample([0.0, 1.0], -math.log(3), g) for _ in range(4000)]
    assert picks[0][1] == pytest.approx(1.6)
    share = sum(k == 0 for k, _ in picks) / len(picks)
    assert share == pytest.approx(0.75, abs=0.03)


def pick_a(k: int, exponent: float) -> float:
    """P(resampling picks "a") over K uniform candidates: E_n[n e^x / (n e^x + K - n)],
    n ~ Binomial(K, 1/2) of them being "a"."""
    return sum(math.comb(k, n) / 2**k * n * math.exp(exponent)
               / (n * math.exp(exponent) + k - n) for n in range(1, k + 1))


@pytest.mark.parametrize("kind", ["powerlaw", "pg"])
def test_tilted_pair_frequencies_are_hand_derived(kind):
    # slope = beta_data / tau = 1. Whatever the tilted sampler draws, P(a chosen over b) =
    # 1/2 sigmoid(1): P(w=a, l=b) sigmoid(1) + P(w=b, l=a)(1 - sigmoid(-1)), with the untilted
    # side uniform. The tilt shows in P(both a) = 1/2 P(resampling picks a): up for pg (pi_w
    # tilted up), down for powerlaw (pi_l tilted down).
    cls = PowerLaw if kind == "powerlaw" else PolicyGradientPairs
    extra = {} if kind == "powerlaw" else {"chosen": "tilted"}
    regime = cls(kind=kind, name="r", tau=0.5, beta_data=0.5, candidates=4, **extra)
    rows = build_pairs(regime, SOURCES, per_prompt=8000, seed=1).rows
    share = sum(r["chosen"] == "a" and r["rejected"] == "b" for r in rows) / len(rows)
    assert share == pytest.approx(0.5 / (1 + math.exp(-1.0)), abs=0.015)
    both_a = sum(r["chosen"] == r["rejected"] == "a" for r in rows) / len(rows)
    expected = 0.5 * pick_a(4, 1.0 if kind == "pg" else -1.0)  # 0.352 / 0.148
    assert both_a == pytest.approx(expected, abs=0.015)
    assert all(r["margin"] == pytest.approx(r["chosen_score"] - r["rejected_score"])
               for r in rows)


def test_requested_entropy_solves_tau_hand_derived():
    # H(softmax([1/tau, 0])) = 0.5623351446 at q = [3/4, 1/4], i.e. tau = 1 / log 3.
    regime = PowerLaw(kind="powerlaw", name="pl", did_entropy=0.5623351446188083)
    built = build_pairs(regime, SOURCES, per_prompt=10, seed=0)
    assert built.tau == pytest.approx(1 / math.log(3), rel=1e-9)
    assert built.entropy == pytest.approx(0.5623351446188083, abs=1e-12)
    half = PowerLaw(kind="powerlaw", name="pl", did_entropy_fraction=0.5)
    assert build_pairs(half, SOURCES, 10, seed=0).entropy == pytest.approx(math.log(2) / 2)


def test_unreachable_entropy_names_the_regime_and_the_range():
    regime = PowerLaw(kind="powerlaw", name="too-flat", did_entropy=0.7)  # log 2 = 0.693
    with pytest.raises(BadInput, match=r"regime 'too-flat'.*0\.700 nats.*0\.000.*0\.693"):
        build_pairs(regime, SOURCES, 10, seed=0)
    hf_like = Sources(**{**SOURCES.__dict__, "log_n": None})
    with pytest.raises(BadInput, match="did_entropy_fraction needs log N"):
        build_pairs(PowerLaw(kind="powerlaw", name="x", did_entropy_fraction=0.5), hf_like, 10, 0)


def test_given_pg_takes_the_given_chosen_and_rejects_pi_ref_draws():
    built = build_pairs(PolicyGradientPairs(kind="pg", name="pg"), SOURCES, per_prompt=50,
                        seed=0)
    assert {r["chosen"] for r in built.rows} == {"a"}
    assert {r["rejected"] for r in built.rows} == {"b"}  # draws equal to the chosen skipped
    assert (built.tau, built.entropy) == (None, None)
    assert built.stats()["data_chosen_higher"] == 1.0


def test_offpolicy_keeps_the_given_pairs_and_encodes_the_top_limit():
    built = build_pairs(OffPolicy(kind="offpolicy", name="op"), SOURCES, per_prompt=3, seed=0)
    assert [(r["chosen"], r["rejected"], r["chosen_score"]) for r in built.rows] == \
        [("b", "a", 0.0)] * 3
    stats = built.stats()
    assert (stats["data_did_entropy"], stats["data_chosen_higher"]) == (0.0, 0.0)
    assert stats["data_margin_abs"] is None and stats["data_ess"] is None


def test_weak_labels_and_low_ess_are_warned():
    flat = build_pairs(PowerLaw(kind="powerlaw", name="pl", tau=10.0, beta_data=0.1),
                       SOURCES, 200, seed=0).stats()
    assert flat["data_margin_abs"] < 0.2  # |margin| is 0.01 or 0 here
    assert [w.split(":")[0] for w in warnings(flat, 32)] == ["labels are near coin flips"]
    sharp = {**flat, "data_ess": 1.3, "data_margin_abs": 3.0}
    assert warnings(sharp, 32)[0].startswith("importance resampling's mean effective sample "
                                             "size is 1.30 of 32")


def test_build_is_deterministic_in_seed():
    regime = PowerLaw(kind="powerlaw", name="pl", tau=1.0)
    assert build_pairs(regime, SOURCES, 20, seed=3) == build_pairs(regime, SOURCES, 20, seed=3)
    assert build_pairs(regime, SOURCES, 20, seed=3) != build_pairs(regime, SOURCES, 20, seed=4)
