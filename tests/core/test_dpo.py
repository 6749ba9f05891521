"""Tests for didray.core.dpo: hand-derived losses per type, metrics, gradients, validation; the
losses of the trained objective through `PreferenceLoss`, the settings object the loop takes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from didray.core.did import dpo_optimum_logprobs, optimal_rejected_logprobs, tilted_logprobs
from didray.core.dpo import LOSS_TYPES, PreferenceLoss, dpo_loss, pair_law, population_loss
from didray.worlds.tabular import minimize


def _t(*xs: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64, requires_grad=grad)  # (B,)


def test_loss_types() -> None:
    assert LOSS_TYPES == ("sigmoid", "ipo", "simpo")


@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_sigmoid_zero_margin_is_log2(label_smoothing: float) -> None:
    # At h = 0 both labels are equally likely: log 2 whatever the smoothing.
    loss = PreferenceLoss(beta=0.1, label_smoothing=label_smoothing)
    losses, _ = loss(_t(-3.0), _t(-5.0), _t(-3.0), _t(-5.0))  # (1,)
    assert losses.item() == pytest.approx(math.log(2.0), abs=1e-15)


def test_sigmoid_hand_value_and_metrics() -> None:
    # h = (0 - 0) - (-1 - 0) = 1, beta = log 3 -> -logsigmoid(log 3) = log(4/3).
    beta = math.log(3.0)
    losses, m = PreferenceLoss(beta)(_t(0.0), _t(-1.0), _t(0.0), _t(0.0))  # (1,)
    assert losses.item() == pytest.approx(0.28768207245178085, abs=1e-15)
    assert m["rewards/chosen"].item() == 0.0
    assert m["rewards/rejected"].item() == pytest.approx(-beta)
    assert m["rewards/margins"].item() == pytest.approx(beta)
    assert m["rewards/accuracies"].item() == 1.0
    assert m["logps/chosen"].item() == 0.0 and m["logps/rejected"].item() == -1.0


def test_sigmoid_label_smoothing_hand_value() -> None:
    # 0.75 log(4/3) + 0.25 log 4 = H(3/4, 1/4).
    loss = PreferenceLoss(beta=math.log(3.0), label_smoothing=0.25)
    losses, _ = loss(_t(0.0), _t(-1.0), _t(0.0), _t(0.0))  # (1,)
    assert losses.item() == pytest.approx(0.5623351446188083, abs=1e-15)


def test_reference_free_ignores_reference() -> None:
    losses, m = dpo_loss(
        _t(0.0), _t(-math.log(3.0)), _t(100.0), _t(-100.0), beta=1.0, reference_free=True
    )  # (1,)
    assert losses.item() == pytest.approx(0.28768207245178085, abs=1e-15)
    assert m["rewards/rejected"].item() == pytest.approx(-math.log(3.0))
    none_ref, _ = dpo_loss(_t(0.0), _t(-math.log(3.0)), None, None, 1.0, reference_free=True)
    assert none_ref.item() == losses.item()


def test_ipo_hand_value() -> None:
    # h = 1, 1/(2 beta) = 2 -> (1 - 2)^2 = 1.
    losses, _ = PreferenceLoss(0.25, "ipo")(_t(0.0), _t(-1.0), _t(0.0), _t(0.0))  # (1,)
    assert losses.item() == 1.0
    # h = 2 sits at IPO's target 1/(2 beta): no loss at all.
    at_target, _ = PreferenceLoss(0.25, "ipo")(_t(0.0), _t(-2.0), _t(0.0), _t(0.0))
    assert at_target.item() == 0.0


def test_simpo_hand_value_and_metrics() -> None:
    # rewards 2*(-2)/2 = -2 and 2*(-6)/3 = -4; margin 2 - gamma 1 = 1 -> log(1 + e^-1).
    loss = PreferenceLoss(beta=2.0, loss_type="simpo", simpo_gamma=1.0)
    losses, m = loss(_t(-2.0), _t(-6.0), None, None, torch.tensor([2]), torch.tensor([3]))  # (1,)
    assert losses.item() == pytest.approx(0.31326168751822286, abs=1e-15)
    assert m["rewards/chosen"].item() == -2.0 and m["rewards/rejected"].item() == -4.0
    assert m["rewards/accuracies"].item() == 1.0


def test_batch_accuracy_is_a_fraction() -> None:
    _, m = dpo_loss(_t(0.0, -2.0), _t(-1.0, 0.0), _t(0.0, 0.0), _t(0.0, 0.0), beta=1.0)
    assert m["rewards/accuracies"].item() == 0.5


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_metrics_detached_losses_have_grad(loss_type: str) -> None:
    pc, pr = _t(-1.0, -2.0, grad=True), _t(-3.0, -1.0, grad=True)  # (2,), (2,)
    lengths = torch.tensor([2, 3])  # (2,)
    losses, m = dpo_loss(
        pc,
        pr,
        _t(-1.5, -1.5),
        _t(-2.0, -2.0),
        beta=0.5,
        loss_type=loss_type,
        chosen_lengths=lengths,
        rejected_lengths=lengths,
    )  # (2,)
    assert losses.shape == (2,) and losses.requires_grad
    assert set(m) == {
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
    }
    assert all(not v.requires_grad and v.dim() == 0 for v in m.values())


@settings(max_examples=40, deadline=None)
@given(
    logps=st.lists(st.floats(-50, 0), min_size=4, max_size=4),
    beta=st.floats(0.01, 5.0),
)
def test_sigmoid_gradient_sign(logps: list[float], beta: float) -> None:
    # Raising the chosen log-prob (or lowering the rejected one) always lowers the loss. (Not
    # with label smoothing: conservative DPO has its optimum at a finite margin.)
    pc, pr = _t(logps[0], grad=True), _t(logps[1], grad=True)  # (1,), (1,)
    losses, _ = dpo_loss(pc, pr, _t(logps[2]), _t(logps[3]), beta=beta)
    losses.sum().backward()
    assert pc.grad is not None and pr.grad is not None
    assert pc.grad.item() < 0 < pr.grad.item()


@settings(max_examples=40, deadline=None)
@given(h=st.floats(-20, 20), beta=st.floats(0.01, 5.0))
def test_sigmoid_matches_closed_form(h: float, beta: float) -> None:
    losses, _ = dpo_loss(_t(h), _t(0.0), _t(0.0), _t(0.0), beta=beta)  # (1,)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-beta * h)), rel=1e-12)


def test_loss_settings_are_checked_when_built() -> None:
    with pytest.raises(ValueError, match="'dpo'"):
        PreferenceLoss(0.1, "dpo")
    with pytest.raises(ValueError, match="beta must be > 0, got 0"):
        PreferenceLoss(0.0)
    with pytest.raises(ValueError, match="not defined for loss_type 'ipo'"):
        PreferenceLoss(0.1, "ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        PreferenceLoss(0.1, label_smoothing=0.7)
    with pytest.raises(ValueError, match="requires chosen_lengths"):
        PreferenceLoss(0.1, "simpo")(_t(0.0), _t(0.0), None, None)


def test_invalid_arguments_raise() -> None:
    a = _t(0.0)
    with pytest.raises(ValueError, match="'dpo'"):
        dpo_loss(a, a, a, a, beta=0.1, loss_type="dpo")
    with pytest.raises(ValueError, match="0.0"):
        dpo_loss(a, a, a, a, beta=0.0)
    with pytest.raises(ValueError, match="-1"):
        dpo_loss(a, a, a, a, beta=-1.0)
    with pytest.raises(ValueError, match="chosen_lengths"):
        dpo_loss(a, a, a, a, beta=0.1, loss_type="simpo", rejected_lengths=torch.tensor([1]))
    with pytest.raises(ValueError, match="rejected_lengths"):
        dpo_loss(a, a, a, a, beta=0.1, loss_type="simpo", chosen_lengths=torch.tensor([1]))
    with pytest.raises(ValueError, match="ref_chosen_logps"):
        dpo_loss(a, a, None, None, beta=0.1)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(a, a, a, a, beta=0.1, label_smoothing=0.7)


def _log(*ps: float) -> torch.Tensor:
    return torch.tensor(ps, dtype=torch.float64).log()  # (N,)


def test_pair_law_hand_values() -> None:
    # pi_w = [0.8, 0.2], pi_l = [0.2, 0.8]: R = [log 4, -log 4]. "0 over 1": draw (0, 1) kept,
    # 0.64 * 16/17, plus draw (1, 0) swapped, 0.04 * 16/17: 0.64. A tie is either draw, 0.16.
    law = pair_law(_log(0.8, 0.2), _log(0.2, 0.8))  # (2, 2)
    torch.testing.assert_close(law, torch.tensor([[0.16, 0.64], [0.04, 0.16]],
                                                 dtype=torch.float64), rtol=1e-12, atol=0)


def test_population_loss_and_its_minimiser_by_hand() -> None:
    """Two responses, pi_ref = [1/2, 1/2], the law above: the pair {0, 1} reads "0 over 1"
    with probability 0.64 / 0.68 = 16/17 = sigma(log 16), so at beta 2 the loss is least at
    2 (g_0 - g_1) = log 16, pi = [4/5, 1/5] (docs/design.md §1.11), where it is
    0.32 log 2 + 0.64 log(17/16) + 0.04 log 17 (the ties' h is 0)."""
    ref, law, loss = _log(0.5, 0.5), pair_law(_log(0.8, 0.2), _log(0.2, 0.8)), PreferenceLoss(2.0)

    def at(theta: torch.Tensor) -> torch.Tensor:
        return population_loss(torch.log_softmax(theta, -1), ref, law, loss)

    best = _log(0.8, 0.2).requires_grad_()
    value = at(best)
    expected = 0.32 * math.log(2) + 0.64 * math.log(17 / 16) + 0.04 * math.log(17)
    assert value.item() == pytest.approx(expected, rel=1e-12)
    (grad,) = torch.autograd.grad(value, best)
    assert grad.abs().max().item() < 1e-12  # stationary: the convex loss's minimum
    assert at(ref).item() == pytest.approx(math.log(2), rel=1e-12)  # every margin 0
    assert at(ref).item() > value.item()


def test_population_loss_minimiser_is_the_tilt_optimum() -> None:
    """Three responses, powerlaw's law (pi_w = pi_ref, §1.4's pi_l): Newton on the population
    loss at beta_t lands on §1.9's closed form pi_ref (pi_star / pi_ref)^(beta_data / beta_t)."""
    ref, scores = _log(0.5, 0.3, 0.2), torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64)
    star = tilted_logprobs(ref, scores, 0.5)
    law = pair_law(ref, optimal_rejected_logprobs(ref, star, 0.7))
    loss = PreferenceLoss(1.4)
    fit = minimize(lambda t: population_loss(torch.log_softmax(t, -1), ref, law, loss), ref)
    optimum = dpo_optimum_logprobs(ref, star, 0.7, 1.4)
    torch.testing.assert_close(torch.log_softmax(fit, -1), optimum, rtol=0, atol=1e-9)
