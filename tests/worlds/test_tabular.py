"""The tabular world reproduces the paper's theory exactly (docs/design.md §1.10)."""

import math

import pytest
import torch

from didray.core.did import optimal_rejected_logprobs, total_variation
from didray.theory.checks import trajectory
from didray.worlds.tabular import (
    Pairs,
    TabularInstance,
    fit_policy,
    gradient_descent,
    has_finite_optimum,
    loss_and_grad,
    population_pairs,
    random_instance,
    retilt,
    sample_pairs,
)


def log(*probs: float) -> torch.Tensor:
    return torch.log(torch.tensor(probs, dtype=torch.float64))


def two_outcomes() -> TabularInstance:
    """pi_ref = [1/2, 1/2], pi_star = [4/5, 1/5] (score [log 4, 0] at tau 1), lengths 1."""
    ones = torch.ones(2, dtype=torch.float64)
    return TabularInstance(log(0.5, 0.5), log(0.8, 0.2), ones, log(4.0, 1.0), 1.0)


def test_population_pairs_hand_derived():
    # pi_w = pi_l = [1/2, 1/2]: R = 0, so each ordered pair (i, j) is drawn as (i, j) and kept
    # (1/4 * 1/2) or drawn as (j, i) and swapped (1/4 * 1/2): weight 1/4 for each of the 4 rows.
    half = log(0.5, 0.5)
    pairs = population_pairs(half, half)
    assert pairs.chosen.tolist() == [0, 0, 1, 1]
    assert pairs.rejected.tolist() == [0, 1, 0, 1]
    assert torch.allclose(pairs.weight, torch.full((4,), 0.25, dtype=torch.float64))


def test_population_pairs_bradley_terry_label():
    # pi_w = [0.8, 0.2], pi_l = [0.2, 0.8]: R = log(w/l) = [log 4, -log 4].
    pairs = population_pairs(log(0.8, 0.2), log(0.2, 0.8))
    # "0 preferred to 1" comes from draw (w=0, l=1) kept: 0.8*0.8*sigmoid(2 log 4),
    # and from draw (w=1, l=0) swapped: 0.2*0.2*(1 - sigmoid(-2 log 4)).
    keep = 1 / (1 + math.exp(-2 * math.log(4)))  # = 16/17
    expected = 0.64 * keep + 0.04 * keep  # = 0.68 * 16/17 = 0.64
    mask = (pairs.chosen == 0) & (pairs.rejected == 1)
    assert float(pairs.weight[mask].sum()) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.8 * 0.8, rel=1e-12)  # = pi_w(0) pi_l(1): §1.10


def test_labelled_pairs_are_distributed_as_the_draws():
    """§1.10: P(chosen=i, rejected=j) = pi_w(i) pi_l(j) for any pi_w, pi_l."""
    generator = torch.Generator().manual_seed(5)
    logp_w, logp_l = (torch.log_softmax(torch.randn(7, generator=generator, dtype=torch.float64),
                                        dim=-1) for _ in range(2))
    pairs = population_pairs(logp_w, logp_l)
    expected = (logp_w[pairs.chosen] + logp_l[pairs.rejected]).exp()  # (49,)
    assert torch.allclose(pairs.weight, expected, rtol=1e-12, atol=0)


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


def test_retilt_changes_only_pi_star():
    inst = random_instance(6, tau=0.5, generator=torch.Generator().manual_seed(6))
    sharp = retilt(inst, 0.1)
    assert torch.equal(sharp.logp_ref, inst.logp_ref) and torch.equal(sharp.score, inst.score)
    expected = torch.log_softmax(inst.logp_ref + inst.score / 0.1, dim=-1)
    assert torch.allclose(sharp.logp_star, expected, rtol=0, atol=1e-15)
    assert sharp.tau == 0.1


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


@pytest.mark.parametrize(
    ("chosen", "rejected", "n", "finite"),
    [
        ([0, 1, 2], [1, 2, 0], 3, True),  # a cycle: everyone reaches everyone
        ([0, 1], [1, 2], 3, False),  # 0 is never preferred-to by anyone: pushed up forever
        ([0, 1], [1, 0], 3, False),  # outcome 2 is in no pair
    ],
)
def test_has_finite_optimum_is_fords_condition(chosen, rejected, n, finite):
    pairs = Pairs(torch.tensor(chosen), torch.tensor(rejected),
                  torch.full((len(chosen),), 1 / len(chosen), dtype=torch.float64))
    assert has_finite_optimum(pairs, n) is finite


