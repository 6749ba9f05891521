"""`theory_report`: the paper's claims checked exactly on tabular instances (docs/design.md §1.10).

The instances are a grid: `instances` random draws of pi_ref and a score, each tilted at every
tau of `taus`, so the DID entropy of pi_star spans low (1.4-2.3 nats at N = 50) to near log N
while nothing else changes. A row is one claim under one condition. Its `kind` is `claim` (a
rule that the values could break) or `reported` (an identity or a description: shown, never
counted). A claim's `status` is `holds`, `fails` or `unresolved` (float64 cannot decide it on
some instance, e.g. a loss too flat to tell the fit from the target; see `reach_status`), and
`instances` counts each.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

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

TAUS = (0.05, 0.15, 0.5, 2.0)  # at N = 50: DID entropy of pi_star from 1.4-2.3 nats to ~log N
STEPS = 1000  # gradient steps of the finite-step dynamics, at lr = 1 / beta^2 (§1.10)
EXACT = 1e-6  # total variation below which a fit "reaches" its target
MISSES = 1e-3  # total variation above which a fit "misses" pi_star
LOSS_TOL = 1e-12  # loss differences below this are rounding: sums of N*N terms of size <= 1
GRAD_TOL = 1e-10  # a target whose gradient exceeds this is not the loss's optimum
CASES = ("pi_w = pi_ref", "pi_l = pi_ref")  # v2 Thm 4.1's two cases (§1.10)


@dataclass
class Claim:
    """One row: a value and a status per instance, and the rule a claim must meet."""

    claim: str
    condition: str
    metric: str
    expected: str
    holds_if: Callable[[float], bool] | None  # None: reported, not a claim (cannot fail)
    worst: Callable[[list[float]], float] = max
    values: list[float] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pooled: int = 0  # > 0: one value over this many instances (a cross-instance claim)

    def add(self, value: float, status: str | None = None, note: str = "") -> None:
        if status is None and self.holds_if is None:
            status = "reported"
        elif status is None:
            status = "holds" if self.holds_if(value) else "fails"
        self.values.append(value)
        self.statuses.append(status)
        if note and note not in self.notes:
            self.notes.append(note)

    def row(self) -> dict:
        assert self.values, f"claim {self.claim!r} measured nothing"
        counts = Counter(self.statuses)
        resolved = [v for v, s in zip(self.values, self.statuses, strict=True)
                    if s != "unresolved"]
        status = next(s for s in ("reported", "fails", "unresolved", "holds") if counts[s])
        spread = ", ".join(f"{counts[s]} {s}" for s in ("holds", "fails", "unresolved",
                                                        "reported") if counts[s])
        return {
            "kind": "reported" if self.holds_if is None else "claim",
            "claim": self.claim,
            "condition": self.condition,
            "metric": self.metric,
            "value": self.worst(resolved or self.values),
            "expected": self.expected,
            "status": status,
            "instances": f"pooled over {self.pooled}" if self.pooled else spread,
            "note": "; ".join(self.notes[:2]),
        }


@dataclass(frozen=True)
class Fit:
    """How a fitted policy sits against a known target, on the loss it was fitted to."""

    tv: float  # total variation to the target
    loss_gap: float  # loss(fit) - loss(target)
    grad: float  # largest |gradient| at the fit
    target_grad: float  # largest |gradient| at the target


def diagnose(inst: TabularInstance, pairs: Pairs, beta: float, param: str, learned: Tensor,
             target: Tensor) -> Fit:
    loss, grad = loss_and_grad(inst, pairs, beta, param, learned)
    target_loss, target_grad = loss_and_grad(inst, pairs, beta, param, target)
    return Fit(float(total_variation(learned, target)), loss - target_loss, grad, target_grad)


def reach_status(fit: Fit) -> tuple[str, str]:
    """A claim "the loss's optimum is the target": what a fit that did not reach it means.

    Only a target that is not stationary, or a fit with a resolvably lower loss, refutes it.
    Otherwise the fit stopped on a loss too flat to resolve in float64 (saturated sigmoids on
    near-deterministic labels): unresolved, not a failure of the theory.
    """
    if fit.tv < EXACT:
        return "holds", ""
    if fit.target_grad > GRAD_TOL:
        return "fails", f"target not stationary (|grad| {fit.target_grad:.1e})"
    if fit.loss_gap < -LOSS_TOL:
        return "fails", f"fit beats the target by {-fit.loss_gap:.1e}"
    return "unresolved", (f"flat loss: TV {fit.tv:.1e} at loss gap {fit.loss_gap:+.1e}, "
                          f"|grad| {fit.grad:.1e}")


def miss_status(fit: Fit) -> tuple[str, str]:
    """A claim "this loss's optimum is not pi_star": a miss counts if pi_star is not stationary."""
    if fit.tv <= MISSES:
        return "fails", f"reached pi_star (TV {fit.tv:.1e})"
    if fit.target_grad <= GRAD_TOL:
        return "unresolved", f"pi_star is stationary (|grad| {fit.target_grad:.1e})"
    return "holds", ""


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


@dataclass
class TheoryReport:
    claims: pl.DataFrame  # one row per claim
    fits: pl.DataFrame  # one row per (instance, fit): convergence diagnostics
    dynamics: pl.DataFrame  # one row per (instance, case, step) of the finite-step dynamics


@dataclass
class _Run:
    """What one report accumulates while it walks the instance grid."""

    beta: float
    steps: int
    taus: tuple[float, ...]
    claims: dict[str, Claim] = field(default_factory=dict)
    fits: list[dict] = field(default_factory=list)
    dynamics: list[pl.DataFrame] = field(default_factory=list)
    ends: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)

    def claim(self, key: str, **spec) -> Claim:
        if key not in self.claims:
            self.claims[key] = Claim(**spec)
        return self.claims[key]

    def record(self, inst: TabularInstance, draw: int, name: str, fit: Fit,
               status: str, note: str = "") -> None:
        self.fits.append({"draw": draw, "tau": inst.tau, "fit": name, "tv": fit.tv,
                          "loss_gap": fit.loss_gap, "grad": fit.grad,
                          "target_grad": fit.target_grad, "status": status, "note": note})


def theory_report(
    outcomes: int = 50, beta: float = 0.5, seed: int = 0, instances: int = 2,
    taus: tuple[float, ...] = TAUS, steps: int = STEPS,
    progress: Callable[[str], None] | None = None,
) -> TheoryReport:
    """Check the claims on `instances` draws with N=`outcomes`, each at every tau of `taus`."""
    if outcomes < 2:
        raise ValueError(f"outcomes must be >= 2 (got {outcomes})")
    if beta <= 0 or min(taus) <= 0:
        raise ValueError(f"beta and tau must be > 0 (got beta={beta}, taus={taus})")
    if instances < 1 or steps < 1:
        raise ValueError(f"instances and steps must be >= 1 (got {instances}, {steps})")
    run, start, total = _Run(beta, steps, taus), time.perf_counter(), instances * len(taus)
    with _one_thread():
        generator = torch.Generator().manual_seed(seed)
        for draw in range(instances):
            base = random_instance(outcomes, taus[0], generator)
            for k, tau in enumerate(taus):
                if progress:
                    progress(f"instance {draw * len(taus) + k + 1}/{total}: draw {draw}, "
                             f"tau {tau:g} ({time.perf_counter() - start:.0f} s)")
                _check_instance(retilt(base, tau), draw, generator, run)
        _pooled_claims(run)
    return TheoryReport(pl.DataFrame([c.row() for c in run.claims.values()]),
                        pl.DataFrame(run.fits), pl.concat(run.dynamics))


@contextmanager
def _one_thread() -> Iterator[None]:
    """The tensors here have at most N*N entries: extra threads only add contention (a fit ran
    ~10x slower with 2 threads than with 1 on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check_instance(inst: TabularInstance, draw: int, generator: torch.Generator,
                    run: _Run) -> None:
    _data_claims(inst, run)
    _reach_claims(inst, draw, run)
    _uniqueness_claims(inst, draw, run)
    _finite_sample_claims(inst, draw, generator, run)
    for case in CASES:
        _dynamics_claims(inst, draw, case, run)


def _data_claims(inst: TabularInstance, run: _Run) -> None:
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


def _reach_claims(inst: TabularInstance, draw: int, run: _Run) -> None:
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


def _reach(inst: TabularInstance, draw: int, run: _Run, pairs: Pairs, beta: float,
           target: Tensor, key: str, **spec) -> Tensor:
    learned = fit_policy(inst, pairs, beta)
    fit = diagnose(inst, pairs, beta, "dpo", learned, target)
    status, note = reach_status(fit)
    run.record(inst, draw, key, fit, status, note)
    run.claim(key, metric="TV to the optimum", expected=f"< {EXACT:g}",
              holds_if=lambda v: v < EXACT, **spec).add(fit.tv, status, note)
    return learned


def _uniqueness_claims(inst: TabularInstance, draw: int, run: _Run) -> None:
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
                          run: _Run) -> None:
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


