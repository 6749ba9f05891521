"""What each world lends the regimes (`Sources`): prompts, a score, pi_ref draws from the
sampler pool, the pairs and chosen responses "as given", and a tilt's DID entropy."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from didray.config.schema import Sweep
from didray.core.did import tilt_entropy
from didray.core.estimators import snis_entropy
from didray.data.regimes import Sources
from didray.errors import BadInput
from didray.sampling.pool import SamplerPool
from didray.worlds import toy

PoolFactory = Callable[[], SamplerPool]  # started on first use: cached data needs no actors


def pool_draws(pool: PoolFactory, sweep: Sweep, max_tokens: int):
    """A `DrawRef` backed by the sampler pool: texts of n pi_ref draws per prompt."""

    def sample_ref(prompts: list[str], n: int, seed: int) -> list[list[str]]:
        rows = pool().generate(prompts, n, temperature=sweep.sampler.temperature,
                               max_tokens=max_tokens, seed=seed)
        return [[c.text for c in row] for row in rows]

    return sample_ref


def toy_sources(world: toy.ToyWorld, sweep: Sweep, pool: PoolFactory) -> Sources:
    """pi_ref draws come from the sampler actors, under the world's response mask; the pairs
    as given are two uniform draws from the response space, ordered by reward; a tilt's DID
    entropy is exact over the enumerated responses of the training prompts."""
    responses = toy.enumerate_responses(world)

    def given_pairs(per_prompt: int, seed: int) -> list[tuple[int, str, str]]:
        g = torch.Generator().manual_seed(seed)
        pairs = []
        for i, p in enumerate(world.prompts):
            for _ in range(per_prompt):
                a, b = (responses[j] for j in torch.randperm(len(responses), generator=g)[:2])
                coin = bool(torch.rand((), generator=g) < 0.5)
                ra, rb = world.reward(p, a), world.reward(p, b)
                pairs.append((i, a, b) if ra > rb or (ra == rb and coin) else (i, b, a))
        return pairs

    def given_chosen(per_prompt: int, seed: int) -> list[list[str]]:
        chosen = [[] for _ in world.prompts]
        for i, c, _ in given_pairs(per_prompt, seed):
            chosen[i].append(c)
        return chosen

    scores = torch.tensor([[world.reward(p, r) for r in responses] for p in world.prompts],
                          dtype=torch.float64)  # (P, R)
    top = (scores == scores.max(-1, keepdim=True).values).sum(-1)  # (P,) top-scoring responses
    return Sources([p.text for p in world.prompts], [p.family for p in world.prompts],
                   lambda ps, rs: [world.reward(p, r) for p, r in zip(ps, rs, strict=True)],
                   pool_draws(pool, sweep, world.max_response_tokens + 1), given_pairs,
                   given_chosen, lambda tau: float(tilt_entropy(scores, tau).mean()), "exact",
                   log_n=math.log(len(responses)), top_entropy=float(top.double().log().mean()))


def snis_tilt_entropy(prompts: list[str], score, draw: Callable[[], list]):
    """tau -> mean over prompts of an SNIS estimate of a tilt's DID entropy (docs/design.md
    §1.8, §5.4) from `draw()`: K pi_ref completions per prompt at temperature 1, drawn and
    scored once, on first use."""

    @functools.cache
    def draws() -> tuple[Tensor, Tensor]:
        rows = draw()
        logp = torch.tensor([[sum(c.token_logprobs) for c in row] for row in rows],
                            dtype=torch.float64)  # (P, K)
        flat = score([p for p, row in zip(prompts, rows, strict=True) for _ in row],
                     [c.text for row in rows for c in row])
        return torch.tensor(flat, dtype=torch.float64).view(logp.shape), logp

    def entropy(tau: float) -> float:
        scores, logp = draws()
        return float(snis_entropy(scores / tau, logp, "ref").value.mean())

    return entropy


def hf_sources(rows: list[dict], score, sweep: Sweep, pool: PoolFactory) -> Sources:
    """Prompts from `data.source`; pi_ref draws from the sampler actors; the pairs as given
    are the dataset's own (one per row); the given chosen of a prompt is its `chosen`, or its
    `reference` in a dataset without a `chosen` column (an empty `chosen` is a bad row,
    dropped or refused before: `hf_data.usable_rows`); a tilt's DID entropy is an SNIS
    estimate."""
    source = sweep.data.source

    def given_pairs(per_prompt: int, seed: int) -> list[tuple[int, str, str]]:
        if not {"chosen", "rejected"} <= rows[0].keys():
            raise BadInput(f"regime kind offpolicy takes the pairs as given, but data.source "
                           f"{source!r} has no `chosen` and `rejected` columns")
        return [(i, r["chosen"], r["rejected"]) for i, r in enumerate(rows)]

    def given_chosen(per_prompt: int, seed: int) -> list[list[str]]:
        column = "chosen" if "chosen" in rows[0] else "reference"
        missing = [i for i, r in enumerate(rows) if not r.get(column, "").strip()]
        if missing:
            raise BadInput(f"regime kind pg with chosen: given needs each prompt's chosen "
                           f"response, but data.source {source!r} has no `chosen` column and "
                           f"its row {missing[0]} (of those kept) has no `reference`")
        return [[r[column]] * per_prompt for r in rows]

    prompts, k = [r["prompt"] for r in rows], sweep.eval.did_samples
    entropy = snis_tilt_entropy(prompts, score, lambda: pool().generate(
        prompts, k, temperature=1.0, max_tokens=sweep.sampler.max_tokens, seed=sweep.data.seed))
    return Sources(prompts, ["open"] * len(rows), score,
                   pool_draws(pool, sweep, sweep.sampler.max_tokens), given_pairs,
                   given_chosen, entropy, f"snis_ref_k{k}")
