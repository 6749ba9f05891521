"""The population DPO optimum of a trial's cell, and the pair law it is the optimum of, in the
toy world (docs/design.md §1.11).

A tilted regime's pairs follow one exact law over the enumerated responses of a prompt: one
sampler is pi_ref, the other pi_ref tilted by exp(±beta_data score / tau), and Bradley-Terry
labels. Its sigmoid-DPO optimum at the training beta is the closed form of §1.9. Both depend
on the regime and beta only, so a trial computes them once. offpolicy and pg with given
chosen responses have no such law and no optimum here (their labels are deterministic in the
score: the loss has no finite minimiser, §1.11).
"""

from __future__ import annotations

from torch import Tensor

from didray.config.trial import PairLaw
from didray.core.did import (
    dpo_optimum_logprobs,
    kl,
    optimal_rejected_logprobs,
    tilted_logprobs,
    total_variation,
)
from didray.core.dpo import pair_law
from didray.eval.toy import ToyTables

PREFIX = "optimum_"  # the optimum's evaluation columns: optimum_did_entropy, ...


def samplers(logp_ref: Tensor, scores: Tensor, law: PairLaw) -> tuple[Tensor, Tensor]:
    """(log pi_w, log pi_l) of the regime, (P, R) each: powerlaw's pi_l is §1.4's rejected
    distribution for pi_star = pi_ref exp(score / tau); pg's pi_w is pi_ref tilted up by
    exp(beta_data score / tau) (§5.2). Either way log pi_w - log pi_l = beta_data score / tau
    + c."""
    if law.tilted == "rejected":
        star = tilted_logprobs(logp_ref, scores, law.tau)
        return logp_ref, optimal_rejected_logprobs(logp_ref, star, law.beta_data)
    return tilted_logprobs(logp_ref, scores, law.tau / law.beta_data), logp_ref


def training_law(tables: ToyTables, law: PairLaw) -> Tensor:
    """(P_train, R, R): P(i chosen, j rejected) on each training prompt, the only prompts
    pairs are built on."""
    ref = tables.training_rows(tables.ref).double()  # (P_train, R)
    scores = tables.training_rows(tables.prompts.scores)  # (P_train, R)
    return pair_law(*samplers(ref, scores, law))


def optimum_table(tables: ToyTables, law: PairLaw, beta: float) -> Tensor:
    """(P, R) log-probs of the sigmoid-DPO population optimum at training beta `beta`,
    pi ∝ pi_ref (pi_star / pi_ref)^(beta_data / beta) (§1.9), on every prompt. On held-out
    prompts no pair exists: there it is the optimum the data would give had they covered them,
    the reference the trained policy's transfer is measured against."""
    ref = tables.ref.double()  # (P, R)
    star = tilted_logprobs(ref, tables.prompts.scores, law.tau)  # (P, R)
    return dpo_optimum_logprobs(ref, star, law.beta_data, beta)


def optimum_columns(tables: ToyTables, optimum: Tensor) -> dict[str, float]:
    """The optimum's exact evaluation, by the code that evaluates a trained policy."""
    return {PREFIX + name: value for name, value in tables.evaluate(optimum).items()}


def distance(tables: ToyTables, table: Tensor, optimum: Tensor) -> dict[str, float]:
    """The policy's distance to the optimum, mean over training prompts (where the optimum is
    the data's): total variation, and KL(optimum || policy), the expected log-loss of the
    policy on the optimum's responses, which is large when the policy misses mass the
    optimum has."""
    policy, best = tables.training_rows(table).double(), tables.training_rows(optimum)
    return {"optimum_tv": float(total_variation(best, policy).mean()),
            "optimum_kl": float(kl(best, policy).mean())}
