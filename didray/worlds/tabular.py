"""The tabular world: a categorical policy over N outcomes with its logits as parameters.

Every quantity is exact here, so this world is where the paper's theory (docs/design.md §1) is
checked numerically (§1.10). Outcomes carry a "length" (1..4 tokens) only so that the
length-normalised SimPO-style reward has something to normalise by; the DPO log-ratio reward
ignores it.

Preference process (docs/design.md §1.2): y_w ~ pi_w, y_l ~ pi_l; a pair keeps its order with the
Bradley-Terry probability sigmoid(R(y_w) - R(y_l)), R = log pi_w - log pi_l. The paper's main
case is pi_w = pi_ref; v2 also treats pi_l = pi_ref (on-policy rejected).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from didray.core.did import tilted_logprobs
from didray.core.dpo import dpo_loss, pair_law

# Reward parameterisations the report compares (the paper's figure 1, plus IPO's squared loss).
PARAMETERIZATIONS = ("dpo", "ipo", "simpo", "reffree")


@dataclass(frozen=True)
class TabularInstance:
    """A reference policy, a target policy pi_star = pi_ref * exp(score / tau), and lengths."""

    logp_ref: Tensor  # (N,) normalised
    logp_star: Tensor  # (N,) normalised
    lengths: Tensor  # (N,) response lengths in tokens, for the SimPO-style reward
    score: Tensor  # (N,) in [0, 1]
    tau: float


@dataclass(frozen=True)
class Pairs:
    """Weighted preference pairs: outcome `chosen[k]` preferred to `rejected[k]` with weight[k]."""

    chosen: Tensor  # (P,) long
    rejected: Tensor  # (P,) long
    weight: Tensor  # (P,) sums to 1


def random_instance(n: int, tau: float, generator: torch.Generator) -> TabularInstance:
    """Draw pi_ref from Gaussian logits and tilt it by a uniform score; tau sets the DID entropy."""
    ref_logits = torch.randn(n, generator=generator, dtype=torch.float64)  # (N,)
    score = torch.rand(n, generator=generator, dtype=torch.float64)  # (N,)
    lengths = torch.randint(1, 5, (n,), generator=generator).to(torch.float64)  # (N,)
    logp_ref = torch.log_softmax(ref_logits, dim=-1)  # (N,)
    return retilt(TabularInstance(logp_ref, logp_ref, lengths, score, tau), tau)


def retilt(inst: TabularInstance, tau: float) -> TabularInstance:
    """The same pi_ref, score and lengths with pi_star = pi_ref exp(score / tau).

    Only tau changes, so a grid of taus over one draw moves the DID entropy and nothing else.
    """
    logp_star = tilted_logprobs(inst.logp_ref, inst.score, tau)  # (N,)
    return TabularInstance(inst.logp_ref, logp_star, inst.lengths, inst.score, tau)


def population_pairs(logp_w: Tensor, logp_l: Tensor) -> Pairs:
    """Every ordered pair with its exact probability (preference process, docs/design.md §1.2).

    The draw (y_w=i, y_l=j) has probability pi_w(i) pi_l(j); it is labelled i > j with
    probability sigmoid(R_i - R_j) and j > i otherwise. The two draws that end as "i chosen, j
    rejected" are summed into one row, so there are N*N rows. (That sum equals pi_w(i) pi_l(j):
    docs/design.md §1.10.)
    """
    n = logp_w.shape[-1]
    labelled = pair_law(logp_w, logp_l)  # (N, N) [i, j]: i chosen, j rejected
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")  # (N, N) each
    return Pairs(i.reshape(-1), j.reshape(-1), labelled.reshape(-1))


def sample_pairs(
    logp_w: Tensor, logp_l: Tensor, m: int, generator: torch.Generator
) -> Pairs:
    """Draw m labelled pairs from the preference process; each pair gets weight 1/m."""
    y_w = torch.multinomial(logp_w.exp(), m, replacement=True, generator=generator)  # (M,)
    y_l = torch.multinomial(logp_l.exp(), m, replacement=True, generator=generator)  # (M,)
    reward = logp_w - logp_l  # (N,)
    keep = torch.rand(m, generator=generator, dtype=torch.float64) < torch.sigmoid(
        reward[y_w] - reward[y_l]
    )  # (M,) bool
    chosen = torch.where(keep, y_w, y_l)  # (M,)
    rejected = torch.where(keep, y_l, y_w)  # (M,)
    # Repeated pairs become one weighted pair: the same loss, at most N*N rows to evaluate.
    n = logp_w.shape[-1]
    unique, counts = torch.unique(chosen * n + rejected, return_counts=True)  # (U,), (U,)
    return Pairs(unique // n, unique % n, counts.to(torch.float64) / m)


def has_finite_optimum(pairs: Pairs, n: int) -> bool:
    """Whether the pair loss has a finite minimiser (up to a constant) over N free outcomes.

    Ford's condition for Bradley-Terry fits: the "preferred to" relation must be strongly
    connected (every outcome reaches every other through a chain of preferences). Otherwise a
    group that is never preferred to an outsider can be pushed up forever, and an outcome in no
    pair is not determined at all, so a fit stops wherever the optimiser does.
    """
    reach = torch.eye(n, dtype=torch.float64)  # (N, N) [i, j]: i reaches j
    reach[pairs.chosen, pairs.rejected] = 1.0
    for _ in range(math.ceil(math.log2(n))):  # each product doubles the chain length covered
        reach = (reach @ reach > 0).to(torch.float64)  # (N, N)
    return bool((reach > 0).all())


def preference_loss(
    theta: Tensor, inst: TabularInstance, pairs: Pairs, beta: float, param: str
) -> Tensor:
    """Expected loss of the policy softmax(theta) under one reward parameterisation.

    All go through the same `didray.core.dpo.dpo_loss` that the language-model trainer uses.
    """
    logp = torch.log_softmax(theta, dim=-1)  # (N,)
    c, r = pairs.chosen, pairs.rejected
    if param in ("dpo", "ipo"):
        loss_type = "sigmoid" if param == "dpo" else "ipo"
        losses, _ = dpo_loss(logp[c], logp[r], inst.logp_ref[c], inst.logp_ref[r], beta, loss_type)
    elif param == "reffree":
        losses, _ = dpo_loss(logp[c], logp[r], None, None, beta, reference_free=True)
    elif param == "simpo":
        losses, _ = dpo_loss(logp[c], logp[r], None, None, beta, "simpo",
                             chosen_lengths=inst.lengths[c], rejected_lengths=inst.lengths[r])
    else:
        raise ValueError(f"unknown parameterization {param!r}; expected one of {PARAMETERIZATIONS}")
    return (pairs.weight * losses).sum()  # ()


def minimize(
    objective: Callable[[Tensor], Tensor], theta0: Tensor, max_iter: int = 200, tol: float = 1e-13
) -> Tensor:
    """Levenberg-damped Newton on a small parameter vector.

    Plain gradient descent stalls on the tiny pair weights of rare outcomes long before total
    variation reaches 1e-6; Newton's step rescales those directions. The damping keeps it safe
    for the non-convex SimPO objective and for the null direction (adding a constant to theta).
    """
    theta, damping = theta0.clone(), 1e-6
    value = objective(theta)
    for _ in range(max_iter):
        # Reverse-over-reverse: measured ~30x faster here than torch.func.hessian/grad.
        grad = torch.func.jacrev(objective)(theta)  # (N,)
        if grad.abs().max() < tol:
            break
        hess = torch.func.jacrev(torch.func.jacrev(objective))(theta)  # (N, N)
        eye = torch.eye(theta.shape[0], dtype=theta.dtype)  # (N, N)
        while damping < 1e12:
            step = torch.linalg.solve(hess + damping * eye, -grad)  # (N,)
            candidate = objective(theta + step)
            if candidate <= value:
                theta, value, damping = theta + step, candidate, max(damping / 10, 1e-12)
                break
            damping *= 10
        else:
            break
    return theta


def fit_policy(
    inst: TabularInstance, pairs: Pairs, beta: float, param: str = "dpo"
) -> Tensor:
    """Train the tabular policy (from pi_ref) to the optimum of the pair loss; returns log-probs."""
    theta = minimize(lambda t: preference_loss(t, inst, pairs, beta, param), inst.logp_ref)
    return torch.log_softmax(theta, dim=-1)  # (N,)


def loss_and_grad(
    inst: TabularInstance, pairs: Pairs, beta: float, param: str, logp: Tensor
) -> tuple[float, float]:
    """The pair loss of the policy `logp` and the largest |gradient| over its logits."""

    def objective(theta: Tensor) -> Tensor:
        return preference_loss(theta, inst, pairs, beta, param)

    grad, loss = torch.func.grad_and_value(objective)(logp)  # (N,), ()
    return float(loss), float(grad.abs().max())


def gradient_descent(
    inst: TabularInstance, pairs: Pairs, beta: float, steps: int, lr: float
) -> Tensor:
    """Finite-step DPO: `steps` plain gradient steps on the logits from pi_ref.

    Returns the log-probs after every step, (steps + 1, N); row 0 is pi_ref. A fixed small `lr`
    makes this the Euler discretisation of gradient flow (docs/design.md §1.10).
    """

    def objective(theta: Tensor) -> Tensor:
        return preference_loss(theta, inst, pairs, beta, "dpo")

    grad = torch.func.grad(objective)
    thetas = [inst.logp_ref]
    for _ in range(steps):
        thetas.append(thetas[-1] - lr * grad(thetas[-1]))
    return torch.log_softmax(torch.stack(thetas), dim=-1)  # (steps + 1, N)