def test_gradient_at_pi_ref_is_half_beta_times_marginal_difference():
    """§1.10: at pi_ref every margin is 0 and the labelled marginals are pi_w and pi_l, so the
    loss gradient over the logits is -(beta/2)(pi_w - pi_l)."""
    inst = random_instance(9, tau=0.3, generator=torch.Generator().manual_seed(7))
    logp_l = optimal_rejected_logprobs(inst.logp_ref, inst.logp_star, 0.7)
    pairs = population_pairs(inst.logp_star, logp_l)  # any pi_w will do
    path = gradient_descent(inst, pairs, beta=0.7, steps=1, lr=1.0)
    step = path[1] - path[0]  # log-probs: the logit step up to a constant
    expected = 0.35 * (inst.logp_star.exp() - logp_l.exp())
    assert torch.allclose(step - step.mean(), expected - expected.mean(), rtol=0, atol=1e-15)


def test_first_gradient_step_two_outcomes_hand_derived():
    """pi_ref = [1/2, 1/2], pi_star = [4/5, 1/5], beta = 1, lr = 1.

    pi_w = pi_ref: pi_l = [1/5, 4/5] (§1.4); pi_l = pi_ref: pi_w = pi_star (beta = 1). Either way
    pi_w - pi_l = [0.3, -0.3], so one step moves the logits by [0.15, -0.15]:
    pi_1 = [sigmoid(0.3), sigmoid(-0.3)], log pi_1 - log pi_ref = [a, a - 0.3] with
    a = log(2 sigmoid(0.3)) (log sigmoid(x) - log sigmoid(-x) = x).
    """
    inst = two_outcomes()
    a = math.log(2 / (1 + math.exp(-0.3)))
    for logp_w, logp_l in ((inst.logp_ref, log(0.2, 0.8)), (inst.logp_star, inst.logp_ref)):
        path = gradient_descent(inst, population_pairs(logp_w, logp_l), beta=1.0, steps=1, lr=1.0)
        assert (path[1] - path[0]).tolist() == pytest.approx([a, a - 0.3], abs=1e-15)


def test_gradient_descent_starts_at_pi_ref_and_lowers_the_loss():
    inst = random_instance(6, tau=0.5, generator=torch.Generator().manual_seed(8))
    pairs = population_pairs(inst.logp_ref,
                             optimal_rejected_logprobs(inst.logp_ref, inst.logp_star, 0.5))
    path = gradient_descent(inst, pairs, beta=0.5, steps=20, lr=4.0)
    assert path.shape == (21, 6) and torch.equal(path[0], inst.logp_ref)
    losses = [loss_and_grad(inst, pairs, 0.5, "dpo", logp)[0] for logp in path]
    # lr = 1/beta^2 keeps lr * (largest curvature) <= 1 < 2 (§1.10): the loss falls every step.
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False))
    assert losses[0] == pytest.approx(math.log(2), abs=1e-15)  # every margin is 0 at pi_ref


@pytest.mark.parametrize(
    ("case", "chosen", "rejected"),
    [  # the shifts of the previous test's step under [1/2, 1/2], [1/5, 4/5] and [4/5, 1/5]
        ("pi_w = pi_ref", -0.011208063908581756, -0.10120806390858177),  # 0.5a+0.5b, 0.2a+0.8b
        ("pi_l = pi_ref", 0.07879193609141827, -0.011208063908581756),  # 0.8a+0.2b, 0.5a+0.5b
    ],
)
def test_trajectory_first_step_shifts_hand_derived(case, chosen, rejected):
    """Thm 4.1's two cases on the two-outcome instance (beta = 1, so lr = 1/beta^2 = 1): the
    side drawn from pi_ref falls by KL(pi_ref || pi_1), the rejected of pi_w = pi_ref fall
    further, the chosen of pi_l = pi_ref rise. Entropies: pi_1 = [p, 1-p], p = sigmoid(0.3),
    has H = log 2 - a + 0.3 (1 - p); the DID of pi_1 from the uniform pi_ref is pi_1 itself."""
    _, frame = trajectory(two_outcomes(), beta=1.0, case=case, steps=1)
    a, p = math.log(2 / (1 + math.exp(-0.3))), 1 / (1 + math.exp(-0.3))
    entropy_1 = math.log(2) - a + 0.3 * (1 - p)
    assert frame["chosen_shift"].to_list() == pytest.approx([0.0, chosen], abs=1e-15)
    assert frame["rejected_shift"].to_list() == pytest.approx([0.0, rejected], abs=1e-15)
    assert frame["policy_entropy"].to_list() == pytest.approx([math.log(2), entropy_1], abs=1e-15)
    assert frame["did_entropy"].to_list() == pytest.approx([math.log(2), entropy_1], abs=1e-15)
