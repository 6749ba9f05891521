"""The tabular world reproduces the paper's theory exactly (docs/design.md §1.10)."""

import math

import pytest
import torch

from didray.core.did import optimal_rejected_logprobs, total_variation
from didray.worlds.tabular import (
    fit_policy,
    population_pairs,
    random_instance,
    sample_pairs,
)
from didray.worlds.theory import theory_report


def test_population_pairs_hand_derived():
    # pi_ref = pi_l = [1/2, 1/2]: R = 0, so every draw (prob 1/4) keeps its order with prob 1/2.
    half = torch.log(torch.tensor([0.5, 0.5], dtype=torch.float64))
    pairs = population_pairs(half, half)
    assert pairs.weight.sum() == pytest.approx(1.0)
    assert torch.allclose(pairs.weight, torch.full((8,), 0.125, dtype=torch.float64))


def test_population_pairs_bradley_terry_label():
    # pi_ref = [0.8, 0.2], pi_l = [0.2, 0.8]: R = log(ref/l) = [log 4, -log 4].
    ref = torch.log(torch.tensor([0.8, 0.2], dtype=torch.float64))
    rej = torch.log(torch.tensor([0.2, 0.8], dtype=torch.float64))
    pairs = population_pairs(ref, rej)
    # "0 preferred to 1" comes from draw (w=0, l=1) kept: 0.8*0.8*sigmoid(2 log 4),
    # and from draw (w=1, l=0) flipped: 0.2*0.2*(1 - sigmoid(-2 log 4)).
    keep = 1 / (1 + math.exp(-2 * math.log(4)))  # = 16/17
    expected = 0.64 * keep + 0.04 * keep
    mask = (pairs.chosen == 0) & (pairs.rejected == 1)
    assert float(pairs.weight[mask].sum()) == pytest.approx(expected, rel=1e-12)


def test_population_dpo_reaches_pi_star():
    """docs/design.md §1.10: 50 outcomes, beta = 0.5, optimal rejected pi_l -> TV < 1e-6."""
    inst = random_instance(50, tau=0.5, generator=torch.Generator().manual_seed(1))
    rej = optimal_rejected_logprobs(inst.logp_ref, inst.logp_star, 0.5)
    learned = fit_policy(inst, population_pairs(inst.logp_ref, rej), beta=0.5)
    assert float(total_variation(learned, inst.logp_star)) < 1e-6


def test_pi_ref_as_rejected_leaves_policy_at_pi_ref():
    # pi_l = pi_ref makes R constant: every label is a coin flip, so DPO's optimum is pi_ref.
    inst = random_instance(10, tau=0.5, generator=torch.Generator().manual_seed(2))
    learned = fit_policy(inst, population_pairs(inst.logp_ref, inst.logp_ref), beta=0.5)
    assert float(total_variation(learned, inst.logp_ref)) < 1e-8


def test_sampled_pairs_are_aggregated_and_weighted():
    inst = random_instance(5, tau=0.5, generator=torch.Generator().manual_seed(3))
    pairs = sample_pairs(inst.logp_ref, inst.logp_ref, 10_000, torch.Generator().manual_seed(4))
    assert len(pairs.chosen) <= 25
    assert float(pairs.weight.sum()) == pytest.approx(1.0)
    pop = population_pairs(inst.logp_ref, inst.logp_ref)
    # Frequency of each ordered pair matches its population weight to sampling error.
    for c, r, w in zip(pairs.chosen, pairs.rejected, pairs.weight, strict=True):
        exact = pop.weight[(pop.chosen == c) & (pop.rejected == r)].sum()
        assert abs(float(w - exact)) < 0.02


def test_theory_report_every_claim_holds():
    report = theory_report(outcomes=12, beta=0.5, seed=0, instances=2)
    assert report["holds"].all(), report.filter(~report["holds"])
    tv = report.filter(report["metric"] == "TV")
    best = tv.filter(tv["condition"] == "reward=dpo, rejected=optimal")["value"][0]
    # The DPO log-ratio reward with the optimal rejected distribution beats every alternative.
    assert best < 1e-6
    assert (tv.filter(tv["condition"] != "reward=dpo, rejected=optimal")["value"] > best).all()


@pytest.mark.parametrize("bad", [(0, 0.5), (50, 0.0)])
def test_theory_report_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        theory_report(outcomes=bad[0], beta=bad[1])
