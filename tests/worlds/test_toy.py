"""Tests of the toy language world: exact enumeration, rewards, tokenizer, SFT'd pi_ref, cache."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from support.toy_helpers import greedy_response, policy_report, sample_responses

from didray.worlds.text import encode, prompt_text
from didray.worlds.toy import (
    Enumeration,
    ResponseLogitsProcessor,
    ResponseSpace,
    ToyPrompt,
    ToyWorld,
    ToyWorldSpec,
    build_model,
    build_tokenizer,
    build_world,
    enumerate_logps,
    enumerate_responses,
    fit_reference,
    load_world,
    masked_response_logits,
    read_world,
    response_logprobs,
    response_space_size,
)
from didray.worlds.toy import language as lang

# Small enough to fit in seconds on 2 cores, big enough that QA is neither solved nor hopeless.
SPEC = ToyWorldSpec(
    seed=0,
    n_open_prompts=6,
    n_fact_prompts=6,
    response_alphabet=6,
    max_response_tokens=2,
    fact_known_rate=0.5,
    n_heldout_open_prompts=4,  # of the 12 open candidates this alphabet and length allow
    n_heldout_fact_prompts=4,
    sft_steps=300,
)


@pytest.fixture(scope="module")
def world() -> ToyWorld:
    return build_world(SPEC)


@pytest.fixture(scope="module")
def fresh(world: ToyWorld):
    tokenizer = build_tokenizer()
    return build_model(SPEC, tokenizer), tokenizer


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("toy-cache")
    path = fit_reference(SPEC, cache)
    world, model, tokenizer = load_world(path)
    return path, cache, world, model, tokenizer


def test_enumeration_count_and_uniqueness(world: ToyWorld) -> None:
    responses = enumerate_responses(world)
    assert len(responses) == 6 + 6**2 == response_space_size(world)
    assert len(set(responses)) == len(responses)
    default = build_world(ToyWorldSpec())
    assert len(enumerate_responses(default)) == 9 + 9**2 + 9**3


def test_build_world_is_deterministic(world: ToyWorld) -> None:
    assert build_world(SPEC).prompts == world.prompts
    assert len(world.open_prompts) == 6 and len(world.fact_prompts) == 6
    assert sum(bool(p.teacher_knows) for p in world.fact_prompts) == 3
    assert build_world(ToyWorldSpec(seed=1)).prompts != build_world(ToyWorldSpec()).prompts


def test_heldout_prompts_are_drawn_after_the_training_ones(world: ToyWorld) -> None:
    fewer = build_world(SPEC.model_copy(update={"n_heldout_open_prompts": 1,
                                                "n_heldout_fact_prompts": 1}))
    assert fewer.prompts == world.prompts  # the held-out counts leave training prompts alone
    held = world.heldout_prompts
    assert [p.family for p in held] == ["open"] * 4 + ["fact"] * 4
    assert not {p.text for p in held} & {p.text for p in world.prompts}
    assert sum(bool(p.teacher_knows) for p in held) == 2  # fact_known_rate 0.5 of 4
    assert world.all_prompts == world.prompts + held
    assert world.prompt(held[0].text) == held[0]


def test_sft_corpus_covers_heldout_prompts(world: ToyWorld) -> None:
    from didray.worlds.toy.reference import sft_corpus

    taught = {prompt for prompt, _ in sft_corpus(world)}
    assert taught == {p.text for p in world.all_prompts}


def test_teachable_facts_of_the_experiment_world() -> None:
    """sweeps/did-claims.yaml's world (seed 0, 8 + 8 training prompts), enumerated by hand.
    Training facts by relation: pet -> fox, fox, dog, cat; count -> one, two; colour -> green,
    green. A held-out fact is teachable when a training fact of its relation has its answer:
    6 of the 8 are; "colour of alba" (red: colour only ever answered green) and "count of
    hamo" (three) are not. That dari and fari appear in training (under "pet of" and "count
    of") plays no part: their answers there are other facts'."""
    world = build_world(ToyWorldSpec(seed=0, n_open_prompts=8, n_fact_prompts=8))
    facts = [p for p in world.heldout_prompts if p.family == "fact"]
    split = {p.text: (p.answer, world.teachable(p)) for p in facts}
    assert split == {
        "pet of eno": ("cat", True), "colour of dari": ("green", True),
        "count of lumo": ("one", True), "colour of alba": ("red", False),
        "colour of fari": ("green", True), "pet of pavo": ("cat", True),
        "count of mira": ("one", True), "count of hamo": ("three", False)}
    assert all(world.teachable(p) for p in world.fact_prompts)  # its own answer, trivially
    assert not any(world.teachable(p) for p in world.open_prompts)


