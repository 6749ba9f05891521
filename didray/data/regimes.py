"""The DID-entropy regimes: named, documented constructions of a preference dataset.

A regime only needs a world's prompts, its score and samplers; it never needs log-probs:
for `powerlaw`, pi_star / pi_ref = exp(score / tau) up to a constant, so both the importance
weights of the rejected distribution and the Bradley-Terry labels follow from scores alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from didray.config.schema import OffPolicy, PolicyGradientPairs, PowerLaw

# (prompts, n, seed) -> n draws from pi_ref per prompt, reproducible in seed
DrawRef = Callable[[list[str], int, int], list[list[str]]]
# (per_prompt, seed) -> (prompt index, chosen, rejected) of the "pairs as given"
GivenPairs = Callable[[int, int], list[tuple[int, str, str]]]


@dataclass(frozen=True)
class Sources:
    """What a world lends the regimes. Sampling and scoring are batched: in the hf world
    they are sampler actors and a scoring model."""

    prompts: list[str]
    families: list[str]  # "open" (instruction-following) or "fact" (knowledge QA), per prompt
    score: Callable[[list[str], list[str]], list[float]]  # (prompts, responses) -> scores
    sample_ref: DrawRef
    given_pairs: GivenPairs
    best_response: Callable[[int], str]  # the "given" demonstration of prompt i


def resample_rejected(
    scores: list[float], weight_exponent: float, generator: torch.Generator
) -> tuple[int, float]:
    """Sampling-importance-resampling from pi_ref candidates to pi_l (docs/design.md §1.4).

    pi_l / pi_ref ∝ (pi_ref / pi_star)^beta_data = exp(-beta_data * score / tau), so the weight
    of candidate k is exp(weight_exponent * score_k) with weight_exponent = -beta_data / tau.
    Returns the drawn index and the effective sample size (sum w)^2 / sum w^2 of the weights.
    """
    logw = torch.tensor(scores, dtype=torch.float64) * weight_exponent  # (K,)
    w = torch.softmax(logw, dim=0)  # (K,)
    pick = int(torch.multinomial(w, 1, generator=generator))
    return pick, float(1.0 / (w**2).sum())


def _rows(src: Sources, pairs: list[tuple[int, str, str]],
          scores: tuple[list[float], list[float]] | None = None) -> list[dict]:
    """Dataset rows for (prompt index, chosen, rejected) triples; scored in two batches
    unless the (chosen, rejected) scores are already known."""
    prompts = [src.prompts[i] for i, _, _ in pairs]
    chosen_scores, rejected_scores = scores or (src.score(prompts, [c for _, c, _ in pairs]),
                                                src.score(prompts, [r for _, _, r in pairs]))
    return [{"prompt": src.prompts[i], "chosen": c, "rejected": r, "prompt_id": i,
             "family": src.families[i], "chosen_score": cs, "rejected_score": rs}
            for (i, c, r), cs, rs in zip(pairs, chosen_scores, rejected_scores, strict=True)]


def offpolicy_pairs(src: Sources, per_prompt: int, seed: int) -> list[dict]:
    """Pairs as given by the world (toy: two off-policy draws ordered by reward; hf: the
    dataset's own chosen and rejected)."""
    return _rows(src, src.given_pairs(per_prompt, seed))


def pg_pairs(src: Sources, per_prompt: int, seed: int) -> list[dict]:
    """Chosen: the prompt's best response; rejected: pi_ref's own samples (a concentrating
    DID). Draws equal to the chosen teach nothing and are skipped (rejection sampling from
    pi_ref restricted to the other responses); if too few remain, the rest are reused."""
    draws = src.sample_ref(src.prompts, 2 * per_prompt, seed)
    pairs = []
    for i, prompt_draws in enumerate(draws):
        best = src.best_response(i)
        others = [d for d in prompt_draws if d != best] or [best]
        pairs += [(i, best, others[j % len(others)]) for j in range(per_prompt)]
    return _rows(src, pairs)


def powerlaw_pairs(src: Sources, regime: PowerLaw, per_prompt: int, seed: int) -> list[dict]:
    """docs/design.md §1.2-1.4 with pi_star = pi_ref * exp(score / tau).

    chosen ~ pi_ref; rejected ~ pi_l by resampling `candidates` pi_ref draws; the pair keeps its
    order with probability sigmoid(R_w - R_l), R = log pi_ref - log pi_l = beta_data*score/tau + c.
    """
    generator = torch.Generator().manual_seed(seed)
    slope, k = regime.beta_data / regime.tau, regime.candidates
    draws = src.sample_ref(src.prompts, per_prompt * (1 + k), seed)  # per pair: y_w, K cands
    flat = [(i, d) for i, ds in enumerate(draws) for d in ds]
    scores = src.score([src.prompts[i] for i, _ in flat], [d for _, d in flat])
    width = 1 + k
    pairs, pair_scores, ess_all = [], [], []
    for at in range(0, len(flat), width):  # one pair per group of 1 + K draws of a prompt
        (i, y_w), cands = flat[at], [d for _, d in flat[at + 1: at + width]]
        s_w, cand_scores = scores[at], scores[at + 1: at + width]
        pick, ess = resample_rejected(cand_scores, -slope, generator)
        margin = slope * (s_w - cand_scores[pick])
        keep = bool(torch.rand((), generator=generator) < 1 / (1 + math.exp(-margin)))
        pairs.append((i, y_w, cands[pick]) if keep else (i, cands[pick], y_w))
        pair_scores.append((s_w, cand_scores[pick]) if keep else (cand_scores[pick], s_w))
        ess_all.append(ess)
    chosen, rejected = zip(*pair_scores, strict=True)
    rows = _rows(src, pairs, (list(chosen), list(rejected)))
    return [{**row, "ess": ess} for row, ess in zip(rows, ess_all, strict=True)]


def build_pairs(
    regime: OffPolicy | PolicyGradientPairs | PowerLaw, src: Sources, per_prompt: int, seed: int
) -> list[dict]:
    """The regime's rows, deterministic in (regime, sources, per_prompt, seed)."""
    if isinstance(regime, PowerLaw):
        return powerlaw_pairs(src, regime, per_prompt, seed)
    if isinstance(regime, PolicyGradientPairs):
        return pg_pairs(src, per_prompt, seed)
    return offpolicy_pairs(src, per_prompt, seed)
