"""The DID-entropy regimes: named, documented constructions of a preference dataset
(docs/design.md §5).

A regime only needs a world's prompts, its score and samplers; it never needs log-probs:
for a tilt pi_star / pi_ref = exp(score / tau) up to a constant, so the importance weights of
the tilted sampler and the Bradley-Terry labels follow from scores alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from didray.config.schema import OffPolicy, PolicyGradientPairs, PowerLaw
from didray.core.did import solve_tilt
from didray.errors import BadInput

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
    given_chosen: Callable[[int, int], list[list[str]]]  # (per_prompt, seed) -> per prompt
    # tau -> mean over prompts of H(q_{pi*/pi_ref}) for pi* = pi_ref exp(score / tau), and the
    # name of how it is computed ("exact" by enumeration, or an estimator)
    tilt_entropy: Callable[[float], float]
    entropy_method: str
    log_n: float | None = None  # log #responses where the world can enumerate them
    top_entropy: float | None = None  # the tau -> 0 limit: mean log #top-scoring responses


def resample(
    scores: list[float], weight_exponent: float, generator: torch.Generator
) -> tuple[int, float]:
    """Sampling-importance-resampling from pi_ref candidates to a tilt of pi_ref.

    powerlaw's pi_l / pi_ref ∝ (pi_ref / pi_star)^beta_data = exp(-beta_data * score / tau)
    (docs/design.md §1.4), pg's pi_w / pi_ref ∝ exp(+beta_data * score / tau) (§5.2), so the
    weight of candidate k is exp(weight_exponent * score_k) with weight_exponent = ∓beta_data/tau.
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


def given_pg_pairs(src: Sources, per_prompt: int, seed: int) -> list[dict]:
    """Chosen: the world's given chosen response; rejected: pi_ref's own samples (the paper's
    pi_l = pi_ref case, docs/design.md §5.2). Draws equal to the chosen teach nothing and are
    skipped (rejection sampling from pi_ref restricted to the other responses); if too few
    remain, the rest are reused."""
    draws = src.sample_ref(src.prompts, 2 * per_prompt, seed)
    chosen = src.given_chosen(per_prompt, seed)
    pairs = []
    for i, (prompt_draws, prompt_chosen) in enumerate(zip(draws, chosen, strict=True)):
        for j, c in enumerate(prompt_chosen):
            others = [d for d in prompt_draws if d != c] or [c]
            pairs.append((i, c, others[j % len(others)]))
    return _rows(src, pairs)


def tilted_pairs(src: Sources, regime: PowerLaw | PolicyGradientPairs, tau: float,
                 per_prompt: int, seed: int) -> list[dict]:
    """docs/design.md §1.2-1.4 and §5.2-5.3 with pi_star = pi_ref * exp(score / tau).

    For each pair, 1 + K pi_ref draws: the first is the untilted sampler's draw, the tilted
    sampler resamples the other K (powerlaw: y_w ~ pi_ref, y_l ~ pi_l tilted down; pg:
    y_l ~ pi_ref, y_w ~ pi_w tilted up). Either way R = log pi_w - log pi_l =
    beta_data*score/tau + c, and the pair keeps its order with probability sigmoid(R_w - R_l).
    Each row stores `margin` = R(chosen) - R(rejected) and the resampling's `ess`.
    """
    generator = torch.Generator().manual_seed(seed)
    slope, k, up = regime.beta_data / tau, regime.candidates, regime.kind == "pg"
    draws = src.sample_ref(src.prompts, per_prompt * (1 + k), seed)  # per pair: 1 + K draws
    flat = [(i, d) for i, ds in enumerate(draws) for d in ds]
    scores = src.score([src.prompts[i] for i, _ in flat], [d for _, d in flat])
    width = 1 + k
    pairs, pair_scores, extra = [], [], []
    for at in range(0, len(flat), width):  # one pair per group of 1 + K draws of a prompt
        (i, anchor), cands = flat[at], [d for _, d in flat[at + 1: at + width]]
        cand_scores = scores[at + 1: at + width]
        pick, ess = resample(cand_scores, slope if up else -slope, generator)
        tilted, untilted = (cands[pick], cand_scores[pick]), (anchor, scores[at])
        (y_w, s_w), (y_l, s_l) = (tilted, untilted) if up else (untilted, tilted)
        margin = slope * (s_w - s_l)
        keep = bool(torch.rand((), generator=generator) < 1 / (1 + math.exp(-margin)))
        pairs.append((i, y_w, y_l) if keep else (i, y_l, y_w))
        pair_scores.append((s_w, s_l) if keep else (s_l, s_w))
        extra.append({"ess": ess, "margin": margin if keep else -margin})
    chosen, rejected = zip(*pair_scores, strict=True)
    rows = _rows(src, pairs, (list(chosen), list(rejected)))
    return [{**row, **more} for row, more in zip(rows, extra, strict=True)]


