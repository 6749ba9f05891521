"""Differential Information Distribution (DID) math, docs/design.md §1.

All functions take log-probabilities over an enumerable set of outcomes along ``dim`` and return
tensors. Functions whose name says "logprobs" return normalised log-probabilities.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _p_log_ratio(logp: Tensor, log_ratio: Tensor) -> Tensor:
    """``p * log_ratio`` with the convention ``0 * anything = 0`` (so -inf log-probs are safe)."""
    terms = logp.exp() * log_ratio  # (..., N)
    return torch.where(logp == -math.inf, torch.zeros_like(terms), terms)  # (..., N)


def did_logprobs(logp: Tensor, logr: Tensor, dim: int = -1) -> Tensor:
    """``log q_{p/r}``: the normalised log likelihood ratio that updates r into p.

    Invariant to adding a constant to either input, so unnormalised log-probs are fine.

    Example (N=2): p = [1/2, 1/2], r = [1/4, 3/4] -> ratios [2, 2/3] -> q = [3/4, 1/4].
    """
    d = logp - logr  # (..., N)
    return d - torch.logsumexp(d, dim=dim, keepdim=True)  # (..., N)


def did_entropy(logp: Tensor, logr: Tensor, dim: int = -1) -> Tensor:
    """Entropy ``-sum q log q`` of the DID ``q_{p/r}`` (reduces ``dim``).

    Example (N=2): p = [1/2, 1/2], r = [1/4, 3/4] -> q = [3/4, 1/4] ->
    ``H = 0.5623351446188083``. Equals log N exactly when p = r (up to a constant).
    """
    logq = did_logprobs(logp, logr, dim=dim)  # (..., N)
    return -_p_log_ratio(logq, logq).sum(dim=dim)  # (...,)


def optimal_rejected_logprobs(
    logp_ref: Tensor, logp_star: Tensor, beta: float, dim: int = -1
) -> Tensor:
    """Normalised ``log pi_l``, ``pi_l ∝ pi_ref^(1+beta) pi_star^(-beta)`` (docs/design.md §1.4).

    This is the rejected-sampling distribution that makes ``q_{ref/l} ∝ q_{star/ref}^beta``;
    beta = 0 gives pi_ref exactly.

    Example (N=2): pi_ref = [1/2, 1/2], pi_star = [4/5, 1/5], beta = 1 ->
    ``pi_l ∝ [0.25/0.8, 0.25/0.2] = [0.3125, 1.25]`` -> pi_l = [1/5, 4/5].
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta!r}")
    logits = (1.0 + beta) * logp_ref - beta * logp_star  # (..., N)
    return torch.log_softmax(logits, dim=dim)  # (..., N)


def power_law_residual(
    logp_ref: Tensor, logp_rej: Tensor, logp_star: Tensor, beta: float, dim: int = -1
) -> Tensor:
    """``max_dim |log q_{ref/rej} - log softmax(beta log q_{star/ref})|`` (docs/design.md §1.3).

    Zero iff the power-law DID condition holds. Since ``q_{star/ref}`` only enters up to a
    constant, ``beta * (logp_star - logp_ref)`` is used directly.

    Example (N=2): pi_ref = rej = [1/2, 1/2], pi_star = [4/5, 1/5], beta = 1: the left side is
    log [1/2, 1/2], the right log [4/5, 1/5] -> residual ``log(5/2) = 0.9162907318741551``.
    With rej = [1/5, 4/5] (the optimal rejected distribution) it is 0.
    """
    lhs = did_logprobs(logp_ref, logp_rej, dim=dim)  # (..., N)
    rhs = torch.log_softmax(beta * (logp_star - logp_ref), dim=dim)  # (..., N)
    return (lhs - rhs).abs().amax(dim=dim)  # (...,)


def pairwise_log_margins(logp: Tensor, dim: int = -1) -> Tensor:
    """``m[..., i, j] = logp_i - logp_j``: input (..., N) -> (..., N, N) (outcomes moved last).

    Example: logp = log [4/5, 1/5] -> m[0, 1] = log 4 = 1.3862943611198906, m[1, 0] = -log 4.
    """
    x = logp.movedim(dim, -1)  # (..., N)
    return x.unsqueeze(-1) - x.unsqueeze(-2)  # (..., N, N)


