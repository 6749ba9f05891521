"""The checks of one tabular instance, each a claim of the paper under one condition (§1.10),
and the claims pooled over the whole grid."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import torch
from torch import Tensor

from didray.core.did import (
    did_entropy,
    dpo_optimum_logprobs,
    margin_identity_residual,
    margin_ordering_violations,
    optimal_rejected_logprobs,
    power_law_residual,
    total_variation,
)
from didray.theory.claims import EXACT, MISSES, Run, diagnose, miss_status, reach_status, sign_flips
from didray.worlds.tabular import (
    Pairs,
    TabularInstance,
    fit_policy,
    gradient_descent,
    has_finite_optimum,
    population_pairs,
    sample_pairs,
)

CASES = ("pi_w = pi_ref", "pi_l = pi_ref")  # v2 Thm 4.1's two cases (§1.10)
PAPER_IDENTITY = "paper v2, contradicted by identity"
PAPER_DERIVED = "paper v2, contradicted by derivation"
EXPLORE = ("derived: near log N the sign follows Cov(score, log pi_ref), which the DID entropy "
           "does not see")
POOLED_VERDICTS = {  # (whose, what the math says) of the paper's pooled claims (§1.10)
    ("sign", CASES[0]): (PAPER_IDENTITY, "chosen shift = -KL(pi_ref||pi_t) <= 0 at every DID "
                                         "entropy"),
    ("sign", CASES[1]): (PAPER_DERIVED, "derived: near log N the sign is that of -k3, the "
                                        "third cumulant of log pi_star/pi_ref"),
    ("explore", CASES[0]): (PAPER_DERIVED, EXPLORE),
    ("explore", CASES[1]): (PAPER_DERIVED, EXPLORE),
}


def entropy(logp: Tensor) -> Tensor:
    """Shannon entropy of normalised log-probs (reduces the last axis)."""
    return -(logp.exp() * logp).sum(dim=-1)


def samplers(inst: TabularInstance, beta: float, case: str) -> tuple[Tensor, Tensor]:
    """(log pi_w, log pi_l) of v2 Thm 4.1's case that encodes pi_star at `beta` (§1.10)."""
    ref, star = inst.logp_ref, inst.logp_star
    if case == CASES[0]:
        return ref, optimal_rejected_logprobs(ref, star, beta)
    # pi_w ∝ pi_ref (pi_star / pi_ref)^beta: the tilt of §1.9 with exponent beta.
    return dpo_optimum_logprobs(ref, star, beta, 1.0), ref


def check_instance(inst: TabularInstance, draw: int, generator: torch.Generator,
                    run: Run) -> None:
    _data_claims(inst, run)
    _reach_claims(inst, draw, run)
    _uniqueness_claims(inst, draw, run)
    _finite_sample_claims(inst, draw, generator, run)
    for case in CASES:
        _dynamics_claims(inst, draw, case, run)


def _data_claims(inst: TabularInstance, run: Run) -> None:
    ref, star, beta = inst.logp_ref, inst.logp_star, run.beta
    opt = optimal_rejected_logprobs(ref, star, beta)
    run.claim("powerlaw opt", claim="power-law DID condition (1.3)", condition="rejected=§1.4",
              metric="max |residual|", expected="< 1e-9", holds_if=lambda v: v < 1e-9).add(
        float(power_law_residual(ref, opt, star, beta)))
    run.claim("powerlaw ref", claim="power-law DID condition (1.3)", condition="rejected=pi_ref",
              metric="max |residual|", expected="> 1e-3 (fails)", holds_if=lambda v: v > 1e-3,
              worst=min).add(float(power_law_residual(ref, ref, star, beta)))
    run.claim("ordering", claim="log-margin ordering m_l <= m_ref <= m_star (1.5)",
              condition="rejected=§1.4, DID-oriented pairs", metric="violations",
              expected="0", holds_if=lambda v: v == 0).add(
        float(margin_ordering_violations(ref, opt, star)))
    run.claim("identity", claim="m_ref - m_l = beta (m_star - m_ref) (1.5)",
              condition="rejected=§1.4", metric="max |residual|", expected="< 1e-9",
              holds_if=lambda v: v < 1e-9).add(
        float(margin_identity_residual(ref, opt, star, beta)))
    tilt = torch.log_softmax(inst.score / inst.tau, dim=-1)  # (N,) the closed form of §1.7
    run.claim("did closed form", claim="DID of a score tilt is softmax(score/tau) (1.7)",
              condition="pi_star = pi_ref exp(score/tau)",
              metric="|H(q_{pi_star/pi_ref}) - H(softmax)|",
              expected="< 1e-9", holds_if=lambda v: v < 1e-9).add(
        abs(float(did_entropy(star, ref) - entropy(tilt))))


