"""The sampler pool: shards, order, draws that do not depend on the number of actors, and
actors that Ray replaces when their process dies."""

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import ray
import torch
from support.builders import save_toy_policy

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


def save_perturbed_policy(out, spec) -> None:
    """The toy policy with noise on every weight: other draws than `save_toy_policy`'s."""
    tokenizer = toy.build_tokenizer()
    model = toy.build_model(spec, tokenizer)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def actor_pid(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


def test_a_killed_actor_is_replaced_and_draws_the_same(tmp_path):
    """kill -9 of each sampler actor's process, once while it generates and once between
    calls, after the pool was switched to other weights: the calls still return what one
    sampler on those weights draws (a restarted actor starts on pi_ref and must reload)."""
    ref, trained = tmp_path / "ref", tmp_path / "trained"
    save_toy_policy(ref, SPEC)
    save_perturbed_policy(trained, SPEC)
    prompts = [p.text for p in toy.build_world(SPEC).prompts]

    def texts(rows) -> list[list[str]]:
        return [[c.text for c in row] for row in rows]

    from_ref = texts(Sampler(ref, backend="transformers", threads=1).generate(prompts, 4, seed=7))
    expected = texts(Sampler(trained, backend="transformers", threads=1)
                     .generate(prompts, 4, seed=7))
    assert expected != from_ref  # else the test could not tell which weights were served
    settings = SamplerSettings(backend="transformers", actors=2, cpus_per_actor=1)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        with SamplerPool(ref, settings) as pool:
            pool.reload_weights(trained)
            pids = [actor_pid(a) for a in pool.actors]
            with ThreadPoolExecutor(1) as background:
                during = background.submit(pool.generate, prompts, 4, seed=7)
                time.sleep(0.2)
                os.kill(pids[0], signal.SIGKILL)
                during = texts(during.result())
            os.kill(pids[1], signal.SIGKILL)
            after = texts(pool.generate(prompts, 4, seed=7))
            restarted = [actor_pid(a) for a in pool.actors]
    finally:
        ray.shutdown()
    assert set(restarted).isdisjoint(pids)  # both processes were replaced
    assert during == expected and after == expected
