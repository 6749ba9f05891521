"""Estimators of the DID entropy ``H(q_{pi_theta/pi_ref})`` from K sampled responses per prompt.

Estimates carry their estimator, K and proposal (docs/design.md §1.8) so results stay comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

ESTIMATORS = ("plugin", "snis")


@dataclass(frozen=True)
class EntropyEstimate:
    """A DID-entropy estimate per prompt with the provenance needed to interpret it."""

    value: Tensor  # (...,) one estimate per prompt
    estimator: str  # "plugin" | "snis"
    k: int  # samples per prompt
    proposal: str  # distribution the samples came from, e.g. "policy", "ref", "uniform"
    # SNIS only: the effective sample size of its normalised weights per prompt (`snis_ess`)
    ess: Tensor | None = None


def first_occurrence_mask(sample_ids: Tensor, dim: int = -1) -> Tensor:
    """Bool mask, true at the first occurrence of each id along ``dim``.

    A stable sort puts equal ids next to each other in original order, so the first element of
    each run is the first occurrence; O(K log K) rather than a (K, K) comparison.

    Example: ids [3, 1, 3, 2, 1] -> [True, True, False, True, False].
    """
    ids = sample_ids.movedim(dim, -1)  # (..., K)
    sorted_ids, order = torch.sort(ids, dim=-1, stable=True)  # (..., K), (..., K)
    first_sorted = torch.ones_like(sorted_ids, dtype=torch.bool)  # (..., K)
    first_sorted[..., 1:] = sorted_ids[..., 1:] != sorted_ids[..., :-1]  # (..., K-1)
    mask = torch.zeros_like(first_sorted).scatter(-1, order, first_sorted)  # (..., K)
    return mask.movedim(-1, dim)  # (..., K)


def _plugin_values(log_ratio: Tensor, mask: Tensor | None) -> Tensor:
    """Entropy of ``softmax`` over the unmasked samples (..., K) -> (...,)."""
    if mask is not None:
        neg_inf = torch.full_like(log_ratio, -math.inf)  # (..., K)
        log_ratio = torch.where(mask.bool(), log_ratio, neg_inf)  # (..., K)
    logq = torch.log_softmax(log_ratio, dim=-1)  # (..., K)
    terms = logq.exp() * logq  # (..., K)
    # Masked samples have q = 0 and logq = -inf; their contribution is 0, not NaN.
    terms = torch.where(logq == -math.inf, torch.zeros_like(terms), terms)  # (..., K)
    return -terms.sum(dim=-1)  # (...,)


def plugin_entropy(log_ratio: Tensor, proposal: str, mask: Tensor | None = None) -> EntropyEstimate:
    """Plug-in estimate: ``q_k = softmax_k(l_k)`` over the unmasked samples, ``H = -sum q log q``.

    ``log_ratio`` (..., K) holds ``l_k = log pi_theta(y_k) - log pi_ref(y_k)``. The value is at
    most ``log(#unmasked)``. With ``mask = first_occurrence_mask(ids)`` each distinct response is
    counted once, so once the samples cover the response space the value is exact (consistent as
    K grows). Without dedup a response drawn c times gets c times its weight, and c grows like
    K s(y), so the estimate targets the DID reweighted by the proposal s (biased toward the
    proposal) and grows roughly like log K instead of converging.

    Example: two samples with equal log-ratio -> ``log 2 = 0.6931471805599453``.
    """
    value = _plugin_values(log_ratio, mask)  # (...,)
    k = log_ratio.shape[-1]
    return EntropyEstimate(value=value, estimator="plugin", k=k, proposal=proposal)


def snis_ess(log_ratio: Tensor, proposal_logprobs: Tensor) -> Tensor:
    """Effective sample size ``(sum_k u_k)^2 / sum_k u_k^2 = 1 / sum_k u_k^2`` of the normalised
    SNIS weights ``u = softmax(l - log s)`` (..., K) -> (...,), from 1 (one sample holds all
    the weight) to K (equal weights). Below 2 the estimate is in effect one sample's
    ``log w - l``, not an average (docs/design.md §1.8).

    Example: log w = [0, log 3] -> u = [1/4, 3/4], sum u^2 = 10/16, ESS = 1.6.
    """
    u = torch.softmax(log_ratio - proposal_logprobs, dim=-1)  # (..., K)
    return 1.0 / u.square().sum(dim=-1)  # (...,)


def _snis_values(log_ratio: Tensor, proposal_logprobs: Tensor) -> Tensor:
    """``log Z_hat - E_q_hat[l]`` with importance weights ``w_k = l_k - log s(y_k)`` (..., K)."""
    log_w = log_ratio - proposal_logprobs  # (..., K)
    log_z = torch.logsumexp(log_w, dim=-1) - math.log(log_w.shape[-1])  # (...,)
    u = torch.softmax(log_w, dim=-1)  # (..., K)
    return log_z - (u * log_ratio).sum(dim=-1)  # (...,)


def snis_entropy(log_ratio: Tensor, proposal_logprobs: Tensor, proposal: str) -> EntropyEstimate:
    """Self-normalised importance-sampling estimate with samples ``y_k ~ s``.

    ``H = log Z - E_q[l]`` with ``Z = sum_y pi_theta/pi_ref = E_s[exp(l - log s)]``, estimated by
    ``log Z_hat = logsumexp(l - log s) - log K``, and ``E_q[l] ≈ sum_k u_k l_k`` with
    ``u = softmax(l - log s)``. ``proposal_logprobs`` (..., K) must be normalised log s(y_k)
    (``log Z_hat`` uses the absolute scale); the log-ratio may carry any constant offset.
    Consistent as K grows. The estimate carries its weights' effective sample size (`snis_ess`).

    Example: K=2, l = [0, 0], s uniform over 2 outcomes (log s = -log 2) -> log Z_hat = log 2,
    E_q[l] = 0 -> ``H = log 2 = 0.6931471805599453``.
    """
    value = _snis_values(log_ratio, proposal_logprobs)  # (...,)
    k = log_ratio.shape[-1]
    return EntropyEstimate(value=value, estimator="snis", k=k, proposal=proposal,
                           ess=snis_ess(log_ratio, proposal_logprobs))


def snis_delta_interval(log_ratio: Tensor, proposal_logprobs: Tensor, level: float = 0.95
                        ) -> tuple[Tensor, Tensor]:
    """Delta-method interval (low, high), each (...,), for the SNIS estimate: ``H_hat -+ z se``.

    ``H_hat = log W - A / W`` with ``W = mean_k w_k``, ``A = mean_k w_k l_k`` and
    ``w_k = exp(l_k - log s(y_k))``. Linearising in (W, A) gives each sample the influence
    ``psi_k = K u_k (1 + mu - l_k) - 1`` (``u = softmax(log w)``, ``mu = sum_k u_k l_k``; mean
    0), and ``se^2 = sum_k psi_k^2 / (K (K - 1))``. It ignores the O(1/K) bias and trusts the
    sample variance of heavy-tailed weights: in docs/design.md §1.8 it covers no better than
    the bootstrap spread, so the evaluation stores the spread and only bench/did_estimators.py
    calls this (the measurement behind that choice).

    Example: K=2, s uniform over 2 (log s = -log 2), l = [0, log 2]: w = [2, 4], H_hat =
    log 3 - (2/3) log 2, psi = -+(1/3 - (4/9) log 2), se = 1/3 - (4/9) log 2 = 0.0252675.
    """
    log_w = log_ratio - proposal_logprobs  # (..., K)
    k = log_w.shape[-1]
    u = torch.softmax(log_w, dim=-1)  # (..., K)
    mu = (u * log_ratio).sum(dim=-1, keepdim=True)  # (..., 1)
    psi = k * u * (1.0 + mu - log_ratio) - 1.0  # (..., K)
    se = (psi.square().sum(dim=-1) / (k * (k - 1))).sqrt()  # (...,)
    z = torch.special.ndtri(torch.tensor(0.5 + level / 2.0, dtype=torch.float64)).item()
    value = _snis_values(log_ratio, proposal_logprobs)  # (...,)
    return value - z * se, value + z * se


def _resample(x: Tensor, idx: Tensor) -> Tensor:
    """Gather the last axis of x (..., K) at idx (n_boot, ..., K) -> (n_boot, ..., K)."""
    return x.unsqueeze(0).expand(idx.shape).gather(-1, idx)  # (n_boot, ..., K)


def bootstrap_spread(
    log_ratio: Tensor,
    estimator: str,
    *,
    proposal_logprobs: Tensor | None = None,
    mask_ids: Tensor | None = None,
    n_boot: int = 200,
    level: float = 0.95,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Resampling spread (low, high), each (...,): the percentile bootstrap's quantiles of the
    estimate when the K samples per prompt are resampled.

    Not a confidence interval: it neither corrects the estimators' bias nor reaches its nominal
    coverage of the exact value (docs/design.md §1.8 measures 0 for the plug-in, under 0.9
    for SNIS).

    For ``"plugin"`` with ``mask_ids`` the first-occurrence mask is recomputed on each resample
    (a resample repeats samples, so the original mask would be wrong). Note that the deduplicated
    plug-in is biased low on resamples when the K samples do not cover the response space
    (resamples hold ~63% of the distinct responses), so its spread can then sit below the
    point estimate.

    Example: if all K log-ratios are equal (and plugin is used without mask) every resample
    gives log K, so low = high = log K.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if estimator == "snis" and proposal_logprobs is None:
        raise ValueError("estimator 'snis' requires proposal_logprobs")
    k = log_ratio.shape[-1]
    shape = (n_boot, *log_ratio.shape)
    idx = torch.randint(k, shape, generator=generator, device=log_ratio.device)  # (n_boot, ..., K)
    l_boot = _resample(log_ratio, idx)  # (n_boot, ..., K)
    if estimator == "snis":
        values = _snis_values(l_boot, _resample(proposal_logprobs, idx))  # (n_boot, ...)
    else:
        ids = None if mask_ids is None else _resample(mask_ids, idx)  # (n_boot, ..., K)
        mask = None if ids is None else first_occurrence_mask(ids)  # (n_boot, ..., K)
        values = _plugin_values(l_boot, mask)  # (n_boot, ...)
    alpha = (1.0 - level) / 2.0
    qs = torch.tensor([alpha, 1.0 - alpha], dtype=values.dtype, device=values.device)  # (2,)
    bounds = torch.quantile(values, qs, dim=0)  # (2, ...)
    return bounds[0], bounds[1]  # (...,), (...,)
