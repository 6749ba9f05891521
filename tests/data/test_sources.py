"""A world's tilt entropy: the hf world's SNIS estimate, from a real sampler, against the exact
value the toy world enumerates (docs/design.md §5.4)."""

import pytest
import torch
from support.builders import save_toy_policy

from didray.core.did import tilt_entropy
from didray.data.sources import snis_tilt_entropy
from didray.sampling.sampler import Sampler
from didray.worlds import toy

SPEC = toy.ToyWorldSpec(n_open_prompts=3, n_fact_prompts=2, response_alphabet=6,
                        max_response_tokens=2)


def test_snis_tilt_entropy_from_sampled_text_matches_the_enumerated_value(tmp_path):
    """42 responses per prompt; 400 pi_ref draws each (an untrained masked policy), scored by
    the world's reward as text, as hf_sources does with its scorer."""
    world = toy.build_world(SPEC)
    sampler = Sampler(save_toy_policy(tmp_path, SPEC), backend="transformers", threads=1)
    prompts = [p.text for p in world.prompts]

    def score(ps: list[str], rs: list[str]) -> list[float]:
        return [world.reward(p, r) for p, r in zip(ps, rs, strict=True)]

    estimate = snis_tilt_entropy(prompts, score, lambda: sampler.generate(
        prompts, 400, temperature=1.0, max_tokens=SPEC.max_response_tokens + 1, seed=0))
    responses = toy.enumerate_responses(world)
    table = torch.tensor([[world.reward(p, r) for r in responses] for p in world.prompts],
                         dtype=torch.float64)
    for tau in (0.1, 0.3, 3.0):
        exact = float(tilt_entropy(table, tau).mean())
        assert estimate(tau) == pytest.approx(exact, abs=0.08), tau
    assert estimate(0.1) < estimate(0.3) < estimate(3.0)
