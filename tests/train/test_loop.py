"""The DPO loop without Ray, on an untrained toy model."""

import copy
import math

import torch
from support.pairs import toy_pairs

from didray.core.dpo import PreferenceLoss, dpo_loss
from didray.data.tensors import PairTensors
from didray.train.loop import (
    as_floats,
    batch_indices,
    batch_rows,
    dpo_step,
    make_optimizer,
    row_lengths,
)
from didray.worlds.text import Encoded, batched_response_logps, response_logps


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
    model, hook, enc = toy_pairs()
    data = PairTensors(enc, batched_response_logps(model, enc, hook))
    optimizer = make_optimizer(model.parameters(), "adamw", 1e-2, 0.0)
    idx, lengths = torch.arange(4), row_lengths(enc)
    raw = dpo_step(model, optimizer, data, lengths, idx, PreferenceLoss(0.5), micro_batches=2,
                   hook=hook)
    # Batch means stay on the device until reported; the token count is the host's.
    assert all(isinstance(raw[key], torch.Tensor) for key in raw if key != "tokens")
    first = as_floats(raw)
    assert first["tokens"] == int(enc.attention_mask.sum())  # idx covers every row
    # The policy starts at the reference, so every margin is 0 and the loss is log 2.
    assert math.isclose(first["loss"], math.log(2), abs_tol=1e-5)
    for _ in range(5):
        last = as_floats(dpo_step(model, optimizer, data, lengths, idx, PreferenceLoss(0.5),
                                  hook=hook))
    assert last["loss"] < first["loss"] - 0.05
    assert last["rewards/accuracies"] == 1.0


def test_batch_rows_cut_to_the_longest_selected_row():
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 0, 0, 0], [1, 2, 3, 4, 0]])  # (3, 5)
    attention = (ids > 0).long()  # (3, 5)
    response = torch.tensor([[0, 1, 1, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 1, 0]])  # (3, 5)
    enc = Encoded(ids, attention, response)
    lengths = row_lengths(enc)
    assert lengths.tolist() == [3, 2, 4]
    cut = batch_rows(enc, torch.tensor([1, 0]), lengths)
    assert cut.input_ids.tolist() == [[8, 9, 0], [5, 6, 7]]
    assert cut.attention_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert cut.response_mask.tolist() == [[0, 1, 0], [0, 1, 1]]


def test_trimmed_batches_score_and_lose_like_full_padding():
    model, hook, enc = toy_pairs(extra_padding=6)
    # A reference away from the policy, so the loss depends on every log-prob (not log 2).
    ref = batched_response_logps(model, enc, hook) + torch.linspace(-2.0, 2.0, 8)  # (8,)
    data, lengths = PairTensors(enc, ref), row_lengths(enc)
    idx = torch.tensor([2, 0])
    rows = torch.cat([idx, idx + data.n])  # (4,)
    cut = batch_rows(enc, rows, lengths)
    assert cut.input_ids.shape[1] == int(lengths[rows].max()) < enc.input_ids.shape[1]
    full = response_logps(model, enc.rows(rows), hook)  # (4,)
    torch.testing.assert_close(response_logps(model, cut, hook), full, atol=1e-6, rtol=0)
    losses, _ = dpo_loss(*full.detach().chunk(2), *ref[rows].chunk(2), 0.5, "sigmoid")
    expected = float(losses.mean())
    assert abs(expected - math.log(2)) > 0.1
    optimizer = make_optimizer(model.parameters(), "adamw", 1e-2, 0.0)
    loss = dpo_step(model, optimizer, data, lengths, idx, PreferenceLoss(0.5), hook=hook)["loss"]
    assert abs(float(loss) - expected) <= 1e-6


def test_batched_log_probs_come_back_in_row_order_from_longest_first_chunks():
    """Chunks of 3 of 8 rows of varied length, each chunk cut to its longest row: every
    row's log-prob is the one it has scored alone, at its own index (a missing inverse
    permutation returns them longest first)."""
    model, hook, enc = toy_pairs(extra_padding=6)
    alone = torch.cat([response_logps(model, enc.rows(slice(i, i + 1)), hook).detach()
                       for i in range(8)])  # (8,)
    # Not longest first already, and no two rows alike: a row at another's index shows.
    assert row_lengths(enc).tolist() == [9, 8, 8, 8, 9, 9, 8, 8]
    assert not alone.diff().eq(0).any()
    torch.testing.assert_close(batched_response_logps(model, enc, hook, batch_size=3), alone,
                               atol=1e-6, rtol=0)


def test_fused_adamw_trains_like_the_per_tensor_loop():
    fused_model, hook, enc = toy_pairs()
    # float64 weights: in float32 Adam's m / (sqrt(v) + eps) amplifies the two kernels'
    # rounding on near-zero gradients to ~1e-6 within three steps.
    fused_model.double()
    loop_model = copy.deepcopy(fused_model)
    start = [p.detach().clone() for p in fused_model.parameters()]
    data = PairTensors(enc, batched_response_logps(fused_model, enc, hook))
    lengths = row_lengths(enc)
    fused = make_optimizer(fused_model.parameters(), "adamw", 1e-2, 0.1)
    loop = torch.optim.AdamW(loop_model.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
    assert fused.defaults["fused"] and not loop.defaults["fused"]
    for step in range(3):
        idx = batch_indices(data.n, 2, step, seed=0)
        for model, optimizer in ((fused_model, fused), (loop_model, loop)):
            dpo_step(model, optimizer, data, lengths, idx, PreferenceLoss(0.5), hook=hook)
    for a, b in zip(fused_model.parameters(), loop_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    moved = max(float((a.detach() - before).abs().max()) for a, before in
                zip(fused_model.parameters(), start, strict=True))
    assert moved > 1e-2  # three steps of lr 1e-2 moved the weights: the comparison is not vacuous