def _reach_claims(inst: TabularInstance, draw: int, run: Run) -> None:
    """v1 Thm 3.4 / v2 Thm 4.1 (both cases) and §1.9: population DPO reaches its optimum."""
    for case in CASES:
        pairs = population_pairs(*samplers(inst, run.beta, case))
        _reach(inst, draw, run, pairs, run.beta, inst.logp_star, f"thm 4.1 {case}",
               claim="v2 Thm 4.1: population DPO reaches pi_star", condition=case)
    pairs = population_pairs(*samplers(inst, run.beta, CASES[0]))
    beta_t = 2 * run.beta
    learned = _reach(inst, draw, run, pairs, beta_t,
                     dpo_optimum_logprobs(inst.logp_ref, inst.logp_star, run.beta, beta_t),
                     "mismatch", claim="DPO optimum at beta_train != beta_data (1.9)",
                     condition=f"beta_data={run.beta:g}, beta_train={beta_t:g}: "
                               "reaches pi_ref (pi_star/pi_ref)^(b_d/b_t)")
    fit = diagnose(inst, pairs, beta_t, "dpo", learned, inst.logp_star)
    status, note = miss_status(fit)
    run.record(inst, draw, "mismatch vs pi_star", fit, status, note)
    run.claim("mismatch star", claim="DPO optimum at beta_train != beta_data (1.9)",
              condition=f"beta_data={run.beta:g}, beta_train={beta_t:g}: misses pi_star",
              metric="TV to pi_star", expected=f"> {MISSES:g}", holds_if=lambda v: v > MISSES,
              worst=min).add(fit.tv, status, note)


def _reach(inst: TabularInstance, draw: int, run: Run, pairs: Pairs, beta: float,
           target: Tensor, key: str, **spec) -> Tensor:
    learned = fit_policy(inst, pairs, beta)
    fit = diagnose(inst, pairs, beta, "dpo", learned, target)
    status, note = reach_status(fit)
    run.record(inst, draw, key, fit, status, note)
    run.claim(key, metric="TV to the optimum", expected=f"< {EXACT:g}",
              holds_if=lambda v: v < EXACT, **spec).add(fit.tv, status, note)
    return learned


def _uniqueness_claims(inst: TabularInstance, draw: int, run: Run) -> None:
    """v1 Thm 3.4's "only": with chosen ~ pi_ref, every other reward or rejected distribution
    misses pi_star. Alternatives: 4 rejected distributions for the DPO reward, 3 for each of
    IPO, SimPO and the reference-free reward (13 in all)."""
    ref, star, beta = inst.logp_ref, inst.logp_star, run.beta
    rejected = {"§1.4": optimal_rejected_logprobs(ref, star, beta), "pi_ref": ref,
                "uniform": torch.full_like(ref, -math.log(ref.shape[-1])),
                "pi_star": star, "§1.4 at 2 beta": optimal_rejected_logprobs(ref, star, 2 * beta)}
    others = ("§1.4", "pi_ref", "uniform")
    family = {"dpo": ("pi_ref", "uniform", "pi_star", "§1.4 at 2 beta"),
              **{param: others for param in ("ipo", "simpo", "reffree")}}
    for param, names in family.items():
        claim = run.claim(f"unique {param}",
                          claim="only DPO + §1.4 rejected reaches pi_star (1.3-1.4)",
                          condition=f"reward={param}, rejected in {{{', '.join(names)}}}",
                          metric="TV to pi_star", expected=f"> {MISSES:g}",
                          holds_if=lambda v: v > MISSES, worst=min)
        for name in names:
            pairs = population_pairs(ref, rejected[name])
            fit = diagnose(inst, pairs, beta, param, fit_policy(inst, pairs, beta, param), star)
            status, note = miss_status(fit)
            run.record(inst, draw, f"{param} rejected={name}", fit, status, note)
            claim.add(fit.tv, status, note)


