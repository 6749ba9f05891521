"""Tests for didray.core.did: worked N=2 examples and docs/design.md §1.1-1.9 as properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from didray.core.did import (
    did_entropy,
    did_logprobs,
    dpo_optimum_logprobs,
    expected_chosen_displacement,
    js_divergence,
    kl,
    margin_identity_residual,
    margin_ordering_violations,
    optimal_rejected_logprobs,
    pairwise_log_margins,
    power_law_residual,
    total_variation,
)

PROPS = settings(max_examples=60, deadline=None)


def _log(*ps: float) -> torch.Tensor:
    return torch.tensor(ps, dtype=torch.float64).log()  # (N,)


def _close(x: torch.Tensor, value: float | list[float], tol: float = 1e-12) -> None:
    torch.testing.assert_close(x, torch.tensor(value, dtype=x.dtype), rtol=0, atol=tol)


REF, STAR = _log(0.5, 0.5), _log(0.8, 0.2)


def _vec(n: int) -> st.SearchStrategy[torch.Tensor]:
    floats = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
    return st.lists(floats, min_size=n, max_size=n).map(
        lambda xs: torch.tensor(xs, dtype=torch.float64)  # (N,)
    )


def _three() -> st.SearchStrategy[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(logp_ref, logp_star, extra) normalised log-probs over N in 2..30 outcomes."""
    return st.integers(2, 30).flatmap(
        lambda n: st.tuples(_vec(n), _vec(n), _vec(n)).map(
            lambda t: tuple(torch.log_softmax(x, dim=-1) for x in t)  # (N,) each
        )
    )


# --- hand-derived values (the docstring examples) ---


def test_did_hand_values() -> None:
    _close(did_logprobs(REF, _log(0.25, 0.75)).exp(), [0.75, 0.25])
    _close(did_entropy(REF, _log(0.25, 0.75)), 0.5623351446188083)


def test_optimal_rejected_hand_value() -> None:
    _close(optimal_rejected_logprobs(REF, STAR, 1.0).exp(), [0.2, 0.8])


def test_power_law_residual_hand_values() -> None:
    _close(power_law_residual(REF, REF, STAR, 1.0), 0.9162907318741551)
    _close(power_law_residual(REF, _log(0.2, 0.8), STAR, 1.0), 0.0)


def test_pairwise_margins_hand_value() -> None:
    _close(pairwise_log_margins(STAR), [[0.0, math.log(4.0)], [-math.log(4.0), 0.0]])
    batched = pairwise_log_margins(STAR.expand(3, 2).T, dim=0)  # (3, 2, 2)
    assert batched.shape == (3, 2, 2)


def test_margin_checks_hand_values() -> None:
    assert margin_ordering_violations(REF, REF, STAR).item() == 0
    assert margin_ordering_violations(REF, STAR, STAR).item() == 1
    assert margin_ordering_violations(REF, REF, STAR).dtype == torch.int64
    _close(margin_identity_residual(REF, REF, STAR, 1.0), 1.3862943611198906)
    _close(margin_identity_residual(REF, _log(0.2, 0.8), STAR, 1.0), 0.0)


def test_displacement_and_divergences_hand_values() -> None:
    _close(expected_chosen_displacement(REF, STAR), -0.2231435513142097)
    _close(kl(REF, STAR), 0.2231435513142097)
    _close(total_variation(REF, STAR), 0.3)
    _close(js_divergence(REF, _log(1.0, 0.0)), 0.21576155433883565)
    _close(kl(_log(1.0, 0.0), REF), math.log(2.0))


def test_dpo_optimum_hand_value() -> None:
    _close(dpo_optimum_logprobs(REF, STAR, 1.0, 2.0).exp(), [2 / 3, 1 / 3])


def test_invalid_betas_raise() -> None:
    with pytest.raises(ValueError, match="-0.5"):
        optimal_rejected_logprobs(REF, STAR, -0.5)
    with pytest.raises(ValueError, match="beta_train"):
        dpo_optimum_logprobs(REF, STAR, 1.0, 0.0)


def test_batched_dim_argument() -> None:
    logp = torch.randn(4, 5, 3, dtype=torch.float64)  # (4, N=5, 3)
    logr = torch.randn(4, 5, 3, dtype=torch.float64)  # (4, N=5, 3)
    h = did_entropy(logp, logr, dim=1)  # (4, 3)
    want = did_entropy(logp.transpose(1, 2), logr.transpose(1, 2))  # (4, 3)
    _close(h, want.tolist())


