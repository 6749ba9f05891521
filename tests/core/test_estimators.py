"""Tests for didray.core.estimators, graded against the exact DID entropy of an enumerable world."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from didray.core.did import did_entropy
from didray.core.estimators import (
    EntropyEstimate,
    bootstrap_spread,
    first_occurrence_mask,
    plugin_entropy,
    snis_delta_interval,
    snis_entropy,
    snis_ess,
)

N = 20  # enumerable response space


def _world(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Random pi_theta, pi_ref over N outcomes and the exact DID entropy."""
    g = torch.Generator().manual_seed(seed)
    logp_theta = torch.log_softmax(torch.randn(N, generator=g, dtype=torch.float64), -1)  # (N,)
    logp_ref = torch.log_softmax(torch.randn(N, generator=g, dtype=torch.float64), -1)  # (N,)
    return logp_theta, logp_ref, did_entropy(logp_theta, logp_ref).item()


def _draw(
    logp_theta: torch.Tensor, logp_ref: torch.Tensor, proposal: str, reps: int, k: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample ids (reps, K) from the proposal; return ids, log-ratios and log s(y_k)."""
    log_s = logp_theta if proposal == "policy" else torch.full((N,), -math.log(N))  # (N,)
    g = torch.Generator().manual_seed(seed)
    probs = log_s.exp().expand(reps, N)  # (reps, N)
    ids = torch.multinomial(probs, k, replacement=True, generator=g)  # (reps, K)
    return ids, (logp_theta - logp_ref)[ids], log_s.double()[ids]  # (reps, K) each


# --- hand-derived values ---


def test_first_occurrence_mask_hand_value() -> None:
    ids = torch.tensor([[3, 1, 3, 2, 1], [0, 0, 0, 0, 0]])  # (2, 5)
    want = [[True, True, False, True, False], [True, False, False, False, False]]
    assert first_occurrence_mask(ids).tolist() == want
    assert first_occurrence_mask(ids.T, dim=0).T.tolist() == want


def test_plugin_hand_values() -> None:
    est = plugin_entropy(torch.tensor([0.7, 0.7], dtype=torch.float64), proposal="policy")
    assert est.value.item() == pytest.approx(0.6931471805599453, abs=1e-15)
    assert (est.estimator, est.k, est.proposal) == ("plugin", 2, "policy")
    # Dedup: the repeated sample is dropped, leaving two equal weights -> log 2 again.
    lr = torch.tensor([0.0, 5.0, 0.0], dtype=torch.float64)  # (3,)
    mask = first_occurrence_mask(torch.tensor([1, 2, 1]))  # (3,)
    masked = plugin_entropy(torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64), "ref", mask)
    assert masked.value.item() == pytest.approx(math.log(2.0), abs=1e-15)
    assert plugin_entropy(lr, "ref", torch.tensor([False, True, False])).value.item() == 0.0


def test_snis_hand_value() -> None:
    lr = torch.zeros(2, dtype=torch.float64)  # (2,)
    est = snis_entropy(lr, torch.full((2,), -math.log(2.0), dtype=torch.float64), "uniform")
    assert est.value.item() == pytest.approx(0.6931471805599453, abs=1e-15)
    assert isinstance(est, EntropyEstimate) and (est.estimator, est.k) == ("snis", 2)
    assert est.ess.item() == pytest.approx(2.0, abs=1e-15)  # equal weights: all K count


def test_snis_ess_hand_values() -> None:
    # log w = l - log s. Row 0: [0, log 3] -> u = [1/4, 3/4], ESS = 1 / (1/16 + 9/16) = 1.6.
    # Row 1: l = [5, 5 + log 3] over the same s: the offset cancels in u, so ESS is 1.6 again.
    # Row 2: a weight e^40 times the rest -> u ~ [1, 0] -> ESS ~ 1 (one sample holds it all).
    lr = torch.tensor([[0.0, math.log(3.0)], [5.0, 5.0 + math.log(3.0)], [40.0, 0.0]],
                      dtype=torch.float64)  # (3, 2)
    log_s = torch.full((3, 2), -math.log(2.0), dtype=torch.float64)  # (3, 2)
    assert snis_ess(lr, log_s).tolist() == pytest.approx([1.6, 1.6, 1.0], abs=1e-12)
    assert torch.equal(snis_entropy(lr, log_s, "ref").ess, snis_ess(lr, log_s))
    assert plugin_entropy(lr, "policy").ess is None  # the plug-in has no importance weights


def test_estimate_is_frozen() -> None:
    est = plugin_entropy(torch.zeros(3), "policy")
    with pytest.raises(AttributeError):
        est.k = 4  # type: ignore[misc]


def test_bootstrap_constant_samples() -> None:
    low, high = bootstrap_spread(torch.zeros(2, 8, dtype=torch.float64), "plugin", n_boot=20)
    torch.testing.assert_close(low, torch.full((2,), math.log(8.0), dtype=torch.float64))
    torch.testing.assert_close(high, low)


def test_bootstrap_invalid_arguments() -> None:
    lr = torch.zeros(4)
    with pytest.raises(ValueError, match="'mean'"):
        bootstrap_spread(lr, "mean")
    with pytest.raises(ValueError, match="proposal_logprobs"):
        bootstrap_spread(lr, "snis")


# --- properties ---


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-30, 30), min_size=1, max_size=40), st.integers(1, 5))
def test_plugin_bounded_by_log_distinct(xs: list[float], n_ids: int) -> None:
    lr = torch.tensor(xs, dtype=torch.float64)  # (K,)
    ids = torch.arange(len(xs)) % n_ids  # (K,)
    mask = first_occurrence_mask(ids)  # (K,)
    assert 0 <= plugin_entropy(lr, "policy").value.item() <= math.log(len(xs)) + 1e-12
    h = plugin_entropy(lr, "policy", mask).value.item()
    assert 0 <= h <= math.log(mask.sum().item()) + 1e-12


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_plugin_exact_when_samples_cover_space(seed: int) -> None:
    logp_theta, logp_ref, exact = _world(seed)
    ids = torch.cat([torch.arange(N), torch.arange(N)[torch.randperm(N)[:7]]])  # (N+7,)
    mask = first_occurrence_mask(ids)  # (N+7,)
    h = plugin_entropy((logp_theta - logp_ref)[ids], "policy", mask).value.item()
    assert h == pytest.approx(exact, abs=1e-12)


# --- convergence against the exact value ---


def _mae(estimator: str, proposal: str, k: int, reps: int = 200, seed: int = 1) -> float:
    logp_theta, logp_ref, exact = _world(0)
    ids, lr, log_s = _draw(logp_theta, logp_ref, proposal, reps, k, seed)
    if estimator == "snis":
        value = snis_entropy(lr, log_s, proposal).value  # (reps,)
    elif estimator == "plugin-dedup":
        value = plugin_entropy(lr, proposal, first_occurrence_mask(ids)).value  # (reps,)
    else:
        value = plugin_entropy(lr, proposal).value  # (reps,)
    return (value - exact).abs().mean().item()


@pytest.mark.parametrize("estimator", ["plugin-dedup", "snis"])
@pytest.mark.parametrize("proposal", ["policy", "uniform"])
def test_consistent_estimators_converge(estimator: str, proposal: str) -> None:
    small, large = _mae(estimator, proposal, 8), _mae(estimator, proposal, 1024)
    assert large < 0.05
    assert large < small / 4


def test_plugin_without_dedup_is_not_consistent() -> None:
    # Duplicates are weighted by their count ~ K s(y): the estimate keeps growing with K.
    assert _mae("plugin", "policy", 1024) > 10 * _mae("plugin-dedup", "policy", 1024)


def test_bootstrap_interval_contains_estimate() -> None:
    logp_theta, logp_ref, _ = _world(0)
    ids, lr, log_s = _draw(logp_theta, logp_ref, "policy", 50, 64, seed=2)
    g = torch.Generator().manual_seed(3)
    snis = snis_entropy(lr, log_s, "policy").value  # (50,)
    low, high = bootstrap_spread(lr, "snis", proposal_logprobs=log_s, generator=g)  # (50,), (50,)
    assert low.shape == (50,) and bool((low <= high).all())
    assert bool(((low <= snis) & (snis <= high)).all())
    plug = plugin_entropy(lr, "policy").value  # (50,)
    low, high = bootstrap_spread(lr, "plugin", generator=g)  # (50,), (50,)
    assert bool(((low <= plug) & (plug <= high)).all())
    # Dedup on each resample: with K=512 over N=20 a resample still covers the space.
    ids, lr, _ = _draw(logp_theta, logp_ref, "policy", 20, 512, seed=4)
    dedup = plugin_entropy(lr, "policy", first_occurrence_mask(ids)).value  # (20,)
    low, high = bootstrap_spread(lr, "plugin", mask_ids=ids, n_boot=100, generator=g)  # (20,) x2
    assert bool(((low <= dedup + 1e-12) & (dedup <= high + 1e-12)).all())


def test_snis_bootstrap_coverage() -> None:
    logp_theta, logp_ref, exact = _world(0)
    _, lr, log_s = _draw(logp_theta, logp_ref, "policy", 100, 256, seed=5)
    g = torch.Generator().manual_seed(6)
    low, high = bootstrap_spread(lr, "snis", proposal_logprobs=log_s, n_boot=100, generator=g)
    coverage = ((low <= exact) & (exact <= high)).double().mean().item()
    assert 0.8 <= coverage <= 1.0


def test_snis_delta_interval_hand_value() -> None:
    # w = 2 exp(l) = [2, 4]: H_hat = log 3 - (2/3) log 2; the two influences are
    # -+(1/3 - (4/9) log 2), so se^2 = 2 psi^2 / (2 * 1) and se = 1/3 - (4/9) log 2.
    lr = torch.tensor([0.0, math.log(2.0)], dtype=torch.float64)  # (2,)
    log_s = torch.full((2,), -math.log(2.0), dtype=torch.float64)  # (2,)
    low, high = snis_delta_interval(lr, log_s, level=0.95)
    h, se = math.log(3.0) - 2.0 / 3.0 * math.log(2.0), 1.0 / 3.0 - 4.0 / 9.0 * math.log(2.0)
    assert se == pytest.approx(0.025267, abs=1e-6)
    assert low.item() == pytest.approx(h - 1.959963984540054 * se, abs=1e-12)
    assert high.item() == pytest.approx(h + 1.959963984540054 * se, abs=1e-12)


def test_snis_delta_interval_zero_width_for_equal_weights() -> None:
    # Equal log-ratios and proposal log-probs: every psi_k = 0, the interval is the point.
    lr, log_s = torch.zeros(3, 5, dtype=torch.float64), torch.full((3, 5), -math.log(10.0))
    low, high = snis_delta_interval(lr, log_s.double())
    torch.testing.assert_close(low, torch.full((3,), math.log(10.0), dtype=torch.float64))
    torch.testing.assert_close(high, low)
