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

Sampler = Callable[[str, int, torch.Generator], list[str]]  # (prompt, n, generator) -> responses


@dataclass(frozen=True)
class Sources:
    """What a world lends the regimes."""

    prompts: list[str]
    families: list[str]  # "open" (instruction-following) or "fact" (knowledge QA), per prompt
    score: Callable[[str, str], float]
    sample_ref: Sampler  # draws from pi_ref
    sample_offpolicy: Sampler  # draws from a fixed distribution that is not pi_ref
    best_response: Callable[[str], str]  # the "given" demonstration of a prompt


def resample_rejected(
    scores: list[float], weight_exponent: float, generator: torch.Generator
) -> tuple[int, float]:
    """Sampling-importance-resampling from pi_ref candidates to pi_l (DESIGN 1.4).

    pi_l / pi_ref ∝ (pi_ref / pi_star)^beta_data = exp(-beta_data * score / tau), so the weight
    of candidate k is exp(weight_exponent * score_k) with weight_exponent = -beta_data / tau.
    Returns the drawn index and the effective sample size (sum w)^2 / sum w^2 of the weights.
    """
    logw = torch.tensor(scores, dtype=torch.float64) * weight_exponent  # (K,)
    w = torch.softmax(logw, dim=0)  # (K,)
    pick = int(torch.multinomial(w, 1, generator=generator))
    return pick, float(1.0 / (w**2).sum())


def _row(src: Sources, i: int, chosen: str, rejected: str) -> dict:
    prompt = src.prompts[i]
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "prompt_id": i,
            "family": src.families[i], "chosen_score": src.score(prompt, chosen),
            "rejected_score": src.score(prompt, rejected)}


def _distinct_draw(sample: Sampler, prompt: str, avoid: str, generator: torch.Generator) -> str:
    """A draw different from `avoid` when one can be had in a few tries (equal pairs teach
    nothing); if the sampler keeps returning it, keep the last draw rather than loop forever."""
    draw = avoid
    for _ in range(16):
        draw = sample(prompt, 1, generator)[0]
        if draw != avoid:
            break
    return draw


def offpolicy_pairs(src: Sources, per_prompt: int, generator: torch.Generator) -> list[dict]:
    """Pairs as given: two off-policy responses, the better-scored one chosen (ties: a coin)."""
    rows = []
    for i, prompt in enumerate(src.prompts):
        for _ in range(per_prompt):
            a = src.sample_offpolicy(prompt, 1, generator)[0]
            b = _distinct_draw(src.sample_offpolicy, prompt, a, generator)
            sa, sb = src.score(prompt, a), src.score(prompt, b)
            coin = bool(torch.rand((), generator=generator) < 0.5)
            rows.append(_row(src, i, a, b) if sa > sb or (sa == sb and coin) else
                        _row(src, i, b, a))
    return rows


def pg_pairs(src: Sources, per_prompt: int, generator: torch.Generator) -> list[dict]:
    """Chosen: the prompt's best response; rejected: pi_ref's own samples (a concentrating DID)."""
    rows = []
    for i, prompt in enumerate(src.prompts):
        best = src.best_response(prompt)
        for _ in range(per_prompt):
            rows.append(_row(src, i, best, _distinct_draw(src.sample_ref, prompt, best, generator)))
    return rows


def powerlaw_pairs(
    src: Sources, regime: PowerLaw, per_prompt: int, generator: torch.Generator
) -> list[dict]:
    """DESIGN 1.2-1.4 with pi_star = pi_ref * exp(score / tau).

    chosen ~ pi_ref; rejected ~ pi_l by resampling `candidates` pi_ref draws; the pair keeps its
    order with probability sigmoid(R_w - R_l), R = log pi_ref - log pi_l = beta_data*score/tau + c.
    """
    rows = []
    slope = regime.beta_data / regime.tau
    for i, prompt in enumerate(src.prompts):
        for _ in range(per_prompt):
            y_w = src.sample_ref(prompt, 1, generator)[0]
            cands = src.sample_ref(prompt, regime.candidates, generator)
            k, ess = resample_rejected([src.score(prompt, c) for c in cands], -slope, generator)
            y_l = cands[k]
            margin = slope * (src.score(prompt, y_w) - src.score(prompt, y_l))
            keep = bool(torch.rand((), generator=generator) < 1 / (1 + math.exp(-margin)))
            rows.append({**(_row(src, i, y_w, y_l) if keep else _row(src, i, y_l, y_w)),
                         "ess": ess})
    return rows


def build_pairs(
    regime: OffPolicy | PolicyGradientPairs | PowerLaw, src: Sources, per_prompt: int, seed: int
) -> list[dict]:
    """The regime's rows, deterministic in (regime, sources, per_prompt, seed)."""
    generator = torch.Generator().manual_seed(seed)
    if isinstance(regime, PowerLaw):
        return powerlaw_pairs(src, regime, per_prompt, generator)
    if isinstance(regime, PolicyGradientPairs):
        return pg_pairs(src, per_prompt, generator)
    return offpolicy_pairs(src, per_prompt, generator)