# --- properties ---


@PROPS
@given(_three(), st.floats(-5, 5))
def test_did_normalised_and_shift_invariant(t: tuple, c: float) -> None:
    logp, logr, _ = t
    q = did_logprobs(logp, logr)  # (N,)
    assert abs(q.exp().sum().item() - 1.0) < 1e-12
    torch.testing.assert_close(did_logprobs(logp + c, logr - 2 * c), q, rtol=0, atol=1e-12)


@PROPS
@given(_three(), st.floats(-5, 5))
def test_entropy_bounds(t: tuple, c: float) -> None:
    logp, logr, _ = t
    n = logp.shape[-1]
    assert -1e-12 <= did_entropy(logp, logr).item() <= math.log(n) + 1e-12
    assert abs(did_entropy(logr + c, logr).item() - math.log(n)) < 1e-12


@PROPS
@given(_three())
def test_optimal_rejected_tends_to_ref(t: tuple) -> None:
    ref, star, _ = t
    torch.testing.assert_close(optimal_rejected_logprobs(ref, star, 0.0), ref, rtol=0, atol=1e-12)
    assert total_variation(optimal_rejected_logprobs(ref, star, 1e-8), ref).item() < 1e-6


@PROPS
@given(_three(), st.floats(0.05, 3.0))
def test_power_law_holds_exactly_for_optimal_rejected(t: tuple, beta: float) -> None:
    ref, star, _ = t
    rej = optimal_rejected_logprobs(ref, star, beta)  # (N,)
    assert power_law_residual(ref, rej, star, beta).item() < 1e-9
    assert margin_ordering_violations(ref, rej, star).item() == 0
    assert margin_identity_residual(ref, rej, star, beta).item() < 1e-9


@PROPS
@given(_three(), st.floats(0.05, 3.0))
def test_power_law_fails_for_ref_as_rejected(t: tuple, beta: float) -> None:
    # log q_{ref/ref} is flat while beta*(log star - log ref) spans a range s, so the best any
    # normalisation can do leaves a residual of at least beta * s / 2.
    ref, star, _ = t
    spread = (star - ref).amax() - (star - ref).amin()
    residual = power_law_residual(ref, ref, star, beta).item()
    assert residual >= beta * spread.item() / 2 - 1e-9


@PROPS
@given(_three())
def test_ordering_counts_oriented_pairs(t: tuple) -> None:
    # Using pi_star itself as "rejected" breaks the chain on every strictly oriented pair.
    ref, star, _ = t
    m_star, m_ref = pairwise_log_margins(star), pairwise_log_margins(ref)  # (N, N), (N, N)
    strict = (m_star > m_ref + 1e-6).sum().item()
    assert margin_ordering_violations(ref, star, star).item() >= strict


@PROPS
@given(_three())
def test_displacement_is_minus_kl(t: tuple) -> None:
    ref, new, _ = t
    d = expected_chosen_displacement(ref, new).item()
    assert abs(d + kl(ref, new).item()) < 1e-12
    assert d <= 1e-12


@PROPS
@given(_three(), st.floats(0.05, 3.0), st.floats(0.05, 3.0))
def test_dpo_optimum(t: tuple, beta_data: float, beta_train: float) -> None:
    ref, star, _ = t
    same = dpo_optimum_logprobs(ref, star, beta_data, beta_data)  # (N,)
    torch.testing.assert_close(same, star, rtol=0, atol=1e-10)
    # The optimum's DID from ref is the data's DID raised to beta_data/beta_train.
    pi = dpo_optimum_logprobs(ref, star, beta_data, beta_train)  # (N,)
    want = torch.log_softmax(beta_data / beta_train * did_logprobs(star, ref), dim=-1)  # (N,)
    torch.testing.assert_close(did_logprobs(pi, ref), want, rtol=0, atol=1e-9)


@PROPS
@given(_three())
def test_divergence_properties(t: tuple) -> None:
    p, q, _ = t
    assert kl(p, q).item() >= -1e-12 and abs(kl(p, p).item()) < 1e-12
    tv, js = total_variation(p, q).item(), js_divergence(p, q).item()
    assert 0.0 <= tv <= 1.0 + 1e-12
    assert -1e-12 <= js <= math.log(2.0) + 1e-12
    assert abs(js - js_divergence(q, p).item()) < 1e-12
    assert tv**2 * 2 <= kl(p, q).item() + 1e-9  # Pinsker
