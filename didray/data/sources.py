"""What each world lends the regimes (`Sources`): prompts, a score, pi_ref draws from the
sampler pool, the pairs "as given" and each prompt's best response."""

from __future__ import annotations

from collections.abc import Callable

import torch

from didray.config.schema import Sweep
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
    as given are two uniform draws from the response space, ordered by reward."""
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

    best = [max(responses, key=lambda r, p=p: world.reward(p, r)) for p in world.prompts]
    return Sources([p.text for p in world.prompts], [p.family for p in world.prompts],
                   lambda ps, rs: [world.reward(p, r) for p, r in zip(ps, rs, strict=True)],
                   pool_draws(pool, sweep, world.max_response_tokens + 1), given_pairs,
                   best.__getitem__)


def hf_sources(rows: list[dict], score, sweep: Sweep, pool: PoolFactory) -> Sources:
    """Prompts from `data.source`; pi_ref draws from the sampler actors; the pairs as given
    are the dataset's own (one per row); a prompt's best response is its `chosen`, else its
    `reference`."""
    source = sweep.data.source

    def given_pairs(per_prompt: int, seed: int) -> list[tuple[int, str, str]]:
        missing = [i for i, r in enumerate(rows) if not (r.get("chosen") and r.get("rejected"))]
        if missing:
            raise BadInput(f"regime kind offpolicy takes the pairs as given, but row {missing[0]}"
                           f" of data.source {source!r} has no chosen/rejected response")
        return [(i, r["chosen"], r["rejected"]) for i, r in enumerate(rows)]

    def best_response(i: int) -> str:
        text = rows[i].get("chosen") or rows[i].get("reference")
        if not text:
            raise BadInput(f"regime kind pg needs each prompt's best response, but row {i} of "
                           f"data.source {source!r} has neither `chosen` nor `reference`")
        return text

    return Sources([r["prompt"] for r in rows], ["open"] * len(rows), score,
                   pool_draws(pool, sweep, sweep.sampler.max_tokens), given_pairs,
                   best_response)