def _finite_sample_claims(inst: TabularInstance, draw: int, generator: torch.Generator,
                          run: Run) -> None:
    """Sampled pairs: TV to pi_star shrinks from 1e4 to 1e6 pairs, where both have an optimum."""
    logp_w, logp_l = samplers(inst, run.beta, CASES[0])
    tvs, finite = [], []
    for m in (10_000, 1_000_000):
        pairs = sample_pairs(logp_w, logp_l, m, generator)
        fit = diagnose(inst, pairs, run.beta, "dpo", fit_policy(inst, pairs, run.beta),
                       inst.logp_star)
        finite.append(has_finite_optimum(pairs, inst.logp_ref.shape[-1]))
        run.record(inst, draw, f"sampled {m} pairs", fit, "resolved" if finite[-1] else
                   "unresolved", "" if finite[-1] else "no finite optimum")
        tvs.append(fit.tv)
    status, note = (None, "") if all(finite) else (
        "unresolved", "no finite optimum: sampled preferences not strongly connected")
    run.claim("finite", claim="DPO on sampled pairs approaches pi_star",
              condition="pi_w = pi_ref, rejected=§1.4, 1e4 -> 1e6 pairs",
              metric="TV ratio (1e6 / 1e4)", expected="< 1", holds_if=lambda v: v < 1).add(
        tvs[1] / tvs[0], status, note)


def trajectory(inst: TabularInstance, beta: float, case: str,
               steps: int) -> tuple[Tensor, pl.DataFrame]:
    """Finite-step DPO from pi_ref on the population loss of Thm 4.1's `case`, lr = 1/beta^2.

    Returns the log-probs after every step (T+1, N) and one row per step: the chosen and
    rejected shift E_{pi_w}[log pi_t - log pi_ref] and E_{pi_l}[...], the policy's entropy and
    the DID entropy H(q_{pi_t/pi_ref}) (§1.10).
    """
    ref = inst.logp_ref
    logp_w, logp_l = samplers(inst, beta, case)
    path = gradient_descent(inst, population_pairs(logp_w, logp_l), beta, steps, 1 / beta**2)
    shift = path - ref  # (T+1, N) log pi_t - log pi_ref
    return path, pl.DataFrame({
        "step": range(steps + 1),
        "chosen_shift": (logp_w.exp() * shift).sum(dim=-1).numpy(),
        "rejected_shift": (logp_l.exp() * shift).sum(dim=-1).numpy(),
        "policy_entropy": entropy(path).numpy(),
        "did_entropy": did_entropy(path, ref).numpy()})


def _dynamics_claims(inst: TabularInstance, draw: int, case: str, run: Run) -> None:
    ref, beta, lr = inst.logp_ref, run.beta, 1 / run.beta**2
    logp_w, logp_l = samplers(inst, beta, case)
    path, frame = trajectory(inst, beta, case, run.steps)
    run.dynamics.append(frame.select(pl.lit(draw).alias("draw"), pl.lit(inst.tau).alias("tau"),
                                     pl.lit(case).alias("case"), pl.all()))
    chosen, rejected, h_policy, h_did = (frame[name].to_numpy() for name in (
        "chosen_shift", "rejected_shift", "policy_entropy", "did_entropy"))  # (T+1,) each
    run.ends.setdefault(case, []).append(
        (float(h_did[-1]), float(chosen[-1]), float(h_policy[-1] - h_policy[0])))
    first = torch.log_softmax(ref + lr * beta / 2 * (logp_w.exp() - logp_l.exp()), dim=-1)
    run.claim("first step", claim="first DPO step: theta_ref + lr beta/2 (pi_w - pi_l) (1.10)",
              condition="both cases", metric="max |log pi_1 - derived|", expected="< 1e-12",
              holds_if=lambda v: v < 1e-12).add(float((path[1] - first).abs().max()))
    on_policy = chosen if case == CASES[0] else rejected  # (T+1,) the side drawn from pi_ref
    run.claim("on-policy side", claim="the side drawn from pi_ref shifts by -KL(pi_ref||pi_t)",
              condition="both cases, steps 1..T", metric="max shift of that side",
              expected="<= 0", holds_if=lambda v: v <= 0).add(float(on_policy[1:].max()))
    _thm41_claims(inst, case, logp_w, chosen, rejected, run)
    gone = total_variation(path[-1], inst.logp_star) / total_variation(ref, inst.logp_star)
    run.claim(f"progress {case}", claim="how far T steps get toward pi_star",
              condition=f"{case}, T={run.steps}, lr=1/beta^2",
              metric="1 - TV(pi_T, pi_star) / TV(pi_ref, pi_star)", expected="",
              holds_if=None, worst=min).add(1 - float(gone))


