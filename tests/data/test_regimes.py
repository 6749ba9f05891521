"""Regimes on a two-response world whose probabilities can be worked out by hand."""

import math

import pytest
import torch

from didray.config.schema import OffPolicy, PolicyGradientPairs, PowerLaw
from didray.data.regimes import Sources, build_pairs, resample_rejected

SCORES = {"a": 1.0, "b": 0.0}


def uniform(prompts: list[str], n: int, seed: int) -> list[list[str]]:
    g = torch.Generator().manual_seed(seed)
    return [[("a", "b")[i] for i in torch.randint(2, (n,), generator=g).tolist()]
            for _ in prompts]


def given(per_prompt: int, seed: int) -> list[tuple[int, str, str]]:
    return [(0, "b", "a")] * per_prompt  # as given, even against the score


SOURCES = Sources(prompts=["p"], families=["open"],
                  score=lambda ps, rs: [SCORES[r] for r in rs],
                  sample_ref=uniform, given_pairs=given, best_response=lambda i: "a")


def test_resample_weights_hand_derived():
    # weights ∝ exp(-log 3 * score): [1, 1/3] -> [3/4, 1/4]; ESS = 1 / (9/16 + 1/16) = 1.6
    g = torch.Generator().manual_seed(0)
    picks = [resample_rejected([0.0, 1.0], -math.log(3), g) for _ in range(4000)]
    assert picks[0][1] == pytest.approx(1.6)
    share = sum(k == 0 for k, _ in picks) / len(picks)
    assert share == pytest.approx(0.75, abs=0.03)


def test_powerlaw_pair_frequency_matches_bradley_terry():
    # chosen ~ uniform; whatever pi_l is, P(a preferred to b) = 1/2 * sigmoid(beta_data / tau)
    # (derivation: P(w=a, l=b) sigmoid(s) + P(w=b, l=a)(1 - sigmoid(-s)) with P(l=a)+P(l=b)=1).
    regime = PowerLaw(kind="powerlaw", name="pl", tau=0.5, beta_data=0.5, candidates=8)
    rows = build_pairs(regime, SOURCES, per_prompt=6000, seed=1)
    share = sum(r["chosen"] == "a" and r["rejected"] == "b" for r in rows) / len(rows)
    assert share == pytest.approx(0.5 / (1 + math.exp(-1.0)), abs=0.02)
    assert all(1.0 <= r["ess"] <= 8.0 for r in rows)


def test_pg_chosen_is_best_and_rejected_differs():
    rows = build_pairs(PolicyGradientPairs(kind="pg", name="pg"), SOURCES, per_prompt=50, seed=0)
    assert {r["chosen"] for r in rows} == {"a"}
    assert {r["rejected"] for r in rows} == {"b"}
    assert rows[0]["chosen_score"] == 1.0 and rows[0]["rejected_score"] == 0.0


def test_offpolicy_keeps_the_given_pairs():
    rows = build_pairs(OffPolicy(kind="offpolicy", name="op"), SOURCES, per_prompt=3, seed=0)
    assert [(r["chosen"], r["rejected"], r["chosen_score"]) for r in rows] == [("b", "a", 0.0)] * 3


def test_build_is_deterministic_in_seed():
    regime = PowerLaw(kind="powerlaw", name="pl", tau=1.0)
    assert build_pairs(regime, SOURCES, 20, seed=3) == build_pairs(regime, SOURCES, 20, seed=3)
    assert build_pairs(regime, SOURCES, 20, seed=3) != build_pairs(regime, SOURCES, 20, seed=4)