def test_judge_differs_from_the_data_reward(world: ToyWorld) -> None:
    """The judge checks content and repeats, not the count; open_score grades all three."""
    p = ToyPrompt("list 2 colours", "open", "colours", target_len=2)
    verdicts = {r: world.judge(p, r) for r in ("red blue", "red", "blue green red", "red red",
                                               "red cat", "cat")}
    assert verdicts == {"red blue": 1.0, "red": 1.0, "blue green red": 1.0, "red red": 0.0,
                        "red cat": 0.0, "cat": 0.0}
    assert world.reward(p, "red") == world.reward(p, "red red") == pytest.approx(0.8)
    fact = ToyPrompt("pet of alba", "fact", "animals", answer="dog")
    assert (world.judge(fact, "dog"), world.judge(fact, "dog cat")) == (1.0, 0.0)


def test_open_reward_hand_values(world: ToyWorld) -> None:
    p = ToyPrompt("list 2 colours", "open", "colours", target_len=2)
    assert world.reward(p, "red blue") == pytest.approx(1.0)  # on topic, distinct, length 2
    assert world.reward(p, "red red") == pytest.approx(0.6 + 0.0 + 0.2)  # a repeat
    assert world.reward(p, "red cat") == pytest.approx(0.3 + 0.2 + 0.2)  # half on topic
    assert world.reward(p, "cat") == pytest.approx(0.0 + 0.2 + 0.0)  # off topic, too short
    assert world.reward(p, "red") == pytest.approx(0.6 + 0.2 + 0.0)


def test_fact_reward_hand_values(world: ToyWorld) -> None:
    p = ToyPrompt("pet of alba", "fact", "animals", answer="dog")
    assert world.reward(p, "dog") == 1.0
    assert world.reward(p, "cat") == 0.0
    assert world.reward(p, "dog dog") == 0.0  # exact match only
    fact = world.fact_prompts[0]
    assert world.reward(fact.text, str(fact.answer)) == 1.0  # lookup by prompt text


def test_tokenizer_round_trip(fresh) -> None:
    _, tok = fresh
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<s>", "</s>")
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}) == 3
    text = prompt_text(tok, "colour of alba")
    assert text == "<s> user: colour of alba assistant:"
    ids = tok.encode(text + " red blue </s>", add_special_tokens=False)
    assert tok.unk_token_id not in ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids).split() == text.split() + ["red", "blue", "</s>"]


def _perturbed_policy(spec: ToyWorldSpec, tok) -> torch.nn.Module:
    """A policy away from any fitted pi_ref: seeded noise on every weight of a fresh model,
    large enough that its token laws are far from uniform."""
    model = build_model(spec, tok).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for weight in model.parameters():
            weight.add_(0.1 * torch.randn(weight.shape, generator=generator))
    return model


