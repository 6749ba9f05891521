"""Trainer settings: the lr schedule with warmup, gradient clipping, label smoothing, SimPO."""

import math

import pytest
import torch
from support.pairs import toy_pairs

from didray.core.dpo import PreferenceLoss
from didray.data.tensors import PairTensors
from didray.eval.pairs import pair_metrics
from didray.train.loop import (
    Batches,
    dpo_step,
    lr_factor,
    lr_schedule,
    make_optimizer,
    row_lengths,
    train_dpo,
)
from didray.worlds.text import batched_response_logps


@pytest.mark.parametrize(
    ("schedule", "step", "factor"),
    [
        # 10 steps, 2 of warmup: step s of the warmup runs at s/2 of lr
        ("linear", 0, 0.0),
        ("linear", 1, 0.5),
        ("linear", 2, 1.0),
        ("linear", 6, 0.5),  # (6 - 2) / (10 - 2) of the decay done
        ("linear", 9, 0.125),
        ("cosine", 1, 0.5),
        ("cosine", 2, 1.0),
        ("cosine", 4, 0.5 * (1 + math.cos(math.pi / 4))),  # a quarter of the decay: 0.8536
        ("cosine", 6, 0.5),
        ("constant", 1, 0.5),
        ("constant", 9, 1.0),
    ],
)
def test_lr_factor_by_hand(schedule, step, factor):
    assert lr_factor(step, 10, schedule, 2) == pytest.approx(factor, abs=1e-12)


def test_constant_lr_without_warmup_leaves_the_optimizer_alone():
    assert lr_schedule(1e-3, 10, "constant", 0) is None


def test_train_dpo_runs_each_step_at_its_scheduled_lr():
    model, hook, enc = toy_pairs()
    data = PairTensors(enc, batched_response_logps(model, enc, hook))
    optimizer = make_optimizer(model.parameters(), "sgd", 0.1, 0.0)
    seen = []
    train_dpo(model, optimizer, data, PreferenceLoss(0.5), Batches(size=4, seed=0), range(4),
              hook=hook, lr_at=lr_schedule(0.1, 4, "linear", 1),
              on_step=lambda step, _: seen.append(optimizer.param_groups[0]["lr"]))
    # warmup: 0; then 1, 2/3, 1/3 of 0.1 over the 3 decaying steps
    assert seen == pytest.approx([0.0, 0.1, 0.1 * 2 / 3, 0.1 / 3])


def grad_norm(model: torch.nn.Module) -> float:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))


def test_clipping_bounds_the_gradient_norm():
    norms = {}
    for clip in (None, 1e-3):
        model, hook, enc = toy_pairs()
        data = PairTensors(enc, batched_response_logps(model, enc, hook) - 0.3)
        optimizer = make_optimizer(model.parameters(), "sgd", 0.0, 0.0)  # lr 0: grads only
        dpo_step(model, optimizer, data, row_lengths(enc), torch.arange(4), PreferenceLoss(0.5),
                 hook=hook, max_grad_norm=clip)
        norms[clip] = grad_norm(model)
    assert norms[None] > 1e-2  # the untouched gradient is far above the bound
    assert norms[1e-3] == pytest.approx(1e-3, rel=1e-4)


def test_label_smoothing_loss_by_hand():
    # h = 1 for both pairs, beta = log 3: sigma(beta h) = 3/4, so with labels flipped a quarter
    # of the time the loss is 3/4 log(4/3) + 1/4 log 4 = 0.5623351446188083.
    policy = torch.tensor([-1.0, -2.0, -3.0, -3.0])
    ref = torch.tensor([-2.0, -3.0, -3.0, -3.0])
    metrics = pair_metrics(policy, ref, PreferenceLoss(math.log(3), label_smoothing=0.25))
    assert metrics["dpo_loss"] == pytest.approx(0.75 * math.log(4 / 3) + 0.25 * math.log(4))
    assert pair_metrics(policy, ref, PreferenceLoss(math.log(3)))["dpo_loss"] == pytest.approx(
        math.log(4 / 3))


def test_simpo_step_uses_response_token_counts():
    model, _, enc = toy_pairs()
    # No response hook: it gives the toy language's impossible responses a log-prob near
    # float min, which only cancels against a reference, and SimPO has none.
    logps = batched_response_logps(model, enc, None)
    data = PairTensors(enc, logps)
    optimizer = make_optimizer(model.parameters(), "sgd", 0.0, 0.0)
    loss = dpo_step(model, optimizer, data, row_lengths(enc), torch.arange(4),
                    PreferenceLoss(2.0, "simpo", simpo_gamma=0.5))["loss"]
    sizes = enc.response_mask.sum(dim=-1).double()  # (8,) response tokens, </s> included
    assert len(set(sizes.tolist())) > 1  # lengths vary: normalising them matters
    (pc, pr), (lc, lr) = logps.double().chunk(2), sizes.chunk(2)
    expected = -torch.nn.functional.logsigmoid(2.0 * (pc / lc - pr / lr) - 0.5).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