def _dynamics_claims(inst: TabularInstance, draw: int, case: str, run: _Run) -> None:
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
    run.claim("on-policy side", claim="the side drawn from pi_ref falls: -KL(pi_ref||pi_t)",
              condition="both cases, steps 1..T", metric="max shift of that side",
              expected="<= 0 (an identity)", holds_if=None).add(float(on_policy[1:].max()))
    _thm41_claims(inst, case, logp_w, chosen, rejected, run)
    gone = total_variation(path[-1], inst.logp_star) / total_variation(ref, inst.logp_star)
    run.claim(f"progress {case}", claim="how far T steps get toward pi_star",
              condition=f"{case}, T={run.steps}, lr=1/beta^2",
              metric="1 - TV(pi_T, pi_star) / TV(pi_ref, pi_star)", expected="",
              holds_if=None, worst=min).add(1 - float(gone))


def _thm41_claims(inst: TabularInstance, case: str, logp_w: Tensor, chosen: np.ndarray,
                  rejected: np.ndarray, run: _Run) -> None:
    """The side not drawn from pi_ref, as read from v2 Thm 4.1 (§1.10): with pi_w = pi_ref the
    rejected fall below the chosen; with pi_l = pi_ref the chosen rise."""
    if case == CASES[0]:
        run.claim("dyn W", claim="v2 Thm 4.1: rejected fall below chosen",
                  condition=f"{case}, steps 1..T", metric="max (rejected - chosen shift)",
                  expected="< 0", holds_if=lambda v: v < 0).add(
            float((rejected - chosen)[1:].max()))
        return
    run.claim("dyn L", claim="v2 Thm 4.1: chosen rise", condition=f"{case}, steps 1..T",
              metric="min chosen shift", expected="> 0", holds_if=lambda v: v > 0,
              worst=min).add(float(chosen[1:].min()))
    at_optimum = (logp_w.exp() * (inst.logp_star - inst.logp_ref)).sum()  # ()
    run.claim("opt L", claim="v2 Thm 4.1: chosen rise", condition=f"{case}, at pi_star",
              metric="E_{pi_w}[log pi_star - log pi_ref]",
              expected="> 0 (derived: sure for beta >= 1)", holds_if=lambda v: v > 0,
              worst=min).add(float(at_optimum))