def test_tree_enumeration_equals_scoring_every_response() -> None:
    """The tree (each prompt run once, continuations on its key-value cache) gives every
    response the log-prob a full forward pass over prompt + response gives it, at L = 3 (so
    1-, 2- and 3-word responses), for prompts of two token lengths (an unpadded group
    each) and with passes cut to a few rows, within float32 rounding."""
    spec = SPEC.model_copy(update={"max_response_tokens": 3, "n_open_prompts": 1,
                                   "n_fact_prompts": 1, "n_heldout_open_prompts": 1,
                                   "n_heldout_fact_prompts": 1})
    tok = build_tokenizer()
    world = build_world(spec)
    longer = ToyPrompt("list 2 red colours", "open", "colours", target_len=2)  # 7 tokens
    world = replace(world, prompts=(longer, *world.prompts))
    model = _perturbed_policy(spec, tok)
    responses = enumerate_responses(world)  # 6 + 36 + 216
    alone = torch.stack([response_logprobs(model, tok, p.text, responses)
                         for p in world.all_prompts])
    assert alone.std(-1).min() > 1.0  # far from uniform: a misplaced row or column shows
    enumeration = Enumeration.of(world, tok)
    assert sorted(ids.shape[1] for _, ids in enumeration.groups) == [6, 7]
    table = enumeration.logps(model, tok)  # (P, R)
    assert table.shape == (len(world.all_prompts), 258)
    torch.testing.assert_close(table, alone, atol=1e-5, rtol=0)
    chunked = enumeration.logps(model, tok, max_rows=12)  # 2 prefixes extended a pass
    torch.testing.assert_close(chunked, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(enumerate_logps(model, tok, world), table, atol=0, rtol=0)


def _total_mass(model, tok, world: ToyWorld) -> list[float]:
    responses = enumerate_responses(world)
    return [
        float(response_logprobs(model, tok, p.text, responses).exp().sum()) for p in world.prompts
    ]


def test_enumeration_sums_to_one_fresh(fresh, world: ToyWorld) -> None:
    model, tok = fresh
    assert all(abs(m - 1.0) < 1e-4 for m in _total_mass(model, tok, world))


def test_enumeration_sums_to_one_fitted(fitted) -> None:
    _, _, world, model, tok = fitted
    assert all(abs(m - 1.0) < 1e-4 for m in _total_mass(model, tok, world))


def test_batching_does_not_change_logprobs(fresh, world: ToyWorld) -> None:
    model, tok = fresh
    responses = enumerate_responses(world)
    prompt = world.prompts[0].text
    whole = response_logprobs(model, tok, prompt, responses, batch_size=512)
    small = response_logprobs(model, tok, prompt, responses, batch_size=5)
    torch.testing.assert_close(whole, small, atol=1e-5, rtol=0)


def test_training_mask_matches_scoring(fresh, world: ToyWorld) -> None:
    """A trainer's path (masked_response_logits on a mixed batch) equals response_logprobs."""
    model, tok = fresh
    prompts = [p.text for p in world.prompts[:3]]
    responses = ["red", "cat dog", "blue green"]
    enc = encode(tok, prompts, responses)
    ids, attn, loss_mask = enc.input_ids, enc.attention_mask, enc.response_mask  # (3, T)
    space = ResponseSpace.from_model(model, tok)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attn).logits.double()  # (3, T, V)
    logp = torch.log_softmax(masked_response_logits(logits, loss_mask, space)[:, :-1], -1)
    tok_logp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1) * loss_mask[:, 1:]  # (3, T-1)
    pairs = zip(prompts, responses, strict=True)
    expected = [response_logprobs(model, tok, p, [r])[0] for p, r in pairs]
    torch.testing.assert_close(tok_logp.sum(-1).float(), torch.stack(expected), atol=1e-5, rtol=0)


def test_mask_table() -> None:
    space = ResponseSpace(content_ids=(3, 4), eos_id=2, vocab_size=6, max_tokens=2)
    table = space.allowed()
    assert table.tolist() == [
        [False, False, False, True, True, False],  # step 0: content only
        [False, False, True, True, True, False],  # step 1: content or </s>
        [False, False, True, False, False, False],  # step L: </s> only
    ]
    logits = torch.zeros(2, 6)
    out = space.mask_logits(logits, torch.tensor([-1, 0]))
    assert torch.equal(out[0], logits[0])  # outside the response: untouched
    assert torch.softmax(out[1], -1)[[3, 4]].sum() == pytest.approx(1.0)