def _off_diagonal(n: int, device: torch.device) -> Tensor:
    """Bool (N, N) mask of ordered pairs i != j."""
    return ~torch.eye(n, dtype=torch.bool, device=device)  # (N, N)


def margin_ordering_violations(
    logp_ref: Tensor, logp_rej: Tensor, logp_star: Tensor, tol: float = 1e-9
) -> Tensor:
    """Count DID-oriented pairs that break ``m_rej <= m_ref <= m_star`` (docs/design.md §1.5).

    Inputs (..., N); returns int64 (...,). A pair (i, j), i != j, is counted only in the
    orientation with ``m_star >= m_ref`` (pi_star prefers i over j more than pi_ref does). Why:
    the power law gives ``m_ref - m_rej = beta (m_star - m_ref)`` with beta > 0, so both
    differences share a sign and the chain holds on those pairs; on the reversed pair every
    margin flips sign and the chain reads ``m_rej >= m_ref >= m_star`` instead. Ties
    (``m_star == m_ref``) appear in both orientations and satisfy both chains with equality.

    Example (N=2): pi_ref = [1/2, 1/2], pi_star = [4/5, 1/5]: the oriented pair is (0, 1) with
    m_ref = 0, m_star = log 4. rej = pi_ref gives 0 violations; rej = [4/5, 1/5] gives m_rej =
    log 4 > m_ref, i.e. 1 violation.
    """
    m_ref = pairwise_log_margins(logp_ref)  # (..., N, N)
    m_rej = pairwise_log_margins(logp_rej)  # (..., N, N)
    m_star = pairwise_log_margins(logp_star)  # (..., N, N)
    oriented = (m_star >= m_ref) & _off_diagonal(m_ref.shape[-1], m_ref.device)  # (..., N, N)
    broken = (m_rej > m_ref + tol) | (m_ref > m_star + tol)  # (..., N, N)
    return (oriented & broken).sum(dim=(-2, -1)).to(torch.int64)  # (...,)


def margin_identity_residual(
    logp_ref: Tensor, logp_rej: Tensor, logp_star: Tensor, beta: float
) -> Tensor:
    """``max_{i,j} |(m_ref - m_rej) - beta (m_star - m_ref)|`` over the last axis's pairs.

    Zero under the power law (docs/design.md §1.5). Margins are differences: constants cancel.

    Example (N=2): pi_ref = rej = [1/2, 1/2], pi_star = [4/5, 1/5], beta = 1 ->
    ``|0 - log 4| = 1.3862943611198906``; with rej = [1/5, 4/5] it is 0.
    """
    m_ref = pairwise_log_margins(logp_ref)  # (..., N, N)
    m_rej = pairwise_log_margins(logp_rej)  # (..., N, N)
    m_star = pairwise_log_margins(logp_star)  # (..., N, N)
    gap = (m_ref - m_rej) - beta * (m_star - m_ref)  # (..., N, N)
    return gap.abs().amax(dim=(-2, -1))  # (...,)


def expected_chosen_displacement(logp_ref: Tensor, logp_new: Tensor, dim: int = -1) -> Tensor:
    """``E_{y~pi_ref}[log pi_new - log pi_ref] = -KL(pi_ref || pi_new) <= 0`` (docs/design.md §1.6).

    Inputs must be normalised. Chosen responses come from pi_ref, so this is the mean change of
    the chosen log-likelihood when training moves pi_ref to pi_new.

    Example (N=2): pi_ref = [1/2, 1/2], pi_new = [4/5, 1/5] ->
    ``(log 1.6 + log 0.4)/2 = log 0.8 = -0.2231435513142097``.
    """
    return _p_log_ratio(logp_ref, logp_new - logp_ref).sum(dim=dim)  # (...,)