def sign_flips(entropies: list[float], values: list[float], low_positive: bool) -> int:
    """Fewest instances whose sign must change so that, ordered by DID entropy, every instance
    below some threshold is positive (`low_positive`) or negative, every one above has the other
    sign, and both sides are non-empty. 0 means the DID entropy sets the sign."""
    signs = [v > 0 for _, v in sorted(zip(entropies, values, strict=True))]
    return min(sum(s != low_positive for s in signs[:k]) + sum(s == low_positive for s in signs[k:])
               for k in range(1, len(signs)))


def _pooled_claims(run: _Run) -> None:
    """v1 §5 / v2 §4 as read here (§1.10): the DID entropy of the learned update sets the sign of
    the chosen shift (low entropy: rise, high: fall) and of the policy-entropy change (low: fall,
    high: rise, "exploration"). One value over the whole grid, at step T; the grid must span
    several taus, or a claim that expects both signs would fail on a grid that holds one."""
    for case, ends in run.ends.items():
        h_did, chosen, explore = (list(column) for column in zip(*ends, strict=True))
        for key, values, low_positive, what, order in (
            ("sign", chosen, True, "chosen shift", "+ below a DID-entropy threshold, - above"),
            ("explore", explore, False, "policy-entropy change", "- below, + above"),
        ):
            claim = run.claim(f"{key} {case}", claim=f"DID entropy sets the sign of the {what}",
                              condition=f"{case}, step T", metric="instances out of order",
                              expected=f"0 ({order})", holds_if=lambda v: v == 0)
            claim.pooled = len(values)
            if len(set(run.taus)) < 2:  # draws at one tau differ in more than DID entropy
                claim.add(float("nan"), "unresolved", "needs a grid of >= 2 taus")
            else:
                claim.add(float(sign_flips(h_did, values, low_positive)))
