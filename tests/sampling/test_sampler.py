"""The transformers sampler on a real toy model, in-process and as a Ray actor."""

import pytest
import ray
import torch
from support.builders import save_toy_policy
from transformers import AutoModelForCausalLM

from didray.errors import BadInput
from didray.sampling import sampler as sampler_module
from didray.sampling.completions import prompt_seed
from didray.sampling.sampler import Sampler, resolve_backend
from didray.worlds import toy

SPEC = toy.ToyWorldSpec(n_open_prompts=2, n_fact_prompts=2, response_alphabet=6,
                        max_response_tokens=2)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An untrained toy policy saved like a checkpoint, and its world."""
    return save_toy_policy(tmp_path_factory.mktemp("policy"), SPEC), toy.build_world(SPEC)


def hf_sampler(path) -> Sampler:
    return Sampler(path, backend="transformers")


def exact(path, prompt: str, responses: list[str]) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return toy.response_logprobs(model, toy.build_tokenizer(), prompt, responses)


def test_backend_names_resolve(monkeypatch):
    assert resolve_backend("transformers") == "transformers"
    with pytest.raises(BadInput, match="one of"):
        resolve_backend("tgi")
    monkeypatch.setattr(sampler_module.importlib.util, "find_spec", lambda name: None)
    assert resolve_backend("auto") == "transformers"
    with pytest.raises(BadInput, match="pip install vllm"):
        resolve_backend("vllm")


def test_prompt_seeds_are_stable_and_distinct():
    assert prompt_seed(0, "list 2 colours") == prompt_seed(0, "list 2 colours")
    assert len({prompt_seed(s, p) for s in (0, 1) for p in ("a", "b")}) == 4
    assert 0 <= prompt_seed(7, "x") < 2**31


def test_samples_stay_in_the_response_space_and_carry_their_logprobs(saved):
    path, world = saved
    sampler = hf_sampler(path)
    prompts = [p.text for p in world.prompts]
    out = sampler.generate(prompts, n=8, max_tokens=8, seed=0)
    space = set(toy.enumerate_responses(world))
    assert [len(rows) for rows in out] == [8] * len(prompts)
    for prompt, rows in zip(prompts, out, strict=True):
        texts = [c.text for c in rows]
        assert set(texts) <= space
        scored = sampler.score([prompt] * len(texts), texts)
        assert [c.logprob for c in rows] == pytest.approx(scored, abs=1e-4)


def test_score_ids_scores_the_ids_drawn_with_an_eos_only_where_one_was_drawn(saved):
    path, world = saved
    sampler = hf_sampler(path)
    prompts = [p.text for p in world.prompts]
    eos = toy.build_tokenizer().eos_token_id
    # One word then the cut (eos is not allowed before a first word), and whole responses
    # (at most 2 words + eos, well within the default max_tokens).
    for max_tokens, finished in ((1, False), (32, True)):
        rows = sampler.generate(prompts, n=6, max_tokens=max_tokens, seed=0)
        drawn = [c for row in rows for c in row]
        repeated = [p for p, row in zip(prompts, rows, strict=True) for _ in row]
        assert [(c.finished, c.token_ids[-1] == eos) for c in drawn] == [(finished,) * 2] * 24
        scored = sampler.score_ids(repeated, [list(c.token_ids) for c in drawn])
        assert scored == pytest.approx([c.logprob for c in drawn], abs=1e-6)
        # The text path appends an eos: the same number for a finished sample, lower by
        # -log p(eos | the word) for a cut one.
        gap = [t - s for t, s in zip(sampler.score(repeated, [c.text for c in drawn]), scored,
                                     strict=True)]
        assert max(gap) < -0.05 if not finished else gap == pytest.approx([0] * 24, abs=1e-6)


def test_sample_frequencies_match_the_exact_policy(saved):
    path, world = saved
    prompt = world.prompts[0].text
    responses = toy.enumerate_responses(world)
    probs = exact(path, prompt, responses).exp()  # (R,)
    draws = [c.text for c in hf_sampler(path).generate([prompt], n=3000, seed=1)[0]]
    freq = torch.tensor([draws.count(r) / len(draws) for r in responses], dtype=probs.dtype)
    assert 0.5 * float((freq - probs).abs().sum()) < 0.1


def test_generation_is_reproducible_in_seed(saved):
    path, world = saved
    sampler = hf_sampler(path)
    texts = lambda seed: [c.text for c in sampler.generate([world.prompts[1].text], 16,  # noqa: E731
                                                           seed=seed)[0]]
    assert texts(3) == texts(3)
    assert texts(3) != texts(4)


def test_a_prompts_samples_do_not_depend_on_the_batch(saved):
    path, world = saved
    sampler = hf_sampler(path)
    prompts = [p.text for p in world.prompts]
    texts = lambda ps: [[c.text for c in row] for row in sampler.generate(ps, 8, seed=2)]  # noqa: E731
    full = texts(prompts)
    assert texts(prompts[1:2]) == full[1:2]
    assert texts(prompts[::-1]) == full[::-1]


def test_greedy_gives_n_copies_of_one_answer(saved):
    path, world = saved
    rows = hf_sampler(path).generate([world.prompts[0].text], n=3, temperature=0)[0]
    assert len(rows) == 3 and len(set(rows)) == 1


def test_reload_weights_scores_like_the_new_checkpoint(saved, tmp_path):
    path, world = saved
    sampler = hf_sampler(path)
    prompt, responses = world.prompts[0].text, ["red", "red blue", "cat"]
    before = sampler.score([prompt] * 3, responses)
    changed = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        for p in changed.parameters():
            p.add_(0.05 * torch.randn_like(p))
    changed.save_pretrained(tmp_path)
    toy.build_tokenizer().save_pretrained(tmp_path)
    sampler.reload_weights(tmp_path)
    after = sampler.score([prompt] * 3, responses)
    assert after == pytest.approx(hf_sampler(tmp_path).score([prompt] * 3, responses), abs=1e-6)
    assert max(abs(a - b) for a, b in zip(before, after, strict=True)) > 1e-3


def test_one_actor_serves_two_callers(saved):
    path, world = saved
    prompts = [p.text for p in world.prompts]
    responses = ["red", "cat dog", "blue", "one"]
    local = hf_sampler(path).score(prompts, responses)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        actor = ray.remote(Sampler).options(num_cpus=1).remote(str(path), "transformers",
                                                                threads=1)

        @ray.remote(num_cpus=0.1)
        def caller(sampler, seed: int):
            return ray.get(sampler.score.remote(prompts, responses)), \
                ray.get(sampler.generate.remote(prompts, 4, seed=seed))

        (s1, g1), (s2, g2) = ray.get([caller.remote(actor, 0), caller.remote(actor, 0)])
    finally:
        ray.shutdown()
    assert s1 == pytest.approx(local, abs=1e-6) and s2 == pytest.approx(local, abs=1e-6)
    assert [[c.text for c in row] for row in g1] == [[c.text for c in row] for row in g2]