# The tau range a requested entropy is solved in: scores of order 1 make exp(score / 1e-3)
# a point mass on the top-scoring responses and exp(score / 1e3) uniform to ~1e-6 nats.
TAU_RANGE = (1e-3, 1e3)
ESS_WARN = 2.0  # below this, the tilted side is in effect one candidate per pair
MARGIN_WARN = 0.2  # mean |R_w - R_l| below this: a pair keeps its order with p < 0.55


@dataclass(frozen=True)
class Built:
    """A regime's rows and what its data encode (the `data_*` columns of results)."""

    rows: list[dict]
    tau: float | None  # the tilt's temperature, given or solved
    entropy: float | None  # the data DID entropy H(q_{pi*/pi_ref}) (docs/design.md §5.4)
    entropy_method: str | None

    def stats(self) -> dict:
        rows, n = self.rows, len(self.rows)
        margins = [abs(r["margin"]) for r in rows if "margin" in r]
        ess = [r["ess"] for r in rows if "ess" in r]
        return {"tau": self.tau, "data_did_entropy": self.entropy,
                "data_did_entropy_method": self.entropy_method, "data_pairs": n,
                "data_chosen_higher": sum(r["chosen_score"] > r["rejected_score"]
                                          for r in rows) / n,
                "data_margin_abs": sum(margins) / len(margins) if margins else None,
                "data_ess": sum(ess) / len(ess) if ess else None}


def warnings(stats: dict, candidates: int | None) -> list[str]:
    """What makes a regime's data weaker than its parameters suggest (warned, not refused)."""
    out = []
    if stats["data_ess"] is not None and stats["data_ess"] < ESS_WARN:
        out.append(f"importance resampling's mean effective sample size is "
                   f"{stats['data_ess']:.2f} of {candidates} candidates: the tilted side is in "
                   "effect pi_ref's single best (or worst) candidate; raise candidates or tau")
    if stats["data_margin_abs"] is not None and stats["data_margin_abs"] < MARGIN_WARN:
        out.append(f"labels are near coin flips: mean |R_w - R_l| = "
                   f"{stats['data_margin_abs']:.3f}, so a typical pair keeps its order with "
                   "probability below 0.55; raise beta_data or lower the DID entropy")
    return out


def solve_tau(regime: PowerLaw | PolicyGradientPairs, src: Sources) -> float:
    """The regime's tau: given, or solved so the data DID entropy is the requested one."""
    if regime.tau is not None:
        return regime.tau
    target = regime.did_entropy
    if regime.did_entropy_fraction is not None:
        if src.log_n is None:
            raise BadInput(f"regime {regime.name!r}: did_entropy_fraction needs log N, and "
                           "this world cannot enumerate its responses; give did_entropy in nats")
        target = regime.did_entropy_fraction * src.log_n
    lowest, highest = (src.tilt_entropy(t) for t in TAU_RANGE)
    if not lowest < target < highest:
        raise BadInput(f"regime {regime.name!r}: a data DID entropy of {target:.3f} nats is out "
                       f"of this world's reach; tilting its scores gives {lowest:.3f} (tau "
                       f"{TAU_RANGE[0]:g}) to {highest:.3f} nats (tau {TAU_RANGE[1]:g}), "
                       f"estimated by {src.entropy_method}")
    return solve_tilt(src.tilt_entropy, target, *TAU_RANGE)


def build_pairs(
    regime: OffPolicy | PolicyGradientPairs | PowerLaw, src: Sources, per_prompt: int, seed: int
) -> Built:
    """The regime's rows, deterministic in (regime, sources, per_prompt, seed), and the DID
    entropy of what they encode: a tilt's at its tau; offpolicy's deterministic labels encode
    the tau -> 0 limit (toy only); pg's given chosen responses follow no known law (none)."""
    if isinstance(regime, OffPolicy):
        rows = offpolicy_pairs(src, per_prompt, seed)
        return Built(rows, None, src.top_entropy, "exact" if src.top_entropy is not None else None)
    if not regime.needs_tilt():
        return Built(given_pg_pairs(src, per_prompt, seed), None, None, None)
    tau = solve_tau(regime, src)
    return Built(tilted_pairs(src, regime, tau, per_prompt, seed), tau, src.tilt_entropy(tau),
                 src.entropy_method)
