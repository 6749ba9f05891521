"""The DPO loop without Ray, on an untrained toy model."""

import math

import torch

from didray.data.tensors import PairTensors
from didray.train.loop import batch_indices, dpo_step, make_optimizer
from didray.worlds import toy
from didray.worlds.text import batched_response_logps, encode


def test_batch_indices_cover_each_epoch_once():
    steps = [batch_indices(12, 4, s, seed=0) for s in range(3)]
    assert sorted(torch.cat(steps).tolist()) == list(range(12))


def test_batch_indices_are_a_function_of_step():
    # A resumed run recomputes step 5's batch from (step, seed) alone.
    assert torch.equal(batch_indices(10, 4, 5, seed=1), batch_indices(10, 4, 5, seed=1))
    assert not torch.equal(batch_indices(10, 4, 5, seed=1), batch_indices(10, 4, 5, seed=2))


def test_batch_indices_crossing_an_epoch_and_sharded_by_rank():
    whole = batch_indices(10, 4, 2, seed=0)  # items 8..11 of the epoch-ordered stream
    assert len(whole) == 4
    shards = [batch_indices(10, 4, 2, seed=0, rank=r, world_size=2) for r in (0, 1)]
    assert sorted(torch.cat(shards).tolist()) == sorted(whole.tolist())


def test_dpo_steps_lower_the_loss_from_log_2():
    torch.manual_seed(0)
    spec = toy.ToyWorldSpec(n_open_prompts=2, n_fact_prompts=2, response_alphabet=6,
                            max_response_tokens=2)
    world, tokenizer = toy.build_world(spec), toy.build_tokenizer()
    model = toy.build_model(spec, tokenizer)
    hook = toy.response_hook(model, tokenizer)
    prompts = [p.text for p in world.prompts]
    chosen, rejected = ["red blue", "cat", "one", "red"], ["dog dog", "red red", "cat", "two"]
    enc = encode(tokenizer, prompts * 2, chosen + rejected)
    data = PairTensors(enc, batched_response_logps(model, enc, hook))
    optimizer = make_optimizer(model.parameters(), "adamw", 1e-2, 0.0)
    idx = torch.arange(4)
    first = dpo_step(model, optimizer, data, idx, 0.5, "sigmoid", micro_batches=2, hook=hook)
    # The policy starts at the reference, so every margin is 0 and the loss is log 2.
    assert math.isclose(first["loss"], math.log(2), abs_tol=1e-5)
    for _ in range(5):
        last = dpo_step(model, optimizer, data, idx, 0.5, "sigmoid", hook=hook)
    assert last["loss"] < first["loss"] - 0.05
    assert last["rewards/accuracies"] == 1.0