def test_samplers_load_only_the_mask() -> None:
    """A sampler actor imports the mask, not the task language, teacher or SFT."""
    code = ("import sys, didray.sampling.transformers_backend, didray.sampling.vllm_backend; "
            "print(*sorted(m for m in sys.modules if m.startswith('didray.worlds.toy')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["didray.worlds.toy", "didray.worlds.toy.mask"]


def test_generate_stays_in_response_space(fresh, world: ToyWorld) -> None:
    model, tok = fresh
    prompt_ids = tok(prompt_text(tok, world.prompts[0].text), return_tensors="pt").input_ids
    proc = ResponseLogitsProcessor(ResponseSpace.from_model(model, tok), prompt_ids.shape[1])
    torch.manual_seed(0)
    out = model.generate(
        prompt_ids,
        attention_mask=torch.ones_like(prompt_ids),
        logits_processor=[proc],
        do_sample=True,
        max_new_tokens=SPEC.max_response_tokens + 1,
        pad_token_id=tok.pad_token_id,
    )
    new = out[0, prompt_ids.shape[1] :].tolist()
    assert new[-1] == tok.eos_token_id
    assert tok.decode(new[:-1]) in enumerate_responses(world)


def test_sft_reference_is_imperfect_but_better(fitted, fresh) -> None:
    _, _, world, model, tok = fitted
    fitted_report = policy_report(model, tok, world)
    fresh_report = policy_report(*fresh, world)
    assert 0.0 < fitted_report["greedy_qa_accuracy"] < 1.0
    assert fitted_report["expected_open_reward"] > fresh_report["expected_open_reward"] + 0.1
    assert fitted_report["expected_open_reward"] < 0.95  # not maxed: room for DPO
    fact = world.fact_prompts[0]
    assert greedy_response(model, tok, world, fact.text) in enumerate_responses(world)


def test_fit_reference_reuses_cache(fitted) -> None:
    path, cache, _, _, _ = fitted
    weights = Path(path) / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = fit_reference(SPEC, cache)
    assert again == path and weights.stat().st_mtime_ns == before
    assert path.name == SPEC.recipe_hash() and len(path.name) == 16
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temp dirs left behind


def test_read_world_needs_only_world_json(fitted, tmp_path: Path) -> None:
    path, _, world, _, _ = fitted
    meta = (path / "world.json").read_text()
    (tmp_path / "world.json").write_text(meta)
    assert read_world(tmp_path) == world  # no model or tokenizer files in tmp_path
    first = world.prompts[0].text
    (tmp_path / "world.json").write_text(meta.replace(f'"{first}"', '"list 9 colours"', 1))
    with pytest.raises(ValueError, match="prompts differ"):
        read_world(tmp_path)


def test_sample_frequencies_match_logprobs(fitted) -> None:
    _, _, world, model, tok = fitted
    prompt = world.open_prompts[0].text
    responses = enumerate_responses(world)
    probs = response_logprobs(model, tok, prompt, responses).exp()  # (R,)
    draws = sample_responses(model, tok, world, prompt, 2000, seed=123)
    index = {r: i for i, r in enumerate(responses)}
    counts = torch.bincount(torch.tensor([index[d] for d in draws]), minlength=len(responses))
    tv = 0.5 * (counts.double() / 2000 - probs).abs().sum()
    assert tv < 0.1
    assert sample_responses(model, tok, world, prompt, 50, seed=7) == sample_responses(
        model, tok, world, prompt, 50, seed=7
    )


def test_spec_maxima_are_the_language_sizes() -> None:
    """The schema states its bounds as numbers (config may not import the world): the largest
    spec it allows draws every candidate prompt, and one more of each is refused."""
    largest = ToyWorldSpec(n_open_prompts=44, n_fact_prompts=47, n_heldout_open_prompts=1,
                           n_heldout_fact_prompts=1, response_alphabet=12,
                           max_response_tokens=5)
    world = build_world(largest)
    assert len(world.alphabet) == len(lang.CONTENT_POOL) == 12
    assert len({p.text for p in world.all_prompts}) == 45 + 48
    assert len(lang.OPEN_VERBS) * len(lang.COUNT_WORDS) * len(lang.CATEGORIES) == 45
    assert len(lang.FACT_RELATIONS) * len(lang.ENTITIES) == 48
    for field, value in [("n_open_prompts", 45), ("n_fact_prompts", 48),
                         ("n_heldout_open_prompts", 45), ("n_heldout_fact_prompts", 48),
                         ("response_alphabet", 13), ("max_response_tokens", 6)]:
        with pytest.raises(ValueError, match=field):
            ToyWorldSpec(**{field: value})
    with pytest.raises(ValueError, match="n_open_prompts \\+ n_heldout_open_prompts = 46"):
        ToyWorldSpec(n_open_prompts=44, n_heldout_open_prompts=2)
    with pytest.raises(ValueError, match="n_fact_prompts \\+ n_heldout_fact_prompts > 32"):
        build_world(ToyWorldSpec(response_alphabet=6, n_fact_prompts=30))  # 2 relations x 16


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="head_dim"):
        ToyWorldSpec(head_dim=16)
    with pytest.raises(ValueError, match="response_alphabet"):
        ToyWorldSpec(response_alphabet=20)
    assert ToyWorldSpec().recipe_hash() != ToyWorldSpec(seed=1).recipe_hash()


# Computed before ToyWorldSpec became a pydantic model: the hash names pi_ref's cache entry, so a
# refactor that changed it would silently refit every cached reference.
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"n_open_prompts": 12, "n_fact_prompts": 12}, "9141c8440cfcfe84"),
        ({"n_open_prompts": 6, "n_fact_prompts": 6}, "ebf0bbe8f89cb8ba"),
        ({"n_open_prompts": 4, "n_fact_prompts": 4, "sft_steps": 300}, "67bf4b533d6ef8cb"),
        ({"seed": 7, "n_open_prompts": 3, "n_fact_prompts": 5, "response_alphabet": 12,
          "max_response_tokens": 5, "fact_known_rate": 1.0, "hidden_size": 32, "n_layers": 1,
          "n_heads": 4, "head_dim": 48, "intermediate_size": 96, "sft_steps": 10, "sft_lr": 0.01,
          "sft_batch_size": 8, "sft_samples_per_prompt": 4}, "18a64df644171bdd"),
    ],
)
def test_recipe_hash_is_pinned(fields: dict, expected: str) -> None:
    assert ToyWorldSpec(**fields).recipe_hash() == expected