def _thm41_claims(inst: TabularInstance, case: str, logp_w: Tensor, chosen: np.ndarray,
                  rejected: np.ndarray, run: Run) -> None:
    """The side not drawn from pi_ref, as read from v2 Thm 4.1 (§1.10): with pi_w = pi_ref the
    rejected fall below the chosen; with pi_l = pi_ref the chosen rise. The second is the
    paper's; what the project asserts is the sign the math gives it at pi_star."""
    if case == CASES[0]:
        run.claim("dyn W", claim="v2 Thm 4.1: rejected fall below chosen",
                  condition=f"{case}, steps 1..T", metric="max (rejected - chosen shift)",
                  expected="< 0", holds_if=lambda v: v < 0).add(
            float((rejected - chosen)[1:].max()))
        return
    derived = "derived: the chosen shift tends to f'(beta), < 0 when beta < t0 (§1.10)"
    run.claim("dyn L", claim="v2 Thm 4.1: chosen rise", condition=f"{case}, steps 1..T",
              metric="min chosen shift", expected="> 0", holds_if=lambda v: v > 0,
              worst=min, whose=PAPER_DERIVED, notes=[derived]).add(float(chosen[1:].min()))
    at_optimum = float((logp_w.exp() * (inst.logp_star - inst.logp_ref)).sum())
    run.claim("opt L", claim="v2 Thm 4.1: chosen rise", condition=f"{case}, at pi_star",
              metric="E_{pi_w}[log pi_star - log pi_ref]", expected="> 0",
              holds_if=lambda v: v > 0, worst=min, whose=PAPER_DERIVED,
              notes=[derived]).add(at_optimum)
    t0 = tilt_minimiser(inst.logp_ref, inst.logp_star)
    run.claim("opt sign", claim="chosen shift at pi_star is f'(beta): the sign of beta - t0",
              condition=f"{case}, at pi_star; t0 = argmin f on [0, 1]",
              metric="max -E_{pi_w}[log pi_star - log pi_ref] (beta - t0)", expected="<= 0",
              holds_if=lambda v: v <= 0).add(-at_optimum * (run.beta - t0))


def tilt_minimiser(logp_ref: Tensor, logp_star: Tensor, steps: int = 60) -> float:
    """t0, the minimiser on [0, 1] of f(t) = log E_{pi_ref}[(pi_star/pi_ref)^t] (§1.10).

    f is convex with f(0) = f(1) = 0, so its slope f'(t) (the mean of log pi_star/pi_ref under
    the tilt pi_ref^(1-t) pi_star^t) rises from -KL(pi_ref||pi_star) to KL(pi_star||pi_ref):
    bisection on its sign."""
    delta = logp_star - logp_ref  # (N,)
    low, high = 0.0, 1.0
    for _ in range(steps):
        mid = (low + high) / 2
        slope = (torch.softmax(logp_ref + mid * delta, dim=-1) * delta).sum()
        low, high = (mid, high) if slope < 0 else (low, mid)
    return (low + high) / 2


def pooled_claims(run: Run) -> None:
    """v1 §5 / v2 §4 as read here (§1.10): the DID entropy of the learned update sets the sign of
    the chosen shift (low entropy: rise, high: fall) and of the policy-entropy change (low: fall,
    high: rise, "exploration"). The paper's, not the project's: the math contradicts each, so
    they are reported with what it says. One value over the whole grid, at step T; the grid must
    span several taus, or a rule that expects both signs is undecided on a grid that holds one."""
    for case, ends in run.ends.items():
        h_did, chosen, explore = (list(column) for column in zip(*ends, strict=True))
        for key, values, low_positive, what, order in (
            ("sign", chosen, True, "chosen shift", "+ below a DID-entropy threshold, - above"),
            ("explore", explore, False, "policy-entropy change", "- below, + above"),
        ):
            whose, derived = POOLED_VERDICTS[key, case]
            claim = run.claim(f"{key} {case}", claim=f"DID entropy sets the sign of the {what}",
                              condition=f"{case}, step T", metric="instances out of order",
                              expected=f"0 ({order})", holds_if=lambda v: v == 0,
                              whose=whose, notes=[derived])
            claim.pooled = len(values)
            if len(set(run.taus)) < 2:  # draws at one tau differ in more than DID entropy
                claim.add(float("nan"), "unresolved", "needs a grid of >= 2 taus")
            else:
                claim.add(float(sign_flips(h_did, values, low_positive)))
