"""How a claim is judged: its row (`Claim`), the status a fit earns against its target
(`reach_status`, `miss_status`, `sign_flips`), and what a report accumulates (`Run`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl
from torch import Tensor

from didray.core.did import total_variation
from didray.worlds.tabular import Pairs, TabularInstance, loss_and_grad

EXACT = 1e-6  # total variation below which a fit "reaches" its target
MISSES = 1e-3  # total variation above which a fit "misses" pi_star
LOSS_TOL = 1e-12  # loss differences below this are rounding: sums of N*N terms of size <= 1
GRAD_TOL = 1e-10  # a target whose gradient exceeds this is not the loss's optimum


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
    # "project": the project asserts it and a failure fails the run. Anything else names the
    # paper and what the math says of it (§1.10): its statuses are shown, the row is reported.
    whose: str = "project"

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
        asserted = self.holds_if is not None and self.whose == "project"
        spread = ", ".join(f"{counts[s]} {s}" for s in ("holds", "fails", "unresolved",
                                                        "reported") if counts[s])
        return {
            "kind": "claim" if asserted else "reported",
            "whose": self.whose,
            "claim": self.claim,
            "condition": self.condition,
            "metric": self.metric,
            "value": self.worst(resolved or self.values),
            "expected": self.expected,
            "status": status if asserted else "reported",
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


def sign_flips(entropies: list[float], values: list[float], low_positive: bool) -> int:
    """Fewest instances whose sign must change so that, ordered by DID entropy, every instance
    below some threshold is positive (`low_positive`) or negative, every one above has the other
    sign, and both sides are non-empty. 0 means the DID entropy sets the sign."""
    signs = [v > 0 for _, v in sorted(zip(entropies, values, strict=True))]
    return min(sum(s != low_positive for s in signs[:k]) + sum(s == low_positive for s in signs[k:])
               for k in range(1, len(signs)))


@dataclass
class Run:
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