def dpo_optimum_logprobs(
    logp_ref: Tensor, logp_star: Tensor, beta_data: float, beta_train: float, dim: int = -1
) -> Tensor:
    """Normalised log of DPO's optimum ``pi ∝ pi_ref (pi_star/pi_ref)^(beta_data/beta_train)``.

    Power-law data built with ``beta_data`` encodes margins ``beta_data * (m_star - m_ref)``;
    DPO at ``beta_train`` matches them with ``beta_train * (m_pi - m_ref)`` (docs/design.md §1.9).

    Example (N=2): pi_ref = [1/2, 1/2], pi_star = [4/5, 1/5], beta_data = 1, beta_train = 2 ->
    ``pi ∝ [sqrt(1.6), sqrt(0.4)]`` = [2/3, 1/3].
    """
    if not beta_train > 0:
        raise ValueError(f"beta_train must be > 0, got {beta_train!r}")
    if beta_data < 0:
        raise ValueError(f"beta_data must be >= 0, got {beta_data!r}")
    logits = logp_ref + (beta_data / beta_train) * (logp_star - logp_ref)  # (..., N)
    return torch.log_softmax(logits, dim=dim)  # (..., N)


def kl(logp: Tensor, logq: Tensor, dim: int = -1) -> Tensor:
    """``KL(p || q) = sum p (log p - log q)`` in nats, normalised inputs.

    Example (N=2): p = [1/2, 1/2], q = [4/5, 1/5] -> ``-log 0.8 = 0.2231435513142097``.
    """
    return _p_log_ratio(logp, logp - logq).sum(dim=dim)  # (...,)


def total_variation(logp: Tensor, logq: Tensor, dim: int = -1) -> Tensor:
    """``TV(p, q) = (1/2) sum |p - q|``, normalised inputs.

    Example (N=2): p = [1/2, 1/2], q = [4/5, 1/5] -> 0.3.
    """
    return 0.5 * (logp.exp() - logq.exp()).abs().sum(dim=dim)  # (...,)


def js_divergence(logp: Tensor, logq: Tensor, dim: int = -1) -> Tensor:
    """Jensen-Shannon divergence ``(KL(p||m) + KL(q||m))/2``, ``m = (p+q)/2``, in nats.

    Example (N=2): p = [1/2, 1/2], q = [1, 0] -> m = [3/4, 1/4] ->
    ``(1/2)(1/2) log(4/3) + (1/2) log(4/3) = (3/4) log(4/3) = 0.21576155433883565``.
    """
    logm = torch.logaddexp(logp, logq) - math.log(2.0)  # (..., N)
    return 0.5 * (kl(logp, logm, dim=dim) + kl(logq, logm, dim=dim))  # (...,)


def tilted_logprobs(logp_ref: Tensor, scores: Tensor, tau: float, dim: int = -1) -> Tensor:
    """Normalised ``log pi*`` of the score tilt ``pi* ∝ pi_ref exp(scores / tau)`` (§1.4).

    Example (N=2): pi_ref = [1/2, 1/2], scores = [log 4, 0], tau = 1 -> pi* = [4/5, 1/5].
    """
    return torch.log_softmax(logp_ref + scores / tau, dim=dim)  # (..., N)


def tilt_entropy(scores: Tensor, tau: float, dim: int = -1) -> Tensor:
    """``H(q_{pi*/pi_ref})`` for the score tilt ``pi* ∝ pi_ref exp(scores / tau)`` (reduces dim).

    The DID of a tilt is ``softmax(scores / tau)`` whatever pi_ref is (docs/design.md §1.7).
    Example: scores [1, 0], tau = 1/log 3 -> q = [3/4, 1/4] -> ``H = 0.5623351446188083``.
    """
    return did_entropy(scores / tau, torch.zeros_like(scores), dim=dim)


def solve_tilt(entropy_at, target: float, low: float, high: float, steps: int = 80) -> float:
    """The tau in [low, high] where ``entropy_at(tau) = target``, by bisection on log tau.

    ``entropy_at`` must be increasing in tau, as a tilt's DID entropy is (dH/dtau =
    Var_q(score) / tau^3, docs/design.md §1.7), and ``entropy_at(low) <= target <=
    entropy_at(high)``; 80 halvings of a log-range of at most 1e3 leave it below 1e-20.
    """
    if not entropy_at(low) <= target <= entropy_at(high):
        raise ValueError(f"target {target} is outside [H(low), H(high)]")
    log_low, log_high = math.log(low), math.log(high)
    for _ in range(steps):
        mid = (log_low + log_high) / 2
        if entropy_at(math.exp(mid)) < target:
            log_low = mid
        else:
            log_high = mid
    return math.exp((log_low + log_high) / 2)
