"""The sampler pool: shards, order, and draws that do not depend on the number of actors."""

import pytest
import ray
from builders import save_toy_policy

from didray.config.schema import SamplerSettings
from didray.sampling.pool import SamplerPool, shards
from didray.sampling.sampler import Sampler
from didray.worlds import toy

SPEC = toy.ToyWorldSpec(n_open_prompts=3, n_fact_prompts=2, response_alphabet=6,
                        max_response_tokens=2)


def test_shards_cover_in_order_and_never_empty():
    assert shards(5, 2) == [slice(0, 2), slice(2, 5)]
    assert shards(2, 4) == [slice(0, 1), slice(1, 2)]
    assert shards(6, 3) == [slice(0, 2), slice(2, 4), slice(4, 6)]


@pytest.mark.slow
def test_two_actors_answer_like_one_sampler_in_order(tmp_path):
    save_toy_policy(tmp_path, SPEC)
    prompts = [p.text for p in toy.build_world(SPEC).prompts]
    local = Sampler(tmp_path, backend="transformers", threads=1)
    own = local.generate(prompts, 4, seed=7)
    expected = [[c.text for c in row] for row in own]
    repeated = [p for p in prompts for _ in range(4)]
    settings = SamplerSettings(backend="transformers", actors=2, cpus_per_actor=1)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        with SamplerPool(tmp_path, settings) as pool:
            drawn = [[c.text for c in row] for row in pool.generate(prompts, 4, seed=7)]
            flat = [t for row in drawn for t in row]
            scored = pool.score(repeated, flat)
            by_ids = pool.score_ids(repeated, [list(c.token_ids) for row in own for c in row])
            assert len(pool.actors) == 2
        assert pool.actors == []  # closed: the actors' CPUs are free again
    finally:
        ray.shutdown()
    assert drawn == expected  # each prompt seeded on its own: sharding changes nothing
    assert scored == pytest.approx(local.score(repeated, flat), abs=1e-5)
    assert by_ids == pytest.approx([c.logprob for row in own for c in row], abs=1e-5)
